"""Short free-text queries: the reranker trained on whole tickets only, against one trained on whole tickets
and on short queries cut from them, each scored on every query kind, in one run on one experiment index.

Runs `ticketsearch experiment`'s reranker step (mining, the variant's training and early stopping, the
validation and test lists) on an index the experiment built (its fusion chosen), without re-encoding and
without touching the installed model. Prints and writes per kind: first stage, each training mix, and the
paired differences.

    python scripts/short_queries.py --index runs/hadoop/index --out docs/short_queries_hadoop.json \\
        --query full,title,words:8 --mix full --mix full,title --mix full,title,words:8
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from experiment_args import experiment_index_parser

from ticketsearch.atomic import atomic_write_json
from ticketsearch.index_data.records import parse_datetime
from ticketsearch.index_dir import IndexDir
from ticketsearch.pipeline.parts import index_settings, load_manifest, open_store
from ticketsearch.pipeline.training import run_rerankers
from ticketsearch.rerank.train import TrainConfig
from ticketsearch.retrieval.encoder import Encoder
from ticketsearch.retrieval.eval_index import load_eval_inputs
from ticketsearch.retrieval.query_kinds import parse_kinds
from ticketsearch.settings import get_settings


def main() -> None:
    ap = experiment_index_parser(__doc__)
    ap.add_argument("--query", action="append", default=None, help="evaluated kinds (full,title,words:N)")
    ap.add_argument("--mix", action="append", default=None, help="a training mix of kinds; repeat for each")
    ap.add_argument("--variant", default="rerank-cross+pair")
    ap.add_argument("--budget", type=float, default=900.0)
    ap.add_argument("--general", type=Path, default=None,
                    help="the general model to compare (default: the shipped one; give one not trained on this data)")
    ap.add_argument("--first-train-queries", type=int, default=None,
                    help="train on the first N train duplicates only (a project with few links)")
    args = ap.parse_args()
    kinds = parse_kinds(args.query)
    mixes = [parse_kinds([m], "--mix") for m in (args.mix or ["full", "full,title"])]
    d = IndexDir(args.index)
    manifest = load_manifest(d)
    settings = index_settings(manifest, get_settings())
    out: dict[str, Any] = {"index": str(args.index), "variant": args.variant,
                           "mixes": {}}
    with open_store(d, read_only=False) as store:
        encoder = Encoder(manifest.model, settings=settings)
        inp = load_eval_inputs(args.index, store, encoder)
        for mix in mixes:
            name = "+".join(k.label for k in mix)
            t0 = time.perf_counter()
            rr = run_rerankers(store, inp, encoder, args.index, manifest.fusion, settings.fusion_depth,
                               parse_datetime(args.train_before), parse_datetime(args.test_since),
                               args.index.parent / "short_query_rerankers" / name, variants=[args.variant],
                               tcfg=TrainConfig(time_budget_s=args.budget), progress=False, log=lambda _: None,
                               train_kinds=mix, eval_kinds=kinds, install=False,
                               first_train_queries=args.first_train_queries,
                               general_dir=args.general)
            out["mixes"][name] = {"kinds": rr["kinds"], "decision": rr["decision"], "test": rr["test"],
                                  "seconds": round(time.perf_counter() - t0, 1),
                                  "history": rr["variants"][args.variant]["history"]}
            for label, rows in rr["kinds"].items():
                f, m = rows["first_stage"]["test"], rows["test"][args.variant]
                print(f"train {name:24s} | {label:8s} test n={m['queries']}: first stage RR@10 {f['RR@10']:.3f} "
                      f"MRR {f['MRR']:.3f} | reranked RR@10 {m['RR@10']:.3f} MRR {m['MRR']:.3f}", flush=True)
            if "rerank-general" in rr["test"]:
                g = rr["test"]["rerank-general"]
                print(f"   general model on the full test lists: RR@10 {g['RR@10']:.3f} MRR {g['MRR']:.3f}; "
                      f"decision: {rr['decision']['reason']}", flush=True)
            atomic_write_json(args.out, out)


if __name__ == "__main__":
    main()
