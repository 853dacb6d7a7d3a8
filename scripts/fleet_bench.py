#!/usr/bin/env python3
"""The consult, learning and emergency benchmarks (scripts/bench.sh) on a running local
cluster started by cluster.sh (one region, roles cycling web, database, baseline).

Usage: fleet_bench.py consult|learning|emergency DIR NODES BASE_PORT COUNT

consult    COUNT files are written, 20 ms apart, in the watch root of a web node that is
           not the master; no rule judges them, so each is a `consult` decision asked of
           the master. Measured by the node: from asking to the master's answer
           (settled.latency_us in GET /api/v1/decisions).
learning   COUNT operator approvals (POST /api/v1/patterns/approve on the master, role
           web). Measured: from the master's approval time to the moment the last web
           node holds it (received_at_unix_ms in each node's GET /api/v1/patterns).
emergency  COUNT times, the same new file content on two web nodes: with a threshold of
           1 (set by bench.sh) the master raises a suspected coordinated change and
           broadcasts it. Measured: from the master raising it to each node receiving it
           (received_at - raised_at in GET /api/v1/fleet), over every node and event.
Prints RESULT json (microseconds, or milliseconds where named so).
"""
import json
import os
import sys
import time

import benchlib

mode, root, nodes, base, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
ROLES = ["web", "database", "baseline"]


def api(i):
    return base + 1000 + i


def peer_id(i):
    with open(os.path.join(root, f"node{i}", "node.json")) as f:
        return json.load(f)["peer_id"]


ids = [peer_id(i) for i in range(nodes)]
web = [i for i in range(nodes) if ROLES[i % 3] == "web"]


def master():
    views = [benchlib.get(api(i), "/api/v1/region") or {} for i in range(nodes)]
    named = {(v.get("master") or {}).get("peer_id") for v in views}
    if len(named) == 1 and None not in named and next(iter(named)) in ids:
        return (ids.index(next(iter(named))),)
    return None


def until(what, check, limit):
    return benchlib.until(what, check, limit, prefix=mode)


(m,) = until("one master known to every node", master, 90)
# Let learners catch up with the log (the master's view of members settles).
time.sleep(3)
print(f"{mode}: master is node{m}", file=sys.stderr)


def result(**fields):
    print("RESULT " + json.dumps({"scenario": mode, "nodes": nodes, **fields}))


if mode == "consult":
    n = next(i for i in web if i != m)
    etc = os.path.join(root, f"node{n}", "root", "etc")
    for k in range(count):
        with open(os.path.join(etc, f"consult-{k:05}.conf"), "w") as f:
            f.write(f"{k}\n")
        time.sleep(0.02)

    def settled():
        d = benchlib.get(api(n), "/api/v1/decisions?limit=10000") or []
        ours = [x for x in d if x["kind"] == "file" and x["subject"].startswith("/etc/consult-")]
        done = [x for x in ours if x.get("settled")]
        return done if len(done) >= count else None

    done = until("every consultation answered", settled, 120)
    by_master = [x["settled"]["latency_us"] for x in done if x["settled"]["by"] == "master"]
    result(consultations=len(done), answered_by_master=len(by_master),
           p50_us=benchlib.percentile(by_master, 0.5), p99_us=benchlib.percentile(by_master, 0.99),
           max_us=max(by_master) if by_master else None)

elif mode == "learning":
    lat = []
    for k in range(count):
        status, body = benchlib.post(api(m), "/api/v1/patterns/approve", {
            "roles": ["web"], "kind": "user", "change": "added", "subject": f"bench-{k}-{time.time_ns()}",
            "by": "bench"})
        if status != 200:
            sys.exit(f"learning: approval refused: {status} {body}")
        pid, at = body["id"], body["approval"]["approved_at_unix_ms"]

        def everywhere():
            got = []
            for i in web:
                p = benchlib.get(api(i), "/api/v1/patterns") or {}
                hit = [x for x in p.get("learned", []) if x["id"] == pid]
                if not hit:
                    return None
                got.append(hit[0]["received_at_unix_ms"] - at)
            return got

        per_node = until(f"approval {k} in force on every web node", everywhere, 30)
        lat.append(max(per_node))
        print(f"learning: approval {k}: in force on {len(per_node)} web nodes after {max(per_node)} ms", file=sys.stderr)
    result(approvals=count, web_nodes=len(web), p50_ms=benchlib.percentile(lat, 0.5),
           p99_ms=benchlib.percentile(lat, 0.99), max_ms=max(lat))

elif mode == "emergency":
    writers = [i for i in web if i != m][:2]
    lat, keys = [], set()
    for k in range(count):
        content = f"emergency {k} {time.time_ns()}\n"
        for i in writers:
            with open(os.path.join(root, f"node{i}", "root", "etc", "emergency-bench.conf"), "w") as f:
                f.write(content)

        def raised():
            f = benchlib.get(api(m), "/api/v1/fleet") or {}
            ev = [e for e in f.get("events", []) if e["event"]["fingerprint"]["subject"] == "/etc/emergency-bench.conf"
                  and e["source"] == "raised" and e["key"] not in keys]
            return ev[-1] if ev else None

        e = until(f"fleet event {k} raised", raised, 60)
        key, at = e["key"], e["raised_at_unix_ms"]
        keys.add(key)

        def everywhere():
            got = []
            for i in range(nodes):
                if i == m:
                    continue
                f = benchlib.get(api(i), "/api/v1/fleet") or {}
                hit = [x for x in f.get("events", []) if x["key"] == key and x["source"] == "emergency"]
                if not hit:
                    return None
                got.append(hit[0]["received_at_unix_ms"] - at)
            return got

        got = until(f"emergency {k} on every node", everywhere, 30)
        lat.extend(got)
        print(f"emergency: event {k}: on {len(got)} nodes, slowest {max(got)} ms", file=sys.stderr)
        time.sleep(1)
    result(events=count, deliveries=len(lat), p50_ms=benchlib.percentile(lat, 0.5),
           p99_ms=benchlib.percentile(lat, 0.99), max_ms=max(lat))
else:
    sys.exit(f"fleet_bench: unknown mode {mode}")
