"""Helpers shared by the benchmark scripts: the nodes' HTTP API and bounded waiting."""
import json
import sys
import time
import urllib.request


def get(port, path, timeout=2):
    """GET http://127.0.0.1:PORT/PATH as JSON; None when the node does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return json.load(r)
    except Exception:
        return None


def post(port, path, body, timeout=5):
    """POST JSON; returns (status, JSON body or None)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.load(e)
        except Exception:
            return e.code, None
    except Exception:
        return 0, None


def until(what, check, limit, prefix="bench", on_fail=None, every=0.05):
    """Polls CHECK until it returns something true (returned); exits after LIMIT seconds."""
    t = time.monotonic()
    while time.monotonic() - t < limit:
        v = check()
        if v:
            return v
        time.sleep(every)
    if on_fail:
        on_fail()
    sys.exit(f"{prefix}: {what} not reached in {limit} s")


def percentile(values, q):
    """The q-quantile (0..1) of VALUES by the nearest-rank method."""
    v = sorted(values)
    return v[min(len(v) - 1, int((len(v) - 1) * q))] if v else None
