#!/usr/bin/env bash
# A local fleetmesh cluster on 127.0.0.1.
#
#   scripts/cluster.sh up N [--regions M] [--dir DIR] [--base-port P] [--debug] [--from K]
#   scripts/cluster.sh status [--dir DIR]
#   scripts/cluster.sh down [--dir DIR]
#
# Node i listens for peers on port P+i and serves its API on P+1000+i (P defaults to
# 17400). Nodes share one fleet key (DIR/fleet.psk), are spread over M regions (r0, r1,
# ...) with roles cycling web, database, baseline, and all bootstrap from node 0. Each has
# its data dir and log under DIR/nodeI/. `down` stops exactly the processes `up` started
# (their pids are kept in DIR/nodeI/pid and checked against /proc before any signal).
# `--from K` starts only nodes K..N-1 (to grow a running cluster of K nodes to N); each
# region founds once min(its size in N, 3) of its members see each other.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
dir=${FLEETMESH_CLUSTER_DIR:-/tmp/fleetmesh-cluster}
regions=1
from=0
base=17400
profile=release

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
die() { echo "cluster.sh: $*" >&2; exit 1; }

cmd=${1:-}; [ -n "$cmd" ] || usage; shift
count=0
if [ "$cmd" = up ]; then
  count=${1:-}; [[ "$count" =~ ^[0-9]+$ ]] && [ "$count" -ge 1 ] || die "up needs a node count, e.g. 'up 5'"
  shift
fi
while [ $# -gt 0 ]; do
  case "$1" in
    --regions) regions=${2:?--regions needs a number}; shift 2 ;;
    --dir) dir=${2:?--dir needs a path}; shift 2 ;;
    --base-port) base=${2:?--base-port needs a number}; shift 2 ;;
    --debug) profile=debug; shift ;;
    --from) from=${2:?--from needs a number}; shift 2 ;;
    -h|--help) usage ;;
    *) die "unknown argument '$1'" ;;
  esac
done
[[ "$regions" =~ ^[0-9]+$ ]] && [ "$regions" -ge 1 ] || die "--regions must be a positive number"

bin="$root/target/$profile/fleetmesh"

build() {
  command -v cargo >/dev/null || die "cargo is not installed (see README: rustup)"
  local flag=(); [ "$profile" = release ] && flag=(--release)
  echo "building fleetmesh ($profile)..." >&2
  (cd "$root" && cargo build "${flag[@]}" --bin fleetmesh >&2) || die "build failed"
}

