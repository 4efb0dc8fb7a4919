"""Load benchmark of the HTTP service: N concurrent clients posting /v1/search for a fixed time, then an
overload phase at a multiple of N that must be shed with 503 + Retry-After, not timeouts.

    python scripts/bench_service.py --index demo/index --clients 32 --duration 60 --out docs/bench_service.json

The server is a real `ticketsearch serve` process on 127.0.0.1, started on a copy of the index (so a running
demo service is not disturbed). Clients are closed-loop: each sends its next request when the last one
answers; after a 503 it waits the Retry-After it was given (1 s by default), as a client should. The clients
are spread over --procs processes (4), each with its own asyncio loop: 128 httpx clients in one Python process
measure mostly their own loop's queueing on a small machine. Each phase also reports how late the generators'
loops ran (`client_loop_lag`) and the latency of GET /healthz from a separate, mostly idle process
(`probe_healthz`), which tells the server's responsiveness apart from the generator's.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import random
import re
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.service.server import Server  # noqa: E402  (the same real-server helper the tests use)

TICK_S = 0.01  # the generator's loop-lag ticker
PROBE_EVERY_S = 0.05


def query_texts(index: Path, n: int = 500, seed: int = 0) -> list[str]:
    from ticketsearch.index_data.store import TicketStore, read_texts
    from ticketsearch.index_dir import IndexDir

    with TicketStore(IndexDir(index).store_path, read_only=True) as store:
        st = read_texts(store)
        rows = list(zip(st.titles, st.bodies))
    rng = random.Random(seed)
    picks = rng.sample(rows, min(n, len(rows)))
    # a support agent's query: the title, or the title and the start of the body
    return [t if rng.random() < 0.5 else f"{t}. {b[:200]}" for t, b in picks]


def _client_process(url: str, texts: list[str], first: int, clients: int, start_at: float, stop_at: float,
                    timeout: float) -> dict:
    """One load-generator process: `clients` closed-loop asyncio clients, plus a ticker that measures how late
    this process's own event loop runs (a late loop inflates every latency it measures)."""
    return asyncio.run(_clients(url, texts, first, clients, start_at, stop_at, timeout))


async def _clients(url: str, texts: list[str], first: int, clients: int, start_at: float, stop_at: float,
                   timeout: float) -> dict:
    out: dict = {"ok": [], "shed": [], "shed_started": [], "codes": {}, "timeouts": 0, "errors": 0, "lag": []}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))

    async def ticker() -> None:
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            await asyncio.sleep(TICK_S)
            out["lag"].append(time.perf_counter() - t0 - TICK_S)

    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        async def worker(w: int) -> None:
            rng = random.Random(w)
            while time.monotonic() < stop_at:
                body = {"text": rng.choice(texts), "k": 10}
                started = time.monotonic() - start_at
                t0 = time.perf_counter()
                try:
                    r = await client.post("/v1/search", json=body)
                except httpx.TimeoutException:
                    out["timeouts"] += 1
                    continue
                except httpx.TransportError:
                    out["errors"] += 1
                    continue
                dt = time.perf_counter() - t0
                out["codes"][str(r.status_code)] = out["codes"].get(str(r.status_code), 0) + 1
                if r.status_code == 200:
                    out["ok"].append(dt)
                elif r.status_code in (429, 503):
                    out["shed"].append(dt)
                    out["shed_started"].append(started)
                    await asyncio.sleep(float(r.headers.get("retry-after", "1")))

        await asyncio.gather(ticker(), *(worker(first + w) for w in range(clients)))
    return out


def _probe_process(url: str, start_at: float, stop_at: float) -> list[float]:
    """A lone, mostly idle client: GET /healthz every PROBE_EVERY_S on one connection. Its latency is the
    server's own responsiveness (event loop and accept), free of the load generator's queueing."""
    lat: list[float] = []
    time.sleep(max(0.0, start_at - time.monotonic()))
    with httpx.Client(base_url=url, timeout=30) as client:
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            try:
                client.get("/healthz")
                lat.append(time.perf_counter() - t0)
            except httpx.TransportError:
                pass
            time.sleep(PROBE_EVERY_S)
    return lat


def _pct(xs: list[float]) -> dict:
    if not xs:
        return {}
    a = np.asarray(xs) * 1000
    return {"p50_ms": round(float(np.percentile(a, 50)), 1), "p95_ms": round(float(np.percentile(a, 95)), 1),
            "p99_ms": round(float(np.percentile(a, 99)), 1), "max_ms": round(float(a.max()), 1)}


