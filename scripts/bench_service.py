"""Load benchmark of the HTTP service: N concurrent clients posting /v1/search for a fixed time, then an
overload phase at a multiple of N that must be shed with 503 + Retry-After, not timeouts.

    python scripts/bench_service.py --index demo/index --clients 32 --duration 60 --out docs/bench_service.json

The server is a real `ticketsearch serve` process on 127.0.0.1, started on a copy of the index (so a running
demo service is not disturbed). Clients are closed-loop: each sends its next request when the last one
answers; after a 503 it waits the Retry-After it was given (1 s by default), as a client should.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.service.server import Server  # noqa: E402  (the same real-server helper the tests use)


def query_texts(index: Path, n: int = 500, seed: int = 0) -> list[str]:
    from ticketsearch.index_data.store import TicketStore
    from ticketsearch.index_dir import IndexDir

    with TicketStore(IndexDir(index).store_path, read_only=True) as store:
        rows = store.con.execute("SELECT title, body FROM tickets").fetchall()
    rng = random.Random(seed)
    picks = rng.sample(rows, min(n, len(rows)))
    # a support agent's query: the title, or the title and the start of the body
    return [t if rng.random() < 0.5 else f"{t}. {b[:200]}" for t, b in picks]


async def run_phase(url: str, texts: list[str], clients: int, duration: float, timeout: float) -> dict:
    lat_ok: list[float] = []
    lat_shed: list[float] = []
    codes: dict[str, int] = {}
    timeouts = 0
    errors = 0
    stop = time.monotonic() + duration
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        async def worker(w: int) -> None:
            nonlocal timeouts, errors
            rng = random.Random(w)
            while time.monotonic() < stop:
                body = {"text": rng.choice(texts), "k": 10}
                t0 = time.perf_counter()
                try:
                    r = await client.post("/v1/search", json=body)
                except httpx.TimeoutException:
                    timeouts += 1
                    continue
                except httpx.TransportError:
                    errors += 1
                    continue
                dt = time.perf_counter() - t0
                codes[str(r.status_code)] = codes.get(str(r.status_code), 0) + 1
                if r.status_code == 200:
                    lat_ok.append(dt)
                elif r.status_code in (429, 503):
                    lat_shed.append(dt)
                    await asyncio.sleep(float(r.headers.get("retry-after", "1")))

        t_start = time.monotonic()
        await asyncio.gather(*(worker(w) for w in range(clients)))
        wall = time.monotonic() - t_start

    def pct(xs: list[float]) -> dict:
        if not xs:
            return {}
        a = np.asarray(xs) * 1000
        return {"p50_ms": round(float(np.percentile(a, 50)), 1), "p95_ms": round(float(np.percentile(a, 95)), 1),
                "p99_ms": round(float(np.percentile(a, 99)), 1), "max_ms": round(float(a.max()), 1)}

    non_2xx = sum(v for k, v in codes.items() if k != "200")
    return {
        "clients": clients, "seconds": round(wall, 1), "requests": sum(codes.values()) + timeouts + errors,
        "ok": codes.get("200", 0), "throughput_rps": round(codes.get("200", 0) / wall, 1), "status_counts": codes,
        "errors": non_2xx + timeouts + errors, "timeouts": timeouts, "connection_errors": errors,
        "shed": codes.get("503", 0) + codes.get("429", 0), "latency_ok": pct(lat_ok), "latency_shed": pct(lat_shed),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", type=Path, default=ROOT / "demo" / "index")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--overload", type=float, default=4.0, help="Overload phase: this many times --clients.")
    ap.add_argument("--overload-duration", type=float, default=30.0)
    ap.add_argument("--timeout", type=float, default=10.0, help="Client timeout (s): slower counts as a timeout.")
    ap.add_argument("--env", action="append", default=[], help="Server setting, e.g. TICKETSEARCH_WORKERS=2.")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    from ticketsearch.index_dir import IndexDir
    if not IndexDir(args.index).has_store():
        sys.exit(f"error: {args.index}: no index here (run 'make demo' or 'ticketsearch ingest' first)")
    texts = query_texts(args.index)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(args.index, Path(tmp) / "idx")
        srv = Server(Path(tmp) / "idx", Path(tmp) / "server.log", env={"TICKETSEARCH_THREADS": "0", **dict(e.split("=", 1) for e in args.env)}).start()
        try:
            httpx.post(srv.url + "/v1/search", json={"text": "warm up", "k": 10}, timeout=60)
            steady = asyncio.run(run_phase(srv.url, texts, args.clients, args.duration, args.timeout))
            over = (asyncio.run(run_phase(srv.url, texts, int(args.clients * args.overload), args.overload_duration,
                                          args.timeout)) if args.overload > 0 else None)
        finally:
            srv.stop()
    out = {
        "command": " ".join(["python", *sys.argv]),
        "index": str(args.index), "queries": len(texts), "server_env": args.env,
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, {platform.python_version()}",
        "steady": steady, "overload": over,
    }
    for name, r in (("steady", steady), ("overload", over)):
        if r is None:
            continue
        lo, ls = r["latency_ok"], r["latency_shed"]
        print(f"{name:9s} {r['clients']:4d} clients {r['seconds']:5.1f}s: {r['ok']} ok ({r['throughput_rps']}/s), "
              f"{r['shed']} shed, {r['timeouts']} timeouts, {r['connection_errors']} connection errors; "
              f"ok p50/p95/p99 {lo.get('p50_ms')}/{lo.get('p95_ms')}/{lo.get('p99_ms')} ms"
              + (f"; shed p50/p99 {ls.get('p50_ms')}/{ls.get('p99_ms')} ms" if ls else ""))
    if args.out:
        from ticketsearch.atomic import atomic_write_json

        atomic_write_json(args.out, out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
