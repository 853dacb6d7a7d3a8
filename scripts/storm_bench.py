#!/usr/bin/env python3
"""The storm benchmark: one node (dev mode) watches a temporary root; N files are created
under it, then each is modified (2N changes, as fast as Python writes them). The node's
resident set size is sampled every 100 ms from start to reconciliation (a full
verification that started after the storm agrees with the disk, every spike was judged
and every consultation settled). Prints the figures and ends with RESULT {json}.

    storm_bench.py BINARY DIR FILES
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def get(api, path):
    with urllib.request.urlopen(f"http://{api}{path}", timeout=5) as r:
        return json.load(r)


def main():
    binary, d, files = sys.argv[1], sys.argv[2], int(sys.argv[3])
    dirs = 10
    etc = os.path.join(d, "root", "etc")
    for i in range(dirs):
        os.makedirs(os.path.join(etc, f"storm{i}"), exist_ok=True)
    env = dict(os.environ)
    env.update({
        "FLEETMESH__WATCH__ROOT": os.path.join(d, "root"),
        "FLEETMESH__WATCH__VERIFY_INTERVAL_S": "10",
    })
    env.pop("RUST_LOG", None)
    log = open(os.path.join(d, "node.log"), "w")
    node = subprocess.Popen(
        [binary, "node", "--dev", "--name", "storm", "--region", "eu", "--role", "baseline",
         "--data-dir", d, "--listen", "/ip4/127.0.0.1/tcp/0", "--api-listen", "127.0.0.1:0"],
        env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        runtime = os.path.join(d, "node.json")
        deadline = time.time() + 30
        api = None
        while time.time() < deadline and api is None:
            try:
                with open(runtime) as f:
                    rt = json.load(f)
                if rt.get("pid") == node.pid:
                    api = rt["api"]
            except (OSError, ValueError):
                time.sleep(0.1)
        if api is None:
            sys.exit("storm: the node did not start")
        while get(api, "/api/v1/detectors")["files"]["last_startup_verification_unix_ms"] is None:
            time.sleep(0.2)
        time.sleep(2)
        idle = rss_kib(node.pid)
        peak = [idle]
        sampling = [True]

        def sample():
            while sampling[0]:
                r = rss_kib(node.pid)
                if r:
                    peak[0] = max(peak[0], r)
                time.sleep(0.1)

        t = threading.Thread(target=sample)
        t.start()
        start = time.time()
        for i in range(files):
            with open(os.path.join(etc, f"storm{i % dirs}", f"f{i}"), "w") as f:
                f.write(f"created {i}\n")
        for i in range(files):
            with open(os.path.join(etc, f"storm{i % dirs}", f"f{i}"), "w") as f:
                f.write(f"modified {i}\n")
        written = time.time() - start
        scans_at_end = get(api, "/api/v1/detectors")["files"]["layers"]["scans"]
        expected = 1 + dirs + files
        reconciled = None
        decided = None
        deadline = time.time() + 900
        while time.time() < deadline:
            st = get(api, "/api/v1/detectors")["files"]
            layers = st["layers"]
            if reconciled is None and layers["scans"] >= scans_at_end + 2 \
                    and st["entries"] == expected and layers["last_scan_changes"] == 0:
                reconciled = time.time() - start
            node_view = get(api, "/api/v1/node")
            sync = node_view.get("sync") or {}
            try:
                pol = get(api, "/api/v1/policy")
                counts = pol.get("counts") or {}
            except Exception:
                counts = {}
            last = sync.get("last_seq") or 0
            judged = sum(counts.get(k, 0) for k in ("approved", "violation", "consult"))
            settled = counts.get("settled_by_master", 0) + counts.get("autonomous", 0)
            if reconciled is not None and judged >= last > 0 and settled >= counts.get("consult", 0):
                decided = time.time() - start
                break
            time.sleep(0.5)
        time.sleep(5)
        sampling[0] = False
        t.join()
        after = rss_kib(node.pid)
        spikes = (get(api, "/api/v1/node").get("sync") or {}).get("last_seq")
        print(f"storm: {2 * files} changes written in {written:.1f} s; reconciled after "
              f"{reconciled} s, every spike judged after {decided} s; RSS idle {idle} KiB, "
              f"peak {peak[0]} KiB, 5 s after {after} KiB", file=sys.stderr)
        print("RESULT " + json.dumps({
            "scenario": "storm", "changes": 2 * files, "spikes": spikes,
            "written_s": round(written, 1),
            "reconciled_s": None if reconciled is None else round(reconciled, 1),
            "judged_s": None if decided is None else round(decided, 1),
            "rss_idle_bytes": idle * 1024, "rss_peak_bytes": peak[0] * 1024,
            "rss_after_bytes": (after or 0) * 1024,
        }))
    finally:
        node.send_signal(signal.SIGTERM)
        try:
            node.wait(timeout=10)
        except subprocess.TimeoutExpired:
            node.kill()


if __name__ == "__main__":
    main()
