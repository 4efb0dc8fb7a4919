"""Searches while tickets are written: one closed-loop search client against a real `ticketsearch serve`, first
alone (quiet), then while one ticket is written (POST /v1/tickets) every 0.5 s, as a user measured it.

    python scripts/bench_live.py --index /tmp/bench_live/index --out docs/bench_live.json

The index is a demo index of `-n` tickets built with `--index-type hnsw` and a trained reranker (so searches
rerank as in production); it is built into --index when missing (encoding 20k tickets takes minutes on 2 cores)
and reused afterwards. The server runs on a copy of it (the writes never touch --index), with production
settings (checkpoint every 5 s). Targets: no search over 1 s, search p99 under writes at most 3x the quiet
p99, every write acknowledged within 1 s.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.bench_service import query_texts  # noqa: E402  (the same query mix as the load benchmark)
from tests.service.server import TICKETSEARCH, Server  # noqa: E402  (the real-server helper the tests use)


def build(index: Path, n: int, train: bool) -> None:
    """A demo index of n tickets (HNSW vectors and BM25) when missing, then a trained reranker unless `train` is off."""
    from ticketsearch.index_dir import IndexDir

    data = index.parent / f"{index.name}-tickets.jsonl"
    steps = []
    if not IndexDir(index).has_store():
        steps += [["demo-data", "--out", str(data), "-n", str(n)],
                  ["ingest", "--data", str(data), "--index", str(index), "--schema", "support", "--index-type",
                   "hnsw", "-q"]]
    if train and not IndexDir(index).has_reranker():
        steps.append(["train", "--index", str(index), "-q"])
    for cmd in steps:
        print("$ ticketsearch", " ".join(cmd), flush=True)
        subprocess.run([TICKETSEARCH, *cmd], check=True)


def latency(xs: list[float]) -> dict:
    if not xs:
        return {"n": 0}
    a = np.asarray(xs) * 1000
    return {"n": len(xs), "p50_ms": round(float(np.percentile(a, 50)), 1),
            "p99_ms": round(float(np.percentile(a, 99)), 1), "max_ms": round(float(a.max()), 1),
            "over_1s": int((a > 1000).sum())}


def search_phase(url: str, texts: list[str], seconds: float, writes: bool, every: float) -> dict:
    """Search in a closed loop for `seconds`; with `writes`, a second client posts one new ticket every `every` s."""
    search_s: list[float] = []
    ack_s: list[float] = []
    errors: list[str] = []
    stop = time.monotonic() + seconds

    def writer() -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            i, due = 0, time.monotonic()
            while due < stop:
                time.sleep(max(0.0, due - time.monotonic()))
                t = {"id": f"BENCH-{time.time_ns()}-{i}", "title": f"Live write probe {i}",
                     "body": f"Written while searching: probe{i} the export to csv stalls.",
                     "created": "2025-05-01T00:00:00", "fields": {"product": "Mobile App"}}
                t0 = time.perf_counter()
                r = c.post("/v1/tickets", json=t)
                ack_s.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    errors.append(f"write {r.status_code}: {r.text[:200]}")
                i += 1
                due += every

    th = threading.Thread(target=writer, daemon=True) if writes else None
    if th is not None:
        th.start()
    with httpx.Client(base_url=url, timeout=30) as c:
        j = 0
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            r = c.post("/v1/search", json={"text": texts[j % len(texts)], "k": 10})
            search_s.append(time.perf_counter() - t0)
            if r.status_code != 200:
                errors.append(f"search {r.status_code}: {r.text[:200]}")
            j += 1
    if th is not None:
        th.join(60)
    return {"seconds": seconds, "search": latency(search_s), "writes": latency(ack_s), "errors": errors[:10]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", type=Path, default=Path("/tmp/bench_live/index"))
    ap.add_argument("-n", type=int, default=20_000, help="Tickets in the demo index (when it is built).")
    ap.add_argument("--quiet", type=float, default=30.0, help="Seconds of searches alone.")
    ap.add_argument("--duration", type=float, default=60.0, help="Seconds of searches under writes.")
    ap.add_argument("--write-every", type=float, default=0.5)
    ap.add_argument("--env", action="append", default=[], help="Server setting, e.g. TICKETSEARCH_COMPACT_CHANGES=50.")
    ap.add_argument("--no-train", action="store_true", help="Measure first-stage search: train no reranker.")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    from ticketsearch.index_dir import IndexDir

    build(args.index, args.n, train=not args.no_train)
    texts = query_texts(args.index)
    with tempfile.TemporaryDirectory(dir=args.index.parent) as tmp:
        copy = Path(tmp) / "idx"
        # the token cache is only read for explanations: leave it behind
        shutil.copytree(args.index, copy, ignore=shutil.ignore_patterns("rerank_tokens"))
        env = {"TICKETSEARCH_THREADS": "0", "TICKETSEARCH_CHECKPOINT_INTERVAL_S": "5",
               **dict(e.split("=", 1) for e in args.env)}
        srv = Server(copy, Path(tmp) / "server.log", env=env).start()
        try:
            for _ in range(20):  # warm up
                httpx.post(srv.url + "/v1/search", json={"text": texts[0], "k": 10}, timeout=60)
            quiet = search_phase(srv.url, texts, args.quiet, writes=False, every=args.write_every)
            busy = search_phase(srv.url, texts, args.duration, writes=True, every=args.write_every)
            time.sleep(6)  # let a last checkpoint run, then count them in the log
        finally:
            srv.stop()
        log = srv.log()
    q, b, w = quiet["search"], busy["search"], busy["writes"]
    targets = {
        "no_search_over_1s": q["over_1s"] == 0 and b["over_1s"] == 0,
        "p99_under_writes_at_most_3x_quiet": b["p99_ms"] <= 3 * q["p99_ms"],
        "every_write_acked_within_1s": w["max_ms"] <= 1000,
    }
    out = {
        "command": " ".join(["python", *sys.argv]), "index": str(args.index), "server_env": env,
        "reranked": IndexDir(args.index).has_reranker(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, {platform.python_version()}",
        "quiet": quiet, "under_writes": busy, "targets": targets,
        "compactions_logged": log.count("compacted "), "checkpoint_errors_logged": log.count("checkpoint failed"),
    }
    print(f"quiet         searches: {q['n']}, p50/p99/max {q['p50_ms']}/{q['p99_ms']}/{q['max_ms']} ms, "
          f"{q['over_1s']} over 1 s")
    print(f"under writes  searches: {b['n']}, p50/p99/max {b['p50_ms']}/{b['p99_ms']}/{b['max_ms']} ms, "
          f"{b['over_1s']} over 1 s")
    print(f"writes        {w['n']} acknowledged, p50/max {w.get('p50_ms')}/{w.get('max_ms')} ms; "
          f"{out['compactions_logged']} compactions logged; errors: {quiet['errors'] + busy['errors'] or 'none'}")
    print("targets:", ", ".join(f"{k} {'ok' if v else 'MISSED'}" for k, v in targets.items()))
    if args.out:
        from ticketsearch.atomic import atomic_write_json

        atomic_write_json(args.out, out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
