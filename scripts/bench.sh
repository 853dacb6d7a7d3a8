#!/usr/bin/env bash
# Runs one benchmark scenario in release mode. The last line printed is
#   RESULT {json}
# with latencies in microseconds (p50_us, p99_us, max_us), sizes in bytes, ratios as ratio.
#
#   scripts/bench.sh propagation [--nodes N] [--messages K] [--gap-ms G]
#   scripts/bench.sh footprint   [--nodes N] [--seconds S]
#   scripts/bench.sh detect      [--changes N]
#   scripts/bench.sh encode      [--spikes N]
#   scripts/bench.sh policy-local [--decisions N]  (one local policy decision, µs)
#   scripts/bench.sh metrics-bandwidth [--seconds S]
#   scripts/bench.sh failover    [--trials N] [--when early|promoting|formed|double]
#                                (5 named voters, kill -9 the master; with --when: 5 nodes
#                                founding by bootstrap_expect 3, the master killed right
#                                after the first election, while promoting, when all vote,
#                                or with one more voter when all vote)
#   scripts/bench.sh detection   [--trials N] [--signal KILL|STOP]   (5 nodes; kill -9 one,
#                                or stop one: a hung node whose connections stay up)
#   scripts/bench.sh pauses      [--minutes M]  (5 nodes; one stopped 2 s every minute)
#   scripts/bench.sh redistribution [--trials N] [--probes K]  (5 voters, K service probes;
#                                kill -9 the node owning most items)
#   scripts/bench.sh storm       [--files N]    (one node; N files created then modified:
#                                RSS idle/peak/after, time to reconcile and judge all)
#   scripts/bench.sh replay      [--spikes N]   (a node journals N spikes with no master, then
#                                one appears: time until the master acknowledges them all)
#   scripts/bench.sh consult     [--nodes N] [--count K]  (K consult decisions asked of the
#                                master: round trip as the asking node measures it)
#   scripts/bench.sh learning    [--nodes N] [--count K]  (K operator approvals: until in force
#                                on every web node)
#   scripts/bench.sh emergency   [--nodes N] [--count K]  (K critical fleet events: broadcast
#                                to every node of a 20-node cluster)
#   scripts/bench.sh console-latency [--changes N] [--gap-ms G]  (3 nodes; a file written
#                                on one, until shown in a page another serves, in Chromium)
#   scripts/bench.sh console-scale [--nodes N] [--regions R] [--every-ms E] [--seconds S]
#                                (the page with N nodes fed by a stand-in API, in Chromium)
#   scripts/bench.sh alert-latency [--changes N] [--gap-ms G]  (one node; a violation,
#                                until its notification reaches a webhook)
#   scripts/bench.sh alert-storm [--alerts N] [--seconds S]  (10,000 alerts in 60 s through
#                                the alert actor: notifications, queue, RSS, CPU)
#   scripts/bench.sh drift       [--changes N] [--gap-ms G]  (3 nodes; a file under desired
#                                state written on a member, until the drift record appears
#                                or goes at the master)
#   scripts/bench.sh fleet-view  [--trials N]  (5 nodes, 2 regions; kill -9 in one, until a
#                                node of the other shows it dead; summary sizes and bytes/s)
#   scripts/bench.sh sim         [--nodes N] [--regions R] [--seconds S] [--seed X]
#                                [--scenario FILE]  (fleetmesh-sim: the real cores of N
#                                members on a simulated network; default the 10,000-member
#                                fleet-10k scenario, 100 regions, 600 simulated s)
#   scripts/bench.sh sim-load    [--region-sizes 10,100,1000] [--seconds S]  (one region per
#                                size: messages and bytes each member receives per second,
#                                crash and hang detection; ratio = last size / first)
#   scripts/bench.sh sim-chaos   [--runs K | --seeds A..B] [--nodes N] [--seconds S]
#                                [--seed X]  (seeded random fault schedules; failing seeds
#                                are printed; --seeds runs part A..B of the series of --seed,
#                                so 1,000 runs can be spread over several sittings)
#
# Figures and the commands that produced them are recorded in BENCHMARKS.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
scenario=${1:-}
[ -n "$scenario" ] || { sed -n '2,49p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
shift

opt() { # opt NAME DEFAULT "$@": the value after --NAME, or DEFAULT
  local name=$1 def=$2; shift 2
  while [ $# -gt 0 ]; do [ "$1" = "--$name" ] && { echo "${2:?--$name needs a value}"; return; }; shift; done
  echo "$def"
}

case "$scenario" in
  propagation|encode|metrics-bandwidth|detect|policy-local)
    cd "$root"
    cargo bench --bench "${scenario//-/_}" -- "$@" 2>&1 | tee /dev/stderr | grep '^RESULT ' | tail -1
    ;;

  console-latency)
    cd "$root"
    cargo bench --bench console -- "$@" 2>&1 | tee /dev/stderr | grep '^RESULT ' | tail -1
    ;;

  alert-latency|alert-storm|drift|fleet-view)
    cd "$root"
    cargo bench --bench "${scenario//-/_}" -- "$@" 2>&1 | tee /dev/stderr | grep '^RESULT ' | tail -1
    ;;

  console-scale)
    cd "$root"
    cargo bench --bench console_scale -- "$@" 2>&1 | tee /dev/stderr | grep '^RESULT ' | tail -1
    ;;

  footprint)
    nodes=$(opt nodes 20 "$@")
    seconds=$(opt seconds 60 "$@")
    dir=$(mktemp -d /tmp/fleetmesh-footprint.XXXXXX)
    base=27400
    trap '"$here/cluster.sh" down --dir "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
    "$here/cluster.sh" up "$nodes" --dir "$dir" --base-port "$base" >&2
    target=$((nodes / 2))
    pid=$(cat "$dir/node$target/pid")
    echo "footprint: $nodes nodes up; settling 15 s, then sampling node$target (pid $pid) for $seconds s" >&2
    sleep 15
    tck=$(getconf CLK_TCK)
    ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
    rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
    t0=$(ticks "$pid"); s0=$(date +%s.%N); max_rss=0
    for ((i = 0; i < seconds; i++)); do
      r=$(rss_kb "$pid"); [ "$r" -gt "$max_rss" ] && max_rss=$r
      sleep 1
    done
    t1=$(ticks "$pid"); s1=$(date +%s.%N)
    all=(); for ((i = 0; i < nodes; i++)); do all+=("$(rss_kb "$(cat "$dir/node$i/pid")")"); done
    peers=$("$root/target/release/fleetmesh" status --api "127.0.0.1:$((base + 1000 + target))" --summary)
    echo "footprint: node$target sees: $peers" >&2
    mean=$(printf '%s\n' "${all[@]}" | awk '{s += $1} END {printf "%d", s / NR * 1024}')
    hi=$(printf '%s\n' "${all[@]}" | sort -n | tail -1)
    cpu=$(awk -v a="$t0" -v b="$t1" -v t="$tck" -v s0="$s0" -v s1="$s1" 'BEGIN {printf "%.5f", (b - a) / t / (s1 - s0)}')
    alive=$(echo "$peers" | grep -o 'alive=[0-9]*' | cut -d= -f2)
    echo "RESULT {\"scenario\":\"footprint\",\"nodes\":$nodes,\"seconds\":$seconds,\"rss_bytes\":$((max_rss * 1024)),\"rss_mean_bytes_all_nodes\":$mean,\"rss_max_bytes_all_nodes\":$((hi * 1024)),\"cpu_ratio\":$cpu,\"peers_alive\":${alive:-0}}"
    ;;

  failover|detection)
    trials=$(opt trials 20 "$@")
    when=$(opt when "" "$@")
    sig=$(opt signal KILL "$@")
    case "$sig" in KILL|STOP) ;; *) echo "bench.sh: --signal KILL|STOP" >&2; exit 2 ;; esac
    case "$when" in ""|early|promoting|formed|double) ;; *) echo "bench.sh: --when early|promoting|formed|double" >&2; exit 2 ;; esac
    nodes=5
    up=$nodes
    [ "$when" = promoting ] && up=3
    command -v python3 >/dev/null || { echo "bench.sh: $scenario needs python3" >&2; exit 2; }
    times=()
    for ((t = 1; t <= trials; t++)); do
      dir=$(mktemp -d /tmp/fleetmesh-$scenario.XXXXXX)
      base=$((27400 + (t % 10) * 20))
      env=()
      if [ "$scenario" = failover ] && [ -z "$when" ]; then env=(FLEETMESH__REGION__VOTERS=node0,node1,node2,node3,node4); fi
      if ! env "${env[@]}" "$here/cluster.sh" up "$up" --dir "$dir" --base-port "$base" >"$dir/up.log" 2>&1; then
        echo "$scenario: the cluster did not start:" >&2
        cat "$dir/up.log" >&2
        "$here/cluster.sh" down --dir "$dir" >/dev/null 2>&1 || true
        exit 1
      fi
      if dt=$(WHEN=$when SIGNAL=$sig python3 "$here/kill_trial.py" "$scenario" "$dir" "$nodes" "$base" 60); then
        times+=("$dt")
        echo "$scenario: trial $t of $trials: ${dt} s" >&2
      else
        echo "$scenario: trial $t of $trials failed" >&2
      fi
      "$here/cluster.sh" down --dir "$dir" >/dev/null 2>&1 || true
      rm -rf "$dir"
    done
    printf '%s\n' "${times[@]}" | sort -n | awk -v s="$scenario" -v n="$trials" -v w="$when" -v g="$sig" '
      { v[NR] = $1 }
      END {
        if (NR == 0) { printf "RESULT {\"scenario\":\"%s\",\"when\":\"%s\",\"signal\":\"%s\",\"trials\":%d,\"ok\":0}\n", s, w, g, n; exit }
        p50 = v[int((NR - 1) * 0.50) + 1]; p99 = v[int((NR - 1) * 0.99) + 1]
        printf "RESULT {\"scenario\":\"%s\",\"when\":\"%s\",\"signal\":\"%s\",\"trials\":%d,\"ok\":%d,\"samples\":%d,\"p50_us\":%d,\"p99_us\":%d,\"max_us\":%d,\"p50_s\":%.3f,\"p99_s\":%.3f,\"max_s\":%.3f}\n", s, w, g, n, NR, NR, p50 * 1e6, p99 * 1e6, v[NR] * 1e6, p50, p99, v[NR]
      }'
    ;;

  redistribution)
    trials=$(opt trials 20 "$@")
    probes=$(opt probes 20 "$@")
    nodes=5
    command -v python3 >/dev/null || { echo "bench.sh: $scenario needs python3" >&2; exit 2; }
    conf=$(mktemp /tmp/fleetmesh-probes.XXXXXX.toml)
    # Probes of a port nothing listens on: the work exists, its result does not matter.
    for ((k = 0; k < probes; k++)); do
      printf '[[services]]\nname = "svc%d"\nkind = "tcp"\ntarget = "127.0.0.1:9"\ninterval_s = 30\n' "$k" >> "$conf"
    done
    rows=()
    for ((t = 1; t <= trials; t++)); do
      dir=$(mktemp -d /tmp/fleetmesh-$scenario.XXXXXX)
      base=$((27400 + (t % 10) * 20))
      if ! FLEETMESH_CONFIG=$conf FLEETMESH__REGION__VOTERS=node0,node1,node2,node3,node4 \
          "$here/cluster.sh" up "$nodes" --dir "$dir" --base-port "$base" >"$dir/up.log" 2>&1; then
        echo "$scenario: the cluster did not start:" >&2
        cat "$dir/up.log" >&2
        "$here/cluster.sh" down --dir "$dir" >/dev/null 2>&1 || true
        exit 1
      fi
      if row=$(python3 "$here/kill_trial.py" redistribution "$dir" "$nodes" "$base" 60 $((nodes + probes))); then
        rows+=("$row")
        echo "$scenario: trial $t of $trials: $row (seconds, moved/owned, owned)" >&2
      else
        echo "$scenario: trial $t of $trials failed" >&2
      fi
      "$here/cluster.sh" down --dir "$dir" >/dev/null 2>&1 || true
      rm -rf "$dir"
    done
    rm -f "$conf"
    printf '%s\n' "${rows[@]}" | sort -n | awk -v n="$trials" -v k="$probes" '
      { v[NR] = $1; r = ($2 > r) ? $2 : r; rmin = (NR == 1 || $2 < rmin) ? $2 : rmin; owned += $3 }
      END {
        if (NR == 0) { printf "RESULT {\"scenario\":\"redistribution\",\"trials\":%d,\"ok\":0}\n", n; exit }
        p50 = v[int((NR - 1) * 0.50) + 1]; p99 = v[int((NR - 1) * 0.99) + 1]
        printf "RESULT {\"scenario\":\"redistribution\",\"trials\":%d,\"ok\":%d,\"items\":%d,\"p50_s\":%.3f,\"p99_s\":%.3f,\"max_s\":%.3f,\"moved_over_owned_min\":%.3f,\"moved_over_owned_max\":%.3f,\"owned_total\":%d}\n", n, NR, k + 5, p50, p99, v[NR], rmin, r, owned
      }'
    ;;

  storm)
    files=$(opt files 50000 "$@")
    command -v python3 >/dev/null || { echo "bench.sh: $scenario needs python3" >&2; exit 2; }
    dir=$(mktemp -d /tmp/fleetmesh-storm.XXXXXX)
    trap 'rm -rf "$dir"' EXIT
    (cd "$root" && cargo build --release --bin fleetmesh >&2)
    python3 "$here/storm_bench.py" "$root/target/release/fleetmesh" "$dir" "$files"
    ;;

  replay)
    spikes=$(opt spikes 10000 "$@")
    command -v python3 >/dev/null || { echo "bench.sh: $scenario needs python3" >&2; exit 2; }
    dir=$(mktemp -d /tmp/fleetmesh-replay.XXXXXX)
    trap 'rm -rf "$dir"' EXIT
    (cd "$root" && cargo build --release --bin fleetmesh >&2)
    python3 "$here/replay_bench.py" "$root/target/release/fleetmesh" "$dir" "$spikes" 27700
    ;;

  consult|learning|emergency)
    case "$scenario" in
      consult) nodes=$(opt nodes 5 "$@"); count=$(opt count 1000 "$@") ;;
      learning) nodes=$(opt nodes 9 "$@"); count=$(opt count 50 "$@") ;;
      emergency) nodes=$(opt nodes 20 "$@"); count=$(opt count 20 "$@") ;;
    esac
    command -v python3 >/dev/null || { echo "bench.sh: $scenario needs python3" >&2; exit 2; }
    dir=$(mktemp -d /tmp/fleetmesh-$scenario.XXXXXX)
    base=27800
    trap '"$here/cluster.sh" down --dir "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
    # Metrics, process and network polling slowed down: the measured path has the cores.
    # Emergencies: a fleet event as soon as two servers of a role show the same change.
    FLEETMESH__METRICS__INTERVAL_MS=60000 FLEETMESH__PROBES__PROCESS_POLL_MS=60000 \
      FLEETMESH__PROBES__NETWORK_POLL_MS=60000 FLEETMESH__FLEET__THRESHOLD=1 \
      "$here/cluster.sh" up "$nodes" --dir "$dir" --base-port "$base" >&2
    python3 "$here/fleet_bench.py" "$scenario" "$dir" "$nodes" "$base" "$count"
    ;;

  pauses)
    # False deaths: 5 nodes, node4 stopped (SIGSTOP) for 2 s once a minute; afterwards
    # every log is searched for a peer declared dead.
    minutes=$(opt minutes 10 "$@")
    dir=$(mktemp -d /tmp/fleetmesh-pauses.XXXXXX)
    base=27600
    trap '"$here/cluster.sh" down --dir "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
    "$here/cluster.sh" up 5 --dir "$dir" --base-port "$base" >&2
    pid=$(cat "$dir/node4/pid")
    sleep 10
    for ((m = 1; m <= minutes; m++)); do
      kill -STOP "$pid"; sleep 2; kill -CONT "$pid"
      echo "pauses: minute $m of $minutes: node4 stopped for 2 s" >&2
      sleep 58
    done
    false_deaths=$(cat "$dir"/node*/node.log | grep 'peer status' | grep -c 'to="dead"' || true)
    suspicions=$(cat "$dir"/node*/node.log | grep 'peer status' | grep -c 'to="suspect"' || true)
    echo "RESULT {\"scenario\":\"pauses\",\"minutes\":$minutes,\"pauses\":$minutes,\"false_deaths\":$false_deaths,\"suspicions\":$suspicions}"
    ;;

  sim)
    regions=$(opt regions 100 "$@")
    nodes=$(opt nodes 10000 "$@")
    seconds=$(opt seconds 600 "$@")
    seed=$(opt seed 1 "$@")
    file=$(opt scenario "$root/sim/scenarios/fleet-10k.toml" "$@")
    cd "$root"
    cargo build --release -p fleetmesh-sim >&2
    "${CARGO_TARGET_DIR:-$root/target}/release/fleetmesh-sim" run "$file" --seed "$seed" \
      --regions "$regions" --nodes-per-region $((nodes / regions)) --seconds "$seconds" \
      | tee /dev/stderr | grep '^RESULT ' | tail -1
    ;;

  sim-load)
    sizes=$(opt region-sizes "10,100,1000" "$@")
    seconds=$(opt seconds 90 "$@")
    command -v python3 >/dev/null || { echo "bench.sh: $scenario needs python3" >&2; exit 2; }
    cd "$root"
    cargo build --release -p fleetmesh-sim >&2
    out=$(mktemp /tmp/fleetmesh-sim-load.XXXXXX)
    trap 'rm -f "$out"' EXIT
    for n in ${sizes//,/ }; do
      echo "sim-load: one region of $n members, $seconds simulated s" >&2
      "${CARGO_TARGET_DIR:-$root/target}/release/fleetmesh-sim" run "$root/sim/scenarios/load.toml" \
        --nodes-per-region "$n" --seconds "$seconds" | tee /dev/stderr | grep '^RESULT ' | sed 's/^RESULT //' >> "$out"
    done
    python3 - "$out" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
keys = ("msgs_per_node_s", "msgs_per_node_s_max", "bytes_per_node_s", "bytes_per_node_s_max",
        "detect_p50_us", "detect_p99_us", "hang_p50_us", "hang_p99_us", "failover_p99_us",
        "speed", "violations")
sizes = [{"region_size": r["nodes"], **{k: r[k] for k in keys}} for r in runs]
ratio = sizes[-1]["msgs_per_node_s"] / sizes[0]["msgs_per_node_s"] if len(sizes) > 1 else 1.0
print("RESULT " + json.dumps({"scenario": "sim-load", "sizes": sizes, "ratio": round(ratio, 3)}))
PY
    ;;

  sim-chaos)
    cd "$root"
    cargo build --release -p fleetmesh-sim >&2
    seeds=$(opt seeds "" "$@")
    if [ -n "$seeds" ]; then part=(--seeds "$seeds"); else part=(--runs "$(opt runs 10 "$@")"); fi
    "${CARGO_TARGET_DIR:-$root/target}/release/fleetmesh-sim" chaos "${part[@]}" \
      --nodes "$(opt nodes 1000 "$@")" --seconds "$(opt seconds 60 "$@")" --seed "$(opt seed 1 "$@")" \
      | tee /dev/stderr | grep '^RESULT ' | tail -1
    ;;

  *)
    echo "bench.sh: unknown scenario '$scenario' (propagation, footprint, detect, encode, metrics-bandwidth, policy-local, failover, detection, pauses, redistribution, replay, consult, learning, emergency, console-latency, console-scale, sim, sim-load, sim-chaos)" >&2
    exit 2
    ;;
esac
