"""What the linear reranker (`rerank-linear`) saves against the fusion model (`rerank-cross+pair`), end to end on
one generated collection, through the library the CLI and the service call:

    python scripts/bench_linear.py --tickets 2000 --later 200 --queries 200 --out docs/bench_linear_demo.json

1. ingest `--tickets` generated tickets into one index (encoded once), copied twice;
2. train each variant on its copy (`train_index`, installed as asked, no folds): the seconds, including what
   the fusion model needs besides training (token states of the mined tickets, every ticket's candidate
   vector), and the held-out test figures each reports;
3. ingest `--later` newer tickets into each copy: the seconds (the fusion model's candidate vectors are refreshed);
4. search `--queries` queries (tickets' titles as free text, and whole tickets with their titles) on each,
   alternating, k = 10: wall-clock p50 / p95 per search, and the rerank stage's own milliseconds.

With `--index DIR --linear MODEL_DIR [MODEL_DIR ...]` it instead times searches on an existing index (its
installed fusion model) against the same pipeline with each linear model swapped in (`SearchPipeline.reranker`), on
test-period tickets' titles and texts: the search latency on a real index, without retraining anything.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from ticketsearch.api import TicketIndex
from ticketsearch.atomic import atomic_write_json
from ticketsearch.index_data.demo import write_demo
from ticketsearch.pipeline.ingest import ingest_and_build
from ticketsearch.pipeline.pairs import CODE_TERMS
from ticketsearch.pipeline.search import SearchPipeline
from ticketsearch.pipeline.training import train_index
from ticketsearch.rerank.general import LinearReranker
from ticketsearch.rerank.train import TrainConfig
from ticketsearch.settings import get_settings

VARIANTS = ("rerank-linear", "rerank-cross+pair")


def quiet(_: str) -> None:
    return None


def ms_summary(xs: list[float]) -> dict[str, float]:
    s = sorted(xs)
    return {"p50": round(statistics.median(s), 2), "p95": round(s[int(0.95 * (len(s) - 1))], 2),
            "mean": round(statistics.fmean(s), 2), "n": len(s)}


def time_searches(searchers: dict[str, Any], texts: list[Query], rounds: int = 1) -> dict[str, Any]:
    """Each searcher (a `search((title, text))` callable) on every query, alternating, after two warm-ups; the
    code terms' cache emptied before each search (searchers that share a process would share it, and the second
    to search would find the first's candidates' code terms)."""
    wall: dict[str, list[float]] = {n: [] for n in searchers}
    stage: dict[str, list[float]] = {n: [] for n in searchers}
    reranked = {n: 0 for n in searchers}
    for search in searchers.values():
        for t in texts[:2]:
            search(t)
    for _ in range(rounds):
        for t in texts:
            for name, search in searchers.items():
                CODE_TERMS.clear()  # each pays for its own candidates' code terms: the cache is the process's
                t0 = time.perf_counter()
                res = search(t)
                wall[name].append((time.perf_counter() - t0) * 1000)
                stage[name].append(res.timings_ms.get("rerank", 0.0))
                reranked[name] += int(res.reranked)
    return {n: {"search_ms": ms_summary(wall[n]), "rerank_stage_ms": ms_summary(stage[n]),
                "reranked": reranked[n]} for n in searchers}


Query = tuple[str | None, str]  # (title, text): a title asked alone is free text; a whole ticket has both


def query_texts(rows: list[dict], n: int, seed: int = 0) -> list[Query]:
    picked = random.Random(seed).sample(rows, min(n, len(rows)))
    half = len(picked) // 2
    return [(None, r["title"]) for r in picked[:half]] + [(r["title"], r.get("body") or r["title"])
                                                           for r in picked[half:]]


def generated(args: argparse.Namespace) -> dict[str, Any]:
    settings = get_settings()
    out: dict[str, Any] = {"tickets": args.tickets, "later": args.later, "queries": args.queries}
    with tempfile.TemporaryDirectory(prefix="bench-linear-") as tmp:
        root = Path(tmp)
        write_demo(root / "all.jsonl", n=args.tickets + args.later, seed=args.seed)
        rows = [json.loads(x) for x in (root / "all.jsonl").read_text().splitlines()]
        rows.sort(key=lambda r: r["created"])
        first, later = rows[: args.tickets], rows[args.tickets:]
        for name, part in (("first", first), ("later", later)):
            (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
        t0 = time.perf_counter()
        store, _, _ = ingest_and_build(root / "first.jsonl", root / "base", "support", settings, progress=False,
                                       log=quiet)
        store.close()
        out["ingest_s"] = round(time.perf_counter() - t0, 1)
        for v in VARIANTS:
            idx = root / v
            shutil.copytree(root / "base", idx)
            t0 = time.perf_counter()
            res = train_index(idx, None, None, v, settings, TrainConfig(), progress=False, log=quiet,
                              install_rule="always", validation_folds=0)
            row: dict[str, Any] = {"train_s": round(time.perf_counter() - t0, 1), "installed": res.get("installed"),
                                   "valid": res["valid"][v], "test": res["test"][v],
                                   "first_stage_test": res["first_stage"]["test"]}
            t0 = time.perf_counter()
            store, _, _ = ingest_and_build(root / "later.jsonl", idx, None, settings, progress=False, log=quiet)
            store.close()
            row["ingest_later_s"] = round(time.perf_counter() - t0, 1)
            out[v] = row
            print(f"{v}: {json.dumps(row)}", flush=True)
        indexes = {v: TicketIndex.open(root / v, settings=settings) for v in VARIANTS}
        try:
            searchers = {v: (lambda t, i=i: i.search(t[1], title=t[0], k=10)) for v, i in indexes.items()}
            out["search"] = time_searches(searchers, query_texts(rows, args.queries, args.seed))
        finally:
            for i in indexes.values():
                i.close()
    return out


def existing(args: argparse.Namespace) -> dict[str, Any]:
    """Search latency on an existing index: its installed model, and each linear model swapped in."""
    settings = get_settings()
    deep = SearchPipeline(args.index, settings=settings)
    linear = {Path(p).name: SearchPipeline(args.index, settings=settings) for p in args.linear}
    try:
        for path, lin in zip(args.linear, linear.values()):
            lin.reranker, lin.vectors, lin.notes = LinearReranker(path), None, []
        ids = [i for i, _ in deep.store.ids_by_created(since=datetime.fromisoformat(args.test_since))]
        rows = [{"title": t.title, "body": t.body} for t in (deep.store.get(i) for i in ids)]
        texts = query_texts(rows, args.queries, args.seed)
        searchers: dict[str, Any] = {"fusion (installed)": lambda t: deep.search(t[1], title=t[0], k=10)}
        searchers.update({name: (lambda t, p=p: p.search(t[1], title=t[0], k=10)) for name, p in linear.items()})
        res = time_searches(searchers, texts)
    finally:
        deep.close()
        for p in linear.values():
            p.close()
    return {"index": str(args.index), "linear": [str(p) for p in args.linear], "installed": deep.reranker.name
            if deep.reranker else None, "queries": len(texts), "search": res}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tickets", type=int, default=2000)
    ap.add_argument("--later", type=int, default=200)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--index", type=Path, default=None, help="an existing index with a fusion model installed")
    ap.add_argument("--linear", type=Path, nargs="+", default=[],
                    help="with --index: rerank-linear model directories (each timed, named by its directory)")
    ap.add_argument("--test-since", default="2016-01-01", help="with --index: query with tickets from then on")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    t0 = time.perf_counter()
    out = existing(args) if args.index is not None else generated(args)
    out["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform()}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(args.out, out)
    print(json.dumps(out.get("search"), indent=1))


if __name__ == "__main__":
    main()
