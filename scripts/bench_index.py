"""Benchmark the index-and-search path at demo size: DuckDB ingest rate, encode rate, search latency.

    python scripts/bench_index.py [--tickets 2000] [--ingest-rows 100000] [--queries 200] [--out FILE]

Ingest is measured on generated rows (validation + one DuckDB transaction, no encoding). The encode rate is
the bare encoder on the demo texts and the end-to-end index build on the same texts, so the two compare as
a ratio. Search latency is per stage (encode, retrieve, fetch) over held-out query texts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

DEMO_END = datetime(2025, 6, 30)  # the demo data end pinned: the filtered search below asks before 2025


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(xs), p))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tickets", type=int, default=2000)
    ap.add_argument("--ingest-rows", type=int, default=100_000)
    ap.add_argument("--ingest-repeats", type=int, default=5, help="fresh stores; the median is reported")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from ticketsearch.index_data.demo import write_demo
    from ticketsearch.index_data.ingest import ingest_file
    from ticketsearch.index_data.records import ticket_text
    from ticketsearch.index_data.schema import load_schema
    from ticketsearch.index_data.store import TicketStore
    from ticketsearch.index_dir import IndexDir
    from ticketsearch.pipeline.ingest import build_index
    from ticketsearch.pipeline.search import SearchPipeline
    from ticketsearch.retrieval.encoder import Encoder
    from ticketsearch.retrieval.threads import apply_threads
    from ticketsearch.settings import get_settings

    settings = get_settings()
    apply_threads(settings)  # as the CLI and the service set them
    schema = load_schema("support")
    results: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
        "args": vars(args) | {"out": str(args.out) if args.out else None},
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        # 1. DuckDB ingest rate (validation + one transaction), no encoding
        big = tmp_path / "big.jsonl"
        write_demo(big, n=args.ingest_rows, seed=1, end=DEMO_END)
        for path_name, columnar in (("columnar", True), ("per-row", False)):
            rates = []
            for i in range(args.ingest_repeats if columnar else 1):
                with TicketStore(tmp_path / f"ingest-{path_name}-{i}.duckdb", schema=schema) as store:
                    rep = ingest_file(store, big, progress=False, columnar=columnar)
                rates.append(rep.rows_per_second)
            rates.sort()
            key = "ingest" if columnar else "ingest_per_row_path"
            results[f"{key}_rows"] = rep.rows_read
            results[f"{key}_rows_per_s"] = rates[len(rates) // 2]
            results[f"{key}_rows_per_s_all"] = [round(r) for r in rates]
            print(f"ingest ({path_name} path): {rep.rows_read} rows, median {rates[len(rates) // 2]:,.0f} rows/s "
                  f"(runs: {', '.join(f'{r:,.0f}' for r in rates)})")

        # 2. Encode rate: bare encoder vs end-to-end index build, same texts
        demo = tmp_path / "demo.jsonl"
        write_demo(demo, n=args.tickets, seed=0, end=DEMO_END)
        rows = [json.loads(line) for line in demo.read_text().splitlines()]
        texts = [ticket_text(schema, r["title"], r["body"]) for r in rows]
        encoder = Encoder("minilm", settings=settings)
        encoder.encode(texts[:64])  # warm-up
        t0 = time.perf_counter()
        encoder.encode(texts)
        bare = time.perf_counter() - t0
        index_dir = tmp_path / "index"
        t0 = time.perf_counter()
        with TicketStore(IndexDir(index_dir).store_path, schema=schema) as store:
            ingest_file(store, demo, progress=False)
            build = build_index(index_dir, store, encoder, "minilm", settings=settings, progress=False)
        e2e = time.perf_counter() - t0
        results["encode_tickets_per_s"] = len(texts) / bare
        results["build_tickets_per_s"] = len(texts) / e2e
        results["build_vs_bare_encoder"] = bare / e2e
        results["unique_texts_encoded"] = build.encoded
        print(f"encode: bare {len(texts) / bare:.1f} tickets/s; index build end to end {len(texts) / e2e:.1f} "
              f"tickets/s ({bare / e2e:.0%} of bare)")

        # 3. Search latency per stage
        searcher = SearchPipeline(index_dir, settings=settings, encoder=encoder)
        queries = [f"{r['title']} - still happening for us" for r in rows[: args.queries]]
        stages: dict[str, list[float]] = {"encode": [], "retrieve": [], "fetch": [], "total": []}
        searcher.search(queries[0], k=10)
        for q in queries:
            t0 = time.perf_counter()
            res = searcher.search(q, k=10)
            stages["total"].append((time.perf_counter() - t0) * 1000)
            for k_, v in res.timings_ms.items():
                stages[k_].append(v)
        filt: list[float] = []
        for q in queries[:50]:
            t0 = time.perf_counter()
            searcher.search(q, k=10, filters={"product": ["Mobile App"]}, before="2025-01-01")
            filt.append((time.perf_counter() - t0) * 1000)
        searcher.close()
        results["search_ms"] = {k_: {"p50": pct(v, 50), "p99": pct(v, 99)} for k_, v in stages.items()}
        results["filtered_search_ms"] = {"p50": pct(filt, 50), "p99": pct(filt, 99)}
        for k_, v in results["search_ms"].items():  # type: ignore[union-attr]  # results["search_ms"] is the dict written above
            print(f"search {k_:>8}: p50 {v['p50']:.2f} ms  p99 {v['p99']:.2f} ms")
        print(f"filtered search total: p50 {pct(filt, 50):.2f} ms  p99 {pct(filt, 99):.2f} ms")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
