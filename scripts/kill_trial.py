#!/usr/bin/env python3
"""One trial of the failover or detection benchmark on a running local cluster.

Usage: kill_trial.py failover|detection DIR NODES BASE_PORT TIMEOUT_S
Waits for the cluster to settle, kills one node with SIGKILL (the master for failover, a
non-master for detection), and prints the seconds until every survivor agrees on a new
master with a higher term (failover) or shows the killed node dead (detection).
"""
import json
import os
import signal
import sys
import time
import urllib.request

mode, root, nodes, base, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])


def get(i, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{base + 1000 + i}{path}", timeout=1) as r:
            return json.load(r)
    except Exception:
        return None


def peer_id(i):
    with open(os.path.join(root, f"node{i}", "node.json")) as f:
        return json.load(f)["peer_id"]


def until(what, check, limit):
    t = time.monotonic()
    while time.monotonic() - t < limit:
        v = check()
        if v:
            return v
        time.sleep(0.01)
    sys.exit(f"kill_trial: {what} not reached in {limit} s")


ids = [peer_id(i) for i in range(nodes)]


def agreed(members, newer_than=0):
    views = [get(i, "/api/v1/region") for i in members]
    if any(v is None or v["master"] is None for v in views):
        return None
    masters = {v["master"]["peer_id"] for v in views}
    terms = {v["term"] for v in views}
    if len(masters) == 1 and len(terms) == 1 and terms.pop() > newer_than:
        return views[0]
    return None


def all_alive():
    for i in range(nodes):
        peers = get(i, "/api/v1/peers") or []
        if sum(1 for p in peers if p["status"] == "alive") != nodes - 1:
            return False
    return True


until("all peers alive", all_alive, timeout)
if mode == "failover":
    first = until("a first master", lambda: agreed(range(nodes)), timeout)
    victim = ids.index(first["master"]["peer_id"])
else:
    victim = nodes - 1
survivors = [i for i in range(nodes) if i != victim]
time.sleep(3)  # a few seconds of steady heartbeats for the detectors
with open(os.path.join(root, f"node{victim}", "pid")) as f:
    pid = int(f.read())
t0 = time.monotonic()
os.kill(pid, signal.SIGKILL)
if mode == "failover":
    until("a new master", lambda: agreed(survivors, first["term"]), timeout)
else:
    def dead_everywhere():
        for i in survivors:
            peers = get(i, "/api/v1/peers") or []
            if not any(p["peer_id"] == ids[victim] and p["status"] == "dead" for p in peers):
                return False
        return True
    until("the victim dead everywhere", dead_everywhere, timeout)
print(f"{time.monotonic() - t0:.4f}")
