"""A learning-to-rank comparison row: LightGBM LambdaMART over the same pair inputs as the fusion model plus
the fusion model's own score, beside the fusion model (issue 12), on an experiment's index.

The same LambdaMART as the served `rerank-lambdamart` variant (`rerank/lambdamart.py`), but trained on
each train-period duplicate's recorded candidates (its hybrid top 100, its group members and
a few random tickets, as mined for the reranker), labelled by group membership; early stopping on the
validation lists' NDCG@10; scored on the test lists. The fusion model's score on the training queries is
in-sample (it was trained on them), which flatters that feature during LambdaMART's training; validation
and test are out of sample for both.

    pip install lightgbm
    python scripts/lambdamart.py --index runs/hadoop/index --out docs/lambdamart_hadoop.json
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from experiment_args import experiment_index_parser, mined_index

from ticketsearch.atomic import atomic_write_json
from ticketsearch.index_dir import IndexDir
from ticketsearch.pipeline.training import first_stage_ranks, list_pairs
from ticketsearch.rerank.lambdamart import LambdaMART, ltr_inputs
from ticketsearch.rerank.persist import load_reranker
from ticketsearch.rerank.train import RankList, rerank_scores, reranked_ranks
from ticketsearch.retrieval.evaluation import metrics_from_ranks, paired_bootstrap


def features(data: Any, lists: list[RankList], fusion: list[np.ndarray], with_fusion: bool,
             ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each list's inputs (pair inputs, and the fusion logit through the served variant's `ltr_inputs`) and
    labels."""
    return [(ltr_inputs(list_pairs(data, r), f) if with_fusion else list_pairs(data, r), r.hits)
            for r, f in zip(lists, fusion)]


def main() -> None:
    ap = experiment_index_parser(__doc__)
    ap.add_argument("--variant", default="rerank-cross+pair")
    args = ap.parse_args()
    d = IndexDir(args.index)
    t0 = time.perf_counter()
    with mined_index(args) as mi:
        mined, data, ev = mi.mined, mi.base, mi.inp.ev
        train = [RankList(g.query, mined.recorded[g.query],
                          ev.group[np.asarray(mined.recorded[g.query])] == ev.group[g.query], float("inf"))
                 for g in mined.groups]
        model, _ = load_reranker(d.rerankers_path / args.variant)
        fusion = {name: rerank_scores(model, data, lists)
                  for name, lists in (("train", train), ("valid", mined.valid), ("test", mined.test))}
    lists = {"train": train, "valid": mined.valid, "test": mined.test}
    out: dict[str, Any] = {"index": str(args.index), "variant": args.variant, "rows": {}}
    ranks = {"hybrid": {p: first_stage_ranks(lists[p]) for p in ("valid", "test")},
             args.variant: {p: reranked_ranks(lists[p], fusion[p]) for p in ("valid", "test")}}
    for name, with_fusion in (("lambdamart (pair inputs + fusion score)", True), ("lambdamart (pair inputs)", False)):
        x = {p: features(data, lists[p], fusion[p], with_fusion) for p in lists}
        ltr = LambdaMART.fit(x["train"], x["valid"])
        ranks[name] = {p: reranked_ranks(lists[p], [ltr.predict(xi) for xi, _ in x[p]]) for p in ("valid", "test")}
        out["rows"][name] = {"best_iteration": ltr.best_iteration}
    for name, rr in ranks.items():
        out["rows"].setdefault(name, {}).update({p: metrics_from_ranks(rr[p]) for p in ("valid", "test")})
        out["rows"][name]["vs " + args.variant] = {
            p: {m: paired_bootstrap(ranks[args.variant][p], rr[p], m) for m in ("MRR", "RR@10")}
            for p in ("valid", "test")}
        v, t = out["rows"][name]["valid"], out["rows"][name]["test"]
        print(f"{name:42s} valid RR@10 {v['RR@10']:.3f} MRR {v['MRR']:.3f} | test RR@10 {t['RR@10']:.3f} "
              f"MRR {t['MRR']:.3f}", flush=True)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(args.out, out)


if __name__ == "__main__":
    main()
