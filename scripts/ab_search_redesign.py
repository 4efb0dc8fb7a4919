"""Interleaved A/B of single-query search before and after the redesign, in one process on one index.

    git worktree add /tmp/old 62c89d1
    python scripts/ab_search_redesign.py --old /tmp/old --index IDX --queries demo/tickets.jsonl

The code before the redesign (commit 62c89d1) has top-level packages (`retrieval`, `index_data`), so both
searchers load side by side. Queries alternate which searcher goes first; each is timed unfiltered and with
a filter. Also reports how often the two top 10s agree.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--old", type=Path, required=True, help="A checkout of 62c89d1.")
    ap.add_argument("--index", type=Path, required=True, help="An index directory without a reranker.")
    ap.add_argument("--queries", type=Path, required=True, help="A JSONL file of tickets: titles become queries.")
    ap.add_argument("-n", type=int, default=300)
    args = ap.parse_args()
    sys.path.insert(0, str(args.old))
    from index_data.config import get_settings as old_settings  # the code before the redesign
    from retrieval.search import Searcher as Old

    from retrieval.encoder import Encoder as OldEncoder
    from ticketsearch.pipeline.search import SearchPipeline as New
    from ticketsearch.retrieval.encoder import Encoder as NewEncoder
    from ticketsearch.settings import get_settings as new_settings

    rows = [json.loads(line) for line in args.queries.read_text().splitlines()[: args.n]]
    queries = [f"{r['title']} - still happening for us" for r in rows]
    # the filtered search's date: the middle of the queries' file, so that it keeps about half of the tickets
    # whenever the data was generated (demo dates end on the day of generation)
    dates = sorted(r["created"] for r in rows)
    before = dates[len(dates) // 2][:10]
    searchers = {
        "old": Old(args.index, settings=old_settings(), encoder=OldEncoder("minilm", settings=old_settings())),
        "new": New(args.index, settings=new_settings(), encoder=NewEncoder("minilm", settings=new_settings())),
    }
    for q in queries[:10]:  # warm up
        for s in searchers.values():
            s.search(q, k=10)
    plain: dict[str, list[float]] = {"old": [], "new": []}
    filtered: dict[str, list[float]] = {"old": [], "new": []}
    same_list, same_set = [], []
    for i, q in enumerate(queries):
        order = ["old", "new"] if i % 2 == 0 else ["new", "old"]
        tops = {}
        for name in order:
            s = searchers[name]
            t0 = time.perf_counter()
            tops[name] = [h.id for h in s.search(q, k=10).hits]
            plain[name].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            s.search(q, k=10, filters={"product": ["Mobile App"]}, before=before)
            filtered[name].append(time.perf_counter() - t0)
        same_list.append(tops["old"] == tops["new"])
        same_set.append(set(tops["old"]) == set(tops["new"]))
    for name in ("old", "new"):
        p = [float(np.percentile(np.array(x) * 1000, q)) for x in (plain[name], filtered[name]) for q in (50, 99)]
        print(f"{name} search p50 {p[0]:.2f} p99 {p[1]:.2f} ms | filtered p50 {p[2]:.2f} p99 {p[3]:.2f} ms")
    ratio = float(np.median(plain["new"]) / np.median(plain["old"]))
    ratio_f = float(np.median(filtered["new"]) / np.median(filtered["old"]))
    print(f"new/old p50 ratio: search {ratio:.3f}, filtered {ratio_f:.3f}")
    print(f"top-10 identical lists {np.mean(same_list):.2f}, identical sets {np.mean(same_set):.2f}")


if __name__ == "__main__":
    main()
