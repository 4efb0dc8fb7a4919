"""Ablations of first-stage retrieval on an experiment's index: which signals raise RR@10 and RR@100?

    python scripts/ablate_first_stage.py --index runs/hadoop/index [--train-before 2015-01-01] [--test-since 2016-01-01]

Signals: dense (title + body), BM25, dense over the title alone, and a recency prior (newer candidates
first). Each fusion's weights are chosen on the validation period; test figures are printed beside them.
"""

from __future__ import annotations

import argparse
import itertools
import json
from datetime import datetime
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--train-before", default="2015-01-01")
    ap.add_argument("--test-since", default="2016-01-01")
    ap.add_argument("--depth", type=int, default=200)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from ticketsearch.index_data.store import TicketStore
    from ticketsearch.index_dir import IndexDir
    from ticketsearch.pipeline.parts import index_settings
    from ticketsearch.retrieval.encoder import Encoder
    from ticketsearch.retrieval.eval_index import fusion_fn, load_eval_inputs, scorers
    from ticketsearch.retrieval.evaluation import build_pools, evaluate, markdown_table
    from ticketsearch.retrieval.manifest import Manifest
    from ticketsearch.settings import get_settings

    manifest = Manifest.load(args.index)
    settings = index_settings(manifest, get_settings())
    with TicketStore(IndexDir(args.index).store_path, read_only=True) as store:
        encoder = Encoder(manifest.model, settings=settings)
        inp = load_eval_inputs(args.index, store, encoder)
    ev = inp.ev
    sc = scorers(inp)
    tb, ts = datetime.fromisoformat(args.train_before), datetime.fromisoformat(args.test_since)
    val = build_pools(ev, ev.queries(tb, ts), sc)
    test = build_pools(ev, ev.queries(ts), sc)

    grids = {
        "dense+bm25": {"bm25": [0.5, 0.75, 1.0, 1.5]},
        "dense+bm25+title": {"bm25": [0.5, 0.75, 1.0], "title": [0.25, 0.5, 0.75, 1.0]},
        "dense+bm25+recency": {"bm25": [0.5, 0.75, 1.0], "recency": [0.1, 0.2, 0.3, 0.5]},
        "dense+bm25+title+recency": {"bm25": [0.5, 0.75, 1.0], "title": [0.25, 0.5, 0.75], "recency": [0.1, 0.2, 0.3]},
    }
    rows_val: dict[str, dict] = {}
    rows_test: dict[str, dict] = {}
    chosen: dict[str, dict] = {}
    for single in ("bm25", "dense", "title"):
        rows_val[single] = evaluate(val, lambda p, s=single: p.scores[s])[0]
        rows_test[single] = evaluate(test, lambda p, s=single: p.scores[s])[0]
    for name, grid in grids.items():
        best = None
        for combo in itertools.product(*grid.values(), [10.0, 30.0, 60.0]):
            fusion = {"method": "rrf", "k": combo[-1], "weights": {"dense": 1.0, **dict(zip(grid, combo[:-1]))}}
            m = evaluate(val, fusion_fn(fusion, args.depth))[0]
            obj = (m["RR@10"] + m["RR@100"], m["MRR"])
            if best is None or obj > best[0]:
                best = (obj, fusion, m)
        _, fusion, m = best
        chosen[name] = fusion
        rows_val[name] = m
        rows_test[name] = evaluate(test, fusion_fn(fusion, args.depth))[0]
        print(name, json.dumps(fusion))
    print(markdown_table(rows_val, f"validation ({len(val)} queries)"))
    print(markdown_table(rows_test, f"test ({len(test)} queries)"))
    if args.out:
        args.out.write_text(json.dumps({"chosen": chosen, "validation": rows_val, "test": rows_test}, indent=2))


if __name__ == "__main__":
    main()
