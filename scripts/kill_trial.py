#!/usr/bin/env python3
"""One trial of the failover or detection benchmark on a running local cluster.

Usage: kill_trial.py failover|detection|redistribution DIR NODES BASE_PORT TIMEOUT_S [ITEMS]
Waits for the cluster to settle, kills one node with SIGKILL (the master for failover, a
non-master otherwise), and prints the seconds until every survivor agrees on a new master
with a higher term (failover), shows the killed node dead (detection), or until the
master's committed assignments give every item the killed node owned to a live node
(redistribution; ITEMS work items are expected in all; it also prints the items that
changed owner divided by the items the killed node owned).

For failover, WHEN in the environment chooses the moment of the kill:
- unset: once every peer is alive and a master is agreed (the named-voter baseline);
- early: the first master, as soon as any node reports itself master;
- promoting: the cluster runs 3 of its NODES; the others are started (cluster.sh up
  --from 3) and the master is killed once it knows a newcomer (as a learner, or promoted)
  while not every node votes yet;
- formed: once every node is a voter;
- double: once every node is a voter, the master and one more voter together (the three
  left are a bare majority: split votes show here).
"""
import json
import os
import signal
import subprocess
import sys
import time

import benchlib

mode, root, nodes, base, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
expected_items = int(sys.argv[6]) if len(sys.argv) > 6 else 0


def get(i, path):
    return benchlib.get(base + 1000 + i, path, timeout=1)


def peer_id(i):
    with open(os.path.join(root, f"node{i}", "node.json")) as f:
        return json.load(f)["peer_id"]


def until(what, check, limit):
    return benchlib.until(what, check, limit, prefix="kill_trial", every=0.01)


ids = [] if os.environ.get("WHEN") == "promoting" else [peer_id(i) for i in range(nodes)]


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


def any_master(members, ready=lambda r: True):
    for i in members:
        r = get(i, "/api/v1/region")
        if r and r["role"] == "master" and ready(r):
            return (i, r)
    return None


def learning(r):
    return any(m["membership"] == "learner" for m in r.get("consensus_members", []))


when = os.environ.get("WHEN", "")
if mode == "failover" and when == "promoting":
    three = until("a master of three", lambda: agreed(range(3)), timeout)
    master3 = three["master"]["peer_id"]
    subprocess.run([os.path.join(os.path.dirname(os.path.abspath(__file__)), "cluster.sh"), "up", str(nodes),
                    "--from", "3", "--dir", root, "--base-port", str(base)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ids = [peer_id(i) for i in range(nodes)]

    def promoting(r):
        # The master knows a newcomer (learner, or voter just promoted) and not all vote yet.
        new = [m for m in r.get("consensus_members", []) if m["peer_id"] in ids[3:] and m["membership"] != "none"]
        return bool(new) and len(r["voters"]) < nodes

    # Only the master is watched: the learner phase lasts milliseconds.
    victim, first = until("a master promoting", lambda: any_master([ids.index(master3)], promoting), timeout)
elif mode == "failover" and when == "early":
    victim, first = until("a first master", lambda: any_master(range(nodes)), timeout)
else:
    until("all peers alive", all_alive, timeout)
if mode == "failover" and when in ("early", "promoting"):
    pass
elif mode == "failover" and when in ("formed", "double"):
    victim, first = until("every node a voter",
                          lambda: any_master(range(nodes), lambda r: len(r["voters"]) == nodes), timeout)
elif mode == "failover":
    first = until("a first master", lambda: agreed(range(nodes)), timeout)
    victim = ids.index(first["master"]["peer_id"])
elif mode == "redistribution":
    first = until("a first master", lambda: agreed(range(nodes)), timeout)
    m = ids.index(first["master"]["peer_id"])

    def assignments():
        a = get(m, "/api/v1/assignments")
        return a["items"] if a and len(a["items"]) == expected_items else None

    before = until("every item assigned", assignments, timeout)
    # The victim: the non-master that owns the most items.
    owned = {i: sum(1 for o in before.values() if o == ids[i]) for i in range(nodes) if i != m}
    victim = max(owned, key=owned.get)
else:
    victim = nodes - 1
survivors = [i for i in range(nodes) if i != victim]
if not (mode == "failover" and when in ("early", "promoting")):
    time.sleep(3)  # a few seconds of steady heartbeats for the detectors
victims = [victim]
if mode == "failover" and when == "double":
    victims.append(next(i for i in range(nodes) if i != victim))
    survivors = [i for i in range(nodes) if i not in victims]
pids = []
for v in victims:
    with open(os.path.join(root, f"node{v}", "pid")) as f:
        pids.append(int(f.read()))
# SIGNAL=STOP: a hung node (its process stopped, its connections up) instead of a crash;
# it is killed at the end of the trial.
sig = signal.SIGSTOP if os.environ.get("SIGNAL", "KILL").upper() == "STOP" else signal.SIGKILL
t0 = time.monotonic()
for pid in pids:
    os.kill(pid, sig)
if mode == "failover":
    until("a new master", lambda: agreed(survivors, first["term"]), timeout)
elif mode == "detection":
    def dead_everywhere():
        for i in survivors:
            peers = get(i, "/api/v1/peers") or []
            if not any(p["peer_id"] == ids[victim] and p["status"] == "dead" for p in peers):
                return False
        return True
    until("the victim dead everywhere", dead_everywhere, timeout)
if mode == "redistribution":
    gone = ids[victim]
    mine = {k for k, o in before.items() if o == gone and k != f"audit:{gone}"}

    def moved():
        a = get(m, "/api/v1/assignments")
        if not a:
            return None
        items = a["items"]
        if all(k in items and items[k] != gone and items[k] in ids for k in mine):
            return items
        return None

    after = until("the victim's items owned by live nodes", moved, timeout)
    dt = time.monotonic() - t0
    changed = sum(1 for k, o in before.items() if k != f"audit:{gone}" and after.get(k) != o)
    print(f"{dt:.4f} {changed / max(len(mine), 1):.4f} {len(mine)}")
    sys.exit(0)
dt = time.monotonic() - t0
if sig == signal.SIGSTOP:
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
print(f"{dt:.4f}")
