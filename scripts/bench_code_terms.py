"""What the code terms cost a reranked search (issue 29 item 5): the pair inputs of the same query's top
`rerank_depth` with and without the code columns (`pair_features.code_agreement`), interleaved in one process:
first with every text new to the code-terms cache (`pairs.CODE_TERMS`: the candidates' bodies read and their
code terms found; a service's first searches), then again (cached by text hash: no body read).

    python scripts/bench_code_terms.py --index runs/hive/index --out docs/bench_code_terms_hive.json

Queries: `--queries` tickets of the index (its newest ones, as `like` searches before their own date), each
searched once for its candidates; the timed part is `SearchPipeline.pair_inputs` alone.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np

from ticketsearch.atomic import atomic_write_json
from ticketsearch.pipeline.pairs import CODE_TERMS
from ticketsearch.pipeline.search import SearchPipeline
from ticketsearch.requests import SearchRequest
from ticketsearch.settings import Settings


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--queries", type=int, default=100)
    args = ap.parse_args()
    s = SearchPipeline(args.index, Settings())
    try:
        reranker = s.reranker
        if reranker is None or not reranker.uses_pair:
            raise SystemExit(f"{args.index}: no reranker with pair inputs installed")
        rows = s.store.ids_by_created()[-args.queries:]
        cases = []
        for tid, created in rows:
            req = SearchRequest.of(like=tid, before=created, k=10)
            q, cands = s.retrieve(req, "hybrid", s.rerank_depth, tokens=True, rerank=True)
            s.complete(q, cands, s.rerank_depth)
            cases.append((q, cands, s.candidate_rows(cands, cands.row_ids[: s.rerank_depth])))
        out: dict = {"index": str(args.index), "queries": len(cases), "machine": platform.platform(),
                     "processor": platform.processor(), "ms": {}}
        for phase in ("cold", "warm"):
            if phase == "cold":
                CODE_TERMS.clear()
            times: dict[str, list[float]] = {"without": [], "with": []}
            for q, cands, crows in cases:
                for name, code in (("with", True), ("without", False)):
                    reranker.code = code  # the same pipeline, both models' inputs
                    t0 = time.perf_counter()
                    s.pair_inputs(q, cands, crows)
                    times[name].append((time.perf_counter() - t0) * 1000)
            out["ms"][phase] = {k: {"p50": round(float(np.percentile(v, 50)), 3),
                                    "p99": round(float(np.percentile(v, 99)), 3)} for k, v in times.items()}
            print(phase, out["ms"][phase], flush=True)
        atomic_write_json(args.out, out)
    finally:
        s.close()


if __name__ == "__main__":
    main()
