#!/usr/bin/env python3
"""The replay benchmark (scripts/bench.sh replay).

Usage: replay_bench.py BIN DIR SPIKES BASE_PORT

A node ("origin") starts in a region whose only voter ("master") is not running yet: no
master, so it journals what it records and nothing is acknowledged. SPIKES file changes
are made in its watch root; once they are journaled, the gossip it queued for absent peers
is left to expire (35 s), then the master starts. Measured: from the moment the master is
elected until it has acknowledged every spike of the origin (all of them come by replay
from the origin's journal). Prints RESULT json.
"""
import json
import os
import signal
import subprocess
import sys
import time

import benchlib

binary, root, spikes, base = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
procs = []


get = benchlib.get


def until(what, check, limit):
    return benchlib.until(what, check, limit, prefix="replay", on_fail=stop)


def start(name, port, bootstrap=None):
    data = os.path.join(root, name)
    os.makedirs(os.path.join(data, "root", "etc"), exist_ok=True)
    args = [binary, "node", "--name", name, "--region", "rb", "--role", "web",
            "--data-dir", data, "--listen", f"/ip4/127.0.0.1/tcp/{port}",
            "--api-listen", f"127.0.0.1:{port + 1000}", "--psk-file", os.path.join(root, "fleet.psk"),
            "--watch-root", os.path.join(data, "root")]
    if bootstrap:
        args += ["--bootstrap", bootstrap]
    env = dict(os.environ, FLEETMESH__REGION__VOTERS="master", RUST_LOG="info")
    log = open(os.path.join(data, "node.log"), "w")
    p = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env)
    procs.append(p)
    until(f"{name} ready", lambda: os.path.exists(os.path.join(data, "node.json")), 60)
    return p


def stop():
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


subprocess.run([binary, "psk", "--out", os.path.join(root, "fleet.psk")], check=True,
               stderr=subprocess.DEVNULL)
o_port, m_port = base, base + 1
start("origin", o_port)
origin_id = json.load(open(os.path.join(root, "origin", "node.json")))["peer_id"]
first = until("the origin's sync report", lambda: (get(o_port + 1000, "/api/v1/node") or {}).get("sync"), 30)
start_seq = first["last_seq"]
etc = os.path.join(root, "origin", "root", "etc")
print(f"replay: writing {spikes} file changes on the origin (no master)", file=sys.stderr)
for i in range(spikes):
    with open(os.path.join(etc, f"f{i:05}.conf"), "w") as f:
        f.write(f"{i}\n")
    if i % 1000 == 999:
        time.sleep(0.2)
until("the changes journaled",
      lambda: (get(o_port + 1000, "/api/v1/node") or {}).get("sync", {}).get("last_seq", 0) >= start_seq + spikes,
      300)
print("replay: journaled; letting queued gossip expire (35 s)", file=sys.stderr)
time.sleep(35)
sync = get(o_port + 1000, "/api/v1/node")["sync"]
print(f"replay: origin before the master: {sync}", file=sys.stderr)
start("master", m_port, f"/ip4/127.0.0.1/tcp/{o_port}")
until("the master elected", lambda: (get(m_port + 1000, "/api/v1/region") or {}).get("role") == "master", 60)
t0 = time.monotonic()
mark0 = ((get(m_port + 1000, "/api/v1/region") or {}).get("intake") or {}).get(origin_id, {}).get("mark", 0)


def done():
    s = (get(o_port + 1000, "/api/v1/node") or {}).get("sync") or {}
    r = get(m_port + 1000, "/api/v1/region") or {}
    mark = (r.get("intake") or {}).get(origin_id, {}).get("mark", 0)
    return (mark, r["intake"][origin_id]) if s.get("last_seq") and mark >= s["last_seq"] else None


mark, intake = until("every spike acknowledged", done, 300)
dt = time.monotonic() - t0
replayed = mark - mark0
stop()
print(f"replay: master intake for the origin: {intake}", file=sys.stderr)
print("RESULT " + json.dumps({
    "scenario": "replay", "spikes_journaled": sync["last_seq"], "spikes_acknowledged": replayed,
    "seconds": round(dt, 3), "spikes_per_s": round(replayed / dt, 1),
    "duplicates": intake.get("duplicates"), "skipped": intake.get("skipped"),
}))
