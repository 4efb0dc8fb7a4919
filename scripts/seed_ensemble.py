"""Does averaging reranker runs help? Seeds of one variant, two variants, and a team's model with the general one.

Mines an experiment index's lists once (as `ticketsearch experiment` does), trains each variant with several
seeds, and scores every combination on the same validation and test queries: each seed alone, the mean of
the seeds' logits, the two variants' seeds together, the first variant's logistic start alone (no epochs: the
pair inputs and the cosine prior, without the deep part), and each of those with the general model (scores
standardised within each list first, since the models' logits are on different scales). Paired bootstrap
against seed 0 of the first variant (what an experiment trains today).

    python scripts/seed_ensemble.py --index runs/hive/index --out runs/ensemble_hive.json --seeds 3
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from experiment_args import experiment_index_parser, mined_index

from ticketsearch.atomic import atomic_write_json
from ticketsearch.pipeline.general import general_inputs, list_scores
from ticketsearch.pipeline.variants import built_columns, train_named
from ticketsearch.rerank.general import SHIPPED, load_general
from ticketsearch.rerank.train import RankList, TrainConfig, rerank_scores, reranked_ranks
from ticketsearch.retrieval.evaluation import metrics_from_ranks, paired_bootstrap

Scores = list[np.ndarray]


def standardised(scores: Scores) -> Scores:
    return [(s - s.mean()) / (s.std() + 1e-9) for s in scores]


def mean_of(parts: Sequence[Scores]) -> Scores:
    return [np.mean(np.stack(x), axis=0) for x in zip(*parts)]


def row(lists: Sequence[RankList], scores: Scores) -> tuple[dict[str, Any], np.ndarray]:
    ranks = reranked_ranks(lists, scores)
    return metrics_from_ranks(ranks), ranks


def main() -> None:
    ap = experiment_index_parser(__doc__)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--variants", nargs="+", default=["rerank-cross+pair", "rerank-cross+pair+code"])
    ap.add_argument("--general", type=Path, default=None, help="the general model (default: the shipped one)")
    ap.add_argument("--budget", type=float, default=900.0)
    ap.add_argument("--same-init", action="store_true",
                    help="every seed starts from seed 0's weights (the seed orders the data only), and each "
                    "variant's seeds are also averaged weight by weight into one model (a 'soup')")
    args = ap.parse_args()
    out: dict[str, Any] = {"index": str(args.index), "seeds": args.seeds, "variants": args.variants, "rows": {}}
    t0 = time.perf_counter()
    built = built_columns(args.variants)
    with mined_index(args, code=built.code, text=built.text) as mi, tempfile.TemporaryDirectory() as tmp:
        store, inp, encoder, mined, base, fs = mi.store, mi.inp, mi.encoder, mi.mined, mi.base, mi.fs
        print(f"mined {len(mined.groups)} / {len(mined.valid)} / {len(mined.test)} in {time.perf_counter() - t0:.0f} s",
              flush=True)
        sets = {"valid": mined.valid, "test": mined.test}
        comp: dict[str, dict[str, Scores]] = {}  # component name -> set -> scores
        for name in args.variants:
            states = []
            for seed in range(args.seeds):
                tcfg = TrainConfig(time_budget_s=args.budget, seed=seed, init_seed=0 if args.same_init else None)
                vr, data, perm = train_named(name, base, built, fs, store.schema.to_dict(), mined, Path(tmp), encoder,
                                             tcfg, False, lambda s: None)
                comp[f"{name}#{seed}"] = {k: vr.scores(data, lists, perm) for k, lists in sets.items()}
                if args.same_init:  # the fusion variants' weights, for the soup (a linear model has no epochs)
                    states.append({k: v.clone() for k, v in vr.model.state_dict().items()})
                print(f"  {name} seed {seed}: {vr.seconds:.0f} s, valid MRR {vr.valid_mrr:.3f}", flush=True)
            # the first fusion variant's logistic start alone: the pair inputs and the cosine, no deep part
            if name == args.variants[0] and name != "rerank-linear":
                vr0, data0, perm0 = train_named(name, base, built, fs, store.schema.to_dict(), mined, Path(tmp),
                                                encoder, TrainConfig(epochs=0), False, lambda s: None)
                comp[f"{name} epoch 0"] = {k: vr0.scores(data0, lists, perm0) for k, lists in sets.items()}
            if args.same_init:
                soup = copy.deepcopy(vr.model)
                soup.load_state_dict({k: sum(st[k] for st in states) / len(states) if states[0][k].is_floating_point()
                                      else states[0][k] for k in states[0]})
                soup.eval()
                comp[f"{name} soup"] = {k: rerank_scores(soup, data, lists, perm) for k, lists in sets.items()}
        model, meta = load_general(args.general or SHIPPED)
        g = general_inputs(store, inp, encoder, args.index, mined, False, query_kinds=bool(meta.get("query_kinds")),
                           text=bool(meta.get("text")))
        comp["general"] = {k: list_scores(model, g, lists) for k, lists in sets.items()}
        comp["first stage"] = {k: [-np.arange(len(r.candidates), dtype=float) for r in lists]
                               for k, lists in sets.items()}

        combos: dict[str, list[str]] = {c: [c] for c in comp}
        for name in args.variants:
            combos[f"{name} x{args.seeds}"] = [f"{name}#{s}" for s in range(args.seeds)]
        own_all = [f"{n}#{s}" for n in args.variants for s in range(args.seeds)]
        if len(args.variants) > 1:
            combos[f"all own x{len(own_all)}"] = own_all
            combos["own seed 0 of each"] = [f"{n}#0" for n in args.variants]
        for key in [k for k in combos if k not in ("general", "first stage") and "#" not in k and "epoch" not in k]:
            combos[f"{key} + general"] = [*combos[key], "general"]
        ranks: dict[str, dict[str, np.ndarray]] = {}
        for cname, parts in combos.items():
            out["rows"][cname] = {}
            ranks[cname] = {}
            for k in sets:
                scored = [standardised(comp[p][k]) for p in parts] if len(parts) > 1 else [comp[parts[0]][k]]
                m, r = row(sets[k], mean_of(scored))
                out["rows"][cname][k] = m
                ranks[cname][k] = r
        ref = f"{args.variants[0]}#0"
        for cname in combos:
            for k in sets:
                out["rows"][cname][k]["vs_" + ref] = {
                    met: paired_bootstrap(ranks[ref][k], ranks[cname][k], met) for met in ("MRR", "RR@10")}
        out["seconds"] = round(time.perf_counter() - t0, 1)
        atomic_write_json(args.out, out)
    for cname, r in out["rows"].items():
        v, t = r["valid"], r["test"]
        d = t["vs_" + ref]["MRR"]
        print(f"{cname:45s} valid {v['RR@10']:.3f} / {v['MRR']:.3f}   test {t['RR@10']:.3f} / {t['MRR']:.3f}  "
              f"(MRR {d['diff']:+.3f}, {d['lo']:+.3f}..{d['hi']:+.3f})")
    print(json.dumps({"seconds": out["seconds"]}))


if __name__ == "__main__":
    main()