def server_shed_times(url: str) -> dict:
    """The server's own time for the requests it shed (cumulative; from the ASGI call to the response), read
    from /metrics: shed requests never reach a route, so they are the "unmatched" ones here."""
    text = httpx.get(url + "/metrics", timeout=60).text
    out = {}
    for key, pattern in (("count", r'ticketsearch_request_seconds_count\{route="unmatched"\} (\S+)'),
                         ("within_50ms", r'ticketsearch_request_seconds_bucket\{le="0.05",route="unmatched"\} (\S+)'),
                         ("within_500ms", r'ticketsearch_request_seconds_bucket\{le="0.5",route="unmatched"\} (\S+)')):
        found = re.search(pattern, text)
        out[key] = int(float(found.group(1))) if found else 0
    return out


def run_phase(url: str, texts: list[str], clients: int, duration: float, timeout: float, procs: int) -> dict:
    """`clients` closed-loop clients spread over `procs` processes (one asyncio loop each), and a probe."""
    procs = max(1, min(procs, clients))
    shares = [clients // procs + (i < clients % procs) for i in range(procs)]
    start_at = time.monotonic() + 2.0  # every process starts at once (CLOCK_MONOTONIC is system-wide)
    stop_at = start_at + duration
    with ProcessPoolExecutor(procs + 1, mp_context=multiprocessing.get_context("fork")) as pool:
        probe = pool.submit(_probe_process, url, start_at, stop_at)
        futures = [pool.submit(_client_process, url, texts, sum(shares[:i]), n, start_at, stop_at, timeout)
                   for i, n in enumerate(shares)]
        parts = [f.result() for f in futures]
        probe_lat = probe.result()
    wall = time.monotonic() - start_at
    codes: dict[str, int] = {}
    for part in parts:
        for k, v in part["codes"].items():
            codes[k] = codes.get(k, 0) + v
    timeouts = sum(p["timeouts"] for p in parts)
    errors = sum(p["errors"] for p in parts)
    non_2xx = sum(v for k, v in codes.items() if k != "200")
    return {
        "clients": clients, "processes": procs, "seconds": round(wall, 1),
        "requests": sum(codes.values()) + timeouts + errors,
        "ok": codes.get("200", 0), "throughput_rps": round(codes.get("200", 0) / wall, 1), "status_counts": codes,
        "errors": non_2xx + timeouts + errors, "timeouts": timeouts, "connection_errors": errors,
        "shed": codes.get("503", 0) + codes.get("429", 0),
        "latency_ok": _pct([x for p in parts for x in p["ok"]]),
        "latency_shed": _pct([x for p in parts for x in p["shed"]]),
        # the same without the opening burst (every client connecting and sending at once in its first second)
        "latency_shed_after_1s": _pct([x for p in parts for x, t in zip(p["shed"], p["shed_started"]) if t >= 1.0]),
        # how late the generators' own event loops ran (a TICK_S sleep's overshoot): latency they cannot see
        # past, included in every figure above
        "client_loop_lag": _pct([x for p in parts for x in p["lag"]]),
        # GET /healthz from a separate, mostly idle process: the server's own responsiveness under this load
        "probe_healthz": _pct(probe_lat),
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
    ap.add_argument("--procs", type=int, default=4,
                    help="Load-generator processes the clients are spread over (1: all in one asyncio loop).")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    from ticketsearch.index_dir import IndexDir
    if not IndexDir(args.index).has_store():
        sys.exit(f"error: {args.index}: no index here (run 'make demo' or 'ticketsearch ingest' first)")
    texts = query_texts(args.index)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(args.index, Path(tmp) / "idx")
        env = {"TICKETSEARCH_THREADS": "0", **dict(e.split("=", 1) for e in args.env)}
        srv = Server(Path(tmp) / "idx", Path(tmp) / "server.log", env=env)
        try:
            srv.start()  # inside the try: a server that fails to get ready is stopped too
            httpx.post(srv.url + "/v1/search", json={"text": "warm up", "k": 10}, timeout=60)
            steady = run_phase(srv.url, texts, args.clients, args.duration, args.timeout, args.procs)
            over = (run_phase(srv.url, texts, int(args.clients * args.overload), args.overload_duration,
                              args.timeout, args.procs) if args.overload > 0 else None)
            if over is not None:
                over["server_shed_times"] = server_shed_times(srv.url)
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
              + (f"; shed p50/p99 {ls.get('p50_ms')}/{ls.get('p99_ms')} ms" if ls else "")
              + f"; client loop lag p99 {r['client_loop_lag'].get('p99_ms')} ms"
              f"; probe /healthz p50/p99 {r['probe_healthz'].get('p50_ms')}/{r['probe_healthz'].get('p99_ms')} ms")
    if args.out:
        from ticketsearch.atomic import atomic_write_json

        atomic_write_json(args.out, out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
