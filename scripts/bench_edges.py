"""The edges under load (issue 28): an ordinary keyed search's latency when the service is quiet, while 100
anonymous connections hang, and while 8 keys keep costly searches (explain of 20 hits over a query of 11,000
characters) in flight: with the costly bound (the default settings) and without it (the bound raised to 64), in
one run, on copies of the same index.

    python scripts/bench_edges.py --index demo/index --out docs/bench_edges.json

Each server is a real `ticketsearch serve` process on 127.0.0.1 (`tests/service/server.py`). Ordinary searches
are sent one after another from one client (closed loop); the hanging connections each send a webhook's headers
and one byte of a 500-byte body, then nothing (they hold no slot: the gate reads the body before admission and
gives up after `TICKETSEARCH_BODY_TIMEOUT_S`, 10 s, so the phase lasts less than that).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.service.server import Server  # noqa: E402
from ticketsearch.atomic import atomic_write_json  # noqa: E402

ORDINARY = ["customers were charged twice for their subscription", "app crashes when I open it",
            "refund not received after cancelling the order", "password reset email never arrives"]
LONG = " ".join(["refund not received after cancelling the order, charged twice on the card"] * 150)
KEY = "bench-ordinary-key"
COSTLY_KEYS = [f"bench-costly-key-{i}" for i in range(8)]


def ordinary(url: str, n: int) -> dict:
    times, codes = [], []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as c:
        for i in range(n):
            t0 = time.perf_counter()
            r = c.post("/v1/search", json={"text": ORDINARY[i % len(ORDINARY)], "k": 10})
            times.append((time.perf_counter() - t0) * 1000)
            codes.append(r.status_code)
    return {"n": n, "ok": codes.count(200), "p50_ms": round(float(np.percentile(times, 50)), 1),
            "p99_ms": round(float(np.percentile(times, 99)), 1), "max_ms": round(max(times), 1)}


def hanging(port: int, n: int) -> list[socket.socket]:
    out = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(b"POST /v1/hooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 500\r\n\r\n{")
        out.append(s)
    return out


def run(index: Path, work: Path, bounded: bool, n: int) -> dict:
    keys = ",".join(f"{k}:read" for k in [KEY, *COSTLY_KEYS])
    env = {"TICKETSEARCH_API_KEYS": keys, "TICKETSEARCH_THREADS": "2"}
    if not bounded:
        env |= {"TICKETSEARCH_COSTLY_PER_KEY": "64", "TICKETSEARCH_COSTLY_TOTAL": "64"}
    shutil.copytree(index, work / "idx")
    srv = Server(work / "idx", work / "server.log", env=env).start()
    try:
        ordinary(srv.url, 10)  # warm
        out: dict = {"bounded": bounded, "quiet": ordinary(srv.url, n)}
        socks = hanging(srv.port, 100)
        t0 = time.monotonic()
        out["hanging_100"] = ordinary(srv.url, n)
        out["hanging_100"]["phase_s"] = round(time.monotonic() - t0, 1)
        for s in socks:
            s.close()
        stop = threading.Event()
        costly_codes: list[int] = []

        def costly(key: str) -> None:
            with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as c:
                while not stop.is_set():
                    r = c.post("/v1/search", json={"text": LONG, "k": 20, "explain": True})
                    costly_codes.append(r.status_code)
                    if r.status_code == 429:
                        time.sleep(float(r.headers.get("retry-after", "1")))

        threads = [threading.Thread(target=costly, args=(k,), daemon=True) for k in COSTLY_KEYS]
        for t in threads:
            t.start()
        time.sleep(2)
        out["costly_8"] = ordinary(srv.url, n)
        stop.set()
        for t in threads:
            t.join(180)
        out["costly_8"]["costly_answers"] = {str(c): costly_codes.count(c) for c in sorted(set(costly_codes))}
        return out
    finally:
        srv.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--searches", type=int, default=100)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = []
        for bounded in (True, False):
            print(f"server with the costly bound {'on' if bounded else 'raised to 64'} ...", flush=True)
            work = Path(tmp) / ("bounded" if bounded else "unbounded")
            work.mkdir()
            results.append(run(args.index, work, bounded, args.searches))
            print(json.dumps(results[-1]), flush=True)
    on, off = results
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "index": str(args.index),
              "runs": results,
              "ratios": {
                  "hanging_p99_over_quiet": round(on["hanging_100"]["p99_ms"] / on["quiet"]["p99_ms"], 2),
                  "costly_p99_bounded_over_unbounded": round(on["costly_8"]["p99_ms"] / off["costly_8"]["p99_ms"], 3),
                  "costly_p50_bounded_over_unbounded": round(on["costly_8"]["p50_ms"] / off["costly_8"]["p50_ms"], 3)}}
    print(json.dumps(report["ratios"], indent=1))
    if args.out:
        atomic_write_json(args.out, report)


if __name__ == "__main__":
    main()
