"""A young project's general model: the general weights refit on its first links, pulled toward where they were.

The cold-start case of issue 29 item 5: a team with few links on a product the general model never saw. Today
it gets the general model as it is (trained on other projects) or a model of its own few links; neither beat
hadoop's first stage with a hive-trained general model. Here the general model's logistic regression is refit
on the project's first N train duplicates with its penalty centred on the general weights instead of zero
(`l2 * |w - w_general|^2`): few links move it little, many move it to the project's own fit. Every row is scored
on the same validation and test lists of the project's own first stage.

    python scripts/general_prior.py --general runs/general_hive --index runs/hadoop_frozen/index \
        --first 25 50 100 --out docs/general_prior_hadoop.json
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from experiment_args import experiment_index_parser
from general_reranker import mined_inputs

from ticketsearch.atomic import atomic_write_json
from ticketsearch.pipeline.general import GeneralInputs, list_scores, train_pairs
from ticketsearch.pipeline.training import first_stage_ranks
from ticketsearch.rerank.general import LinearPairModel, load_general
from ticketsearch.rerank.train import fit_logistic, reranked_ranks
from ticketsearch.retrieval.evaluation import metrics_from_ranks, paired_bootstrap

STRENGTHS = (1e-3, 1e-2, 1e-1, 1.0)


def scored(model: LinearPairModel, g: GeneralInputs) -> dict[str, np.ndarray]:
    return {part: reranked_ranks(lists, list_scores(model, g, lists))
            for part, lists in (("valid", g.mined.valid), ("test", g.mined.test))}


def main() -> None:
    ap = experiment_index_parser(__doc__)
    ap.add_argument("--general", type=Path, required=True, help="a general model not trained on this index")
    ap.add_argument("--first", type=int, nargs="+", default=[25, 50, 100], help="the project's first N train links")
    args = ap.parse_args()
    t0 = time.perf_counter()
    prior, meta = load_general(args.general)
    out: dict[str, Any] = {"index": str(args.index), "general": str(args.general),
                           "general_trained_on": meta.get("trained_on"), "by_links": {}}
    g_all = mined_inputs(args.index, args.train_before, args.test_since)
    first = {part: first_stage_ranks(lists) for part, lists in (("valid", g_all.mined.valid),
                                                                 ("test", g_all.mined.test))}
    for n in args.first:
        g = mined_inputs(args.index, args.train_before, args.test_since, first_queries=n)
        x, y = train_pairs(g)
        ranks: dict[str, dict[str, np.ndarray]] = {"first stage": first, "general": scored(prior, g)}
        w, b = fit_logistic(x, y)
        ranks["own (l2 1e-3 toward zero)"] = scored(LinearPairModel(w, b), g)
        for lam in STRENGTHS:
            w, b = fit_logistic(x, y, lam, prior=(prior.weights, prior.bias))
            ranks[f"general refit (l2 {lam:g} toward it)"] = scored(LinearPairModel(w, b), g)
        chosen = max(ranks, key=lambda k: float(np.mean(1.0 / ranks[k]["valid"])))
        rows: dict[str, dict[str, Any]] = {name: {part: metrics_from_ranks(r[part]) for part in r}
                                           for name, r in ranks.items()}
        for name, r in ranks.items():
            rows[name]["test_vs_first_stage"] = {m: paired_bootstrap(first["test"], r["test"], m)
                                                 for m in ("MRR", "RR@10")}
        out["by_links"][str(n)] = {"train_queries": len(g.mined.groups), "pairs": len(y), "rows": rows,
                                   "chosen_on_validation": chosen}
        print(f"first {n} links ({len(g.mined.groups)} queries, {len(y)} pairs); chosen on validation: {chosen}")
        for name, r in rows.items():
            d = r["test_vs_first_stage"]["MRR"]
            print(f"  {name:36s} valid {r['valid']['RR@10']:.3f} / {r['valid']['MRR']:.3f}   test "
                  f"{r['test']['RR@10']:.3f} / {r['test']['MRR']:.3f}  (MRR {d['diff']:+.3f}, {d['lo']:+.3f}.."
                  f"{d['hi']:+.3f})", flush=True)
        out["seconds"] = round(time.perf_counter() - t0, 1)
        atomic_write_json(args.out, out)


if __name__ == "__main__":
    main()
