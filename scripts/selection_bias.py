"""How much does early stopping flatter a variant's validation MRR, and does it change which one is chosen?

Each variant is early-stopped on the validation period and then judged by its best epoch's MRR on the same
queries: a figure chosen as the largest of several is biased upwards, more for a variant with more epochs to
choose from. This script trains the experiment's variants once (seed 0) on an experiment index and, from each
epoch's validation ranks, computes a split-half figure: over many random halves of the validation queries, the
epoch is chosen on one half and scored on the other (both ways). The first stage and the general model have
no epochs and are scored as they are.

    python scripts/selection_bias.py --index runs/hadoop/index --out runs/selection_hadoop.json
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from experiment_args import experiment_index_parser, mined_index

from ticketsearch.atomic import atomic_write_json
from ticketsearch.pipeline.variants import built_columns, first_stage_ranks, general_ranker, train_named
from ticketsearch.rerank.train import TrainConfig
from ticketsearch.retrieval.evaluation import metrics_from_ranks


def split_half(epoch_ranks: list[np.ndarray], repeats: int = 500, seed: int = 0) -> float:
    """Mean MRR on one half of the queries at the epoch the other half chooses (the first best, as `train`)."""
    rr = np.stack([1.0 / r for r in epoch_ranks])  # [epochs, queries]
    n = rr.shape[1]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(repeats):
        a = np.zeros(n, bool)
        a[rng.permutation(n)[: n // 2]] = True
        for pick, score in ((a, ~a), (~a, a)):
            e = int(np.argmax(rr[:, pick].mean(axis=1)))
            out.append(float(rr[e, score].mean()))
    return float(np.mean(out))


def chosen(rows: dict[str, Any], key: str) -> str:
    """The system with the best figure under `key` (what an install decision on that figure would take)."""
    return max(rows, key=lambda n: float(rows[n][key]))


def main() -> None:
    ap = experiment_index_parser(__doc__)
    ap.add_argument("--variants", nargs="+",
                    default=["rerank-concat", "rerank-cross", "rerank-cross+pair", "rerank-cross+pair+code"])
    args = ap.parse_args()
    rows: dict[str, Any] = {}
    t0 = time.perf_counter()
    built = built_columns(args.variants)
    with mined_index(args, code=built.code, text=built.text) as mi, tempfile.TemporaryDirectory() as tmp:
        store, inp, encoder, mined, base, fs = mi.store, mi.inp, mi.encoder, mi.mined, mi.base, mi.fs
        for name in args.variants:
            vr, _, _ = train_named(name, base, built, fs, store.schema.to_dict(), mined, Path(tmp), encoder,
                                   TrainConfig(time_budget_s=900), False, lambda s: None)
            best = int(np.argmax([np.mean(1 / r) for r in vr.epoch_ranks]))
            rows[name] = {"epochs": len(vr.epoch_ranks), "best_epoch": best,
                          "valid": vr.valid_mrr, "valid_split_half": split_half(vr.epoch_ranks),
                          "test": metrics_from_ranks(vr.test_ranks)["MRR"]}
            print(name, rows[name], flush=True)
        rank_general = general_ranker(store, inp, encoder, args.index, mined)
        for name, valid, test in (("first stage", first_stage_ranks(mined.valid), first_stage_ranks(mined.test)),
                                  *((("general", rank_general(mined.valid), rank_general(mined.test)),)
                                    if rank_general else ())):
            mrr = metrics_from_ranks(valid)["MRR"]
            rows[name] = {"epochs": 0, "valid": mrr, "valid_split_half": mrr, "test": metrics_from_ranks(test)["MRR"]}
    out = {"index": str(args.index), "queries": {"valid": len(mined.valid), "test": len(mined.test)}, "rows": rows,
           "chosen": {k: chosen(rows, k) for k in ("valid", "valid_split_half")},
           "seconds": round(time.perf_counter() - t0, 1)}
    atomic_write_json(args.out, out)
    for name, r in rows.items():
        print(f"{name:28s} epochs {r['epochs']:2d}  valid {r['valid']:.3f}  split-half {r['valid_split_half']:.3f}  "
              f"(bias {r['valid'] - r['valid_split_half']:+.3f})  test {r['test']:.3f}")
    print("chosen:", out["chosen"])


if __name__ == "__main__":
    main()