# True when pid $1 is alive and is a fleetmesh node using data dir $2.
is_ours() {
  local pid=$1 data=$2
  [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- "fleetmesh node .*--data-dir $data\( \|$\)"
}

up() {
  [ -x "$bin" ] && [ -z "$(find "$root/src" "$root/actors/src" "$root/Cargo.toml" -newer "$bin" 2>/dev/null | head -1)" ] || build
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [ -f "$dir/fleet.psk" ] || "$bin" psk --out "$dir/fleet.psk" 2>/dev/null
  local roles=(web database baseline)
  local started=$SECONDS
  for ((i = from; i < count; i++)); do
    printf '\rstarting node%d (%d of %d)...  ' "$i" $((i - from + 1)) $((count - from)) >&2
    local data="$dir/node$i" p2p=$((base + i)) api=$((base + 1000 + i))
    # Each node watches its own root (a copy of a few /etc files), never the real /etc.
    mkdir -p "$data/root/etc"
    [ -f "$data/root/etc/hosts" ] || cp /etc/hosts "$data/root/etc/hosts" 2>/dev/null || true
    if [ -f "$data/pid" ] && is_ours "$(cat "$data/pid")" "$data"; then
      die "node$i is already running (pid $(cat "$data/pid")); run 'down' first"
    fi
    rm -f "$data/node.json"
    local args=(node --name "node$i" --region "r$((i % regions))" --role "${roles[$((i % 3))]}"
      --data-dir "$data" --listen "/ip4/127.0.0.1/tcp/$p2p" --api-listen "127.0.0.1:$api"
      --psk-file "$dir/fleet.psk" --watch-root "$data/root")
    [ "$i" -gt 0 ] && args+=(--bootstrap "/ip4/127.0.0.1/tcp/$base")
    # Every region founds once min(its size, 3) of its members see each other.
    local size=$(( count / regions + (i % regions < count % regions ? 1 : 0) ))
    FLEETMESH__REGION__BOOTSTRAP_EXPECT=$(( size < 3 ? size : 3 )) \
      FLEETMESH__POLICY__DIR=${FLEETMESH__POLICY__DIR:-$root/config/policy} \
      RUST_LOG=${RUST_LOG:-info} nohup "$bin" "${args[@]}" > "$data/node.log" 2>&1 < /dev/null &
    echo $! > "$data/pid"
    # Wait until the node is up (it writes node.json), so a port clash is reported here.
    for _ in $(seq 1 100); do
      [ -f "$data/node.json" ] && break
      if ! kill -0 "$(cat "$data/pid")" 2>/dev/null; then
        tail -5 "$data/node.log" >&2
        die "node$i failed to start (log: $data/node.log)"
      fi
      sleep 0.1
    done
    [ -f "$data/node.json" ] || die "node$i did not become ready (log: $data/node.log)"
  done
  echo >&2
  # Until every node knows its region's master (bounded: a region that cannot found one
  # is shown without), with progress.
  local deadline=$((SECONDS + 60)) ready=0 total=$((count - from)) lines=()
  while :; do
    ready=0; lines=()
    for ((i = from; i < count; i++)); do
      local api=$((base + 1000 + i)) line
      line=$("$bin" status --api "127.0.0.1:$api" --summary 2>/dev/null || echo "node$i")
      lines+=("$line")
      case "$line" in *" master=-"*|"node$i") ;; *" master="*) ready=$((ready + 1)) ;; esac
    done
    printf '\rwaiting for the regions'"'"' masters: %d of %d nodes know theirs (%ds)  ' \
      "$ready" "$total" $((SECONDS - started)) >&2
    [ "$ready" = "$total" ] && break
    [ "$SECONDS" -ge "$deadline" ] && { echo >&2; echo "cluster.sh: not every node knows a master after 60 s" >&2; break; }
    sleep 0.5
  done
  echo >&2
  printf '%-8s %-6s %-9s %-8s %-6s %-22s %s\n' NODE REGION ROLE MASTER TERM API CONSOLE
  for ((i = from; i < count; i++)); do
    local line=${lines[$((i - from))]} api="127.0.0.1:$((base + 1000 + i))"
    local master term
    master=$(sed -n 's/.* master=\([^ ]*\).*/\1/p' <<< "$line"); term=$(sed -n 's/.* term=\([0-9]*\).*/\1/p' <<< "$line")
    printf '%-8s %-6s %-9s %-8s %-6s %-22s %s\n' "node$i" "r$((i % regions))" "${roles[$((i % 3))]}" \
      "${master:--}" "${term:--}" "$api" "http://$api/"
  done
  echo "cluster of $count node(s) up in $dir in $((SECONDS - started)) s; 'scripts/cluster.sh status --dir $dir' shows it"
}

nodes() { find "$dir" -maxdepth 1 -type d -name 'node*' 2>/dev/null | sort -V; }

status() {
  [ -d "$dir" ] || die "no cluster in $dir"
  [ -x "$bin" ] || bin="$root/target/debug/fleetmesh"
  local any=0
  for data in $(nodes); do
    any=1
    local name; name=$(basename "$data")
    local pid; pid=$(cat "$data/pid" 2>/dev/null || echo 0)
    if ! is_ours "$pid" "$data"; then echo "$name: not running"; continue; fi
    local api; api=$(grep -o '"api": *"[^"]*"' "$data/node.json" 2>/dev/null | sed 's/.*"\([^"]*\)"$/\1/')
    if [ -z "$api" ]; then echo "$name: starting (pid $pid)"; continue; fi
    echo "$("$bin" status --api "$api" --summary 2>&1 || echo "$name: API at $api not answering")"
  done
  [ "$any" = 1 ] || echo "no nodes in $dir"
}

down() {
  [ -d "$dir" ] || { echo "no cluster in $dir"; return 0; }
  local pids=()
  for data in $(nodes); do
    local pid; pid=$(cat "$data/pid" 2>/dev/null || echo 0)
    if is_ours "$pid" "$data"; then kill -TERM "$pid" && pids+=("$pid"); fi
    rm -f "$data/pid"
  done
  for _ in $(seq 1 100); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && kill -KILL "$p" && echo "pid $p did not stop in 10 s: killed"; done
  echo "stopped ${#pids[@]} node(s)"
}

case "$cmd" in
  up) up ;;
  status) status ;;
  down) down ;;
  *) usage ;;
esac
