"""Validation folds over time (issue 29 item 5): does pooling earlier periods with the validation period order the
rerankers as the test period does? Reads the JSON of `scripts/rerank_trials.py --experiment --validation-folds N`.

For every system (the first stage, each variant, the general model): validation MRR on the validation period
alone, on each fold, and pooled; test RR@10 / MRR. Then, for validation alone and pooled, Kendall's tau between
the validation order and the test order of the systems, and the test MRR of what each would install.

    python scripts/fold_agreement.py runs/folds_hive.json --out docs/folds_hive.json
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Any

from ticketsearch.atomic import atomic_write_json


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-a of two scorings of the same systems (ties count as neither agreeing nor not)."""
    pairs = list(itertools.combinations(range(len(a)), 2))
    s = sum((a[i] - a[j]) * (b[i] - b[j]) > 0 for i, j in pairs) - sum((a[i] - a[j]) * (b[i] - b[j]) < 0
                                                                       for i, j in pairs)
    return s / len(pairs) if pairs else 0.0


def pooled(rows: list[dict[str, Any]], metric: str) -> float:
    q = sum(r["queries"] for r in rows)
    return sum(r[metric] * r["queries"] for r in rows) / q if q else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("trials", type=Path, help="rerank_trials.py's JSON (with --experiment --validation-folds)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    r = json.loads(args.trials.read_text())["experiment"]
    valid = {"first_stage": r["first_stage"]["valid"], **r["valid"]}
    test = {"first_stage": r["first_stage"]["test"], **r["test"]}
    folds = r.get("folds", [])
    # every system a fold scored too (the first stage, the installable variants, the general model); "rerank"
    # is only the installed one's row under another name
    systems = [s for s in valid if s != "rerank" and all(s in f["methods"] for f in folds)]
    table = {}
    for s in systems:
        rows = [valid[s], *(f["methods"][s] for f in folds)]
        table[s] = {"valid": valid[s]["MRR"], "folds": [f["methods"][s]["MRR"] for f in folds],
                    "pooled": pooled(rows, "MRR"), "pooled_rr10": pooled(rows, "RR@10"),
                    "pooled_queries": sum(x["queries"] for x in rows),
                    "test_rr10": test[s]["RR@10"], "test_mrr": test[s]["MRR"]}
        t = table[s]
        print(f"{s:24s} valid {t['valid']:.3f} | folds {' '.join(f'{x:.3f}' for x in t['folds'])} | pooled "
              f"{t['pooled']:.3f} over {t['pooled_queries']} | test RR@10 {t['test_rr10']:.3f} MRR {t['test_mrr']:.3f}")
    test_mrr = [table[s]["test_mrr"] for s in systems]
    out: dict[str, Any] = {"trials": str(args.trials), "systems": table, "agreement": {}}
    for key, label in (("valid", "validation alone"), ("pooled", f"pooled with {len(folds)} folds")):
        scores = [table[s][key] for s in systems]
        chosen = max(systems, key=lambda s: table[s][key])
        tau = kendall_tau(scores, test_mrr)
        out["agreement"][key] = {"kendall_tau_with_test": tau, "best_on_it": chosen,
                                 "its_test_mrr": table[chosen]["test_mrr"]}
        print(f"{label}: Kendall tau with the test order {tau:+.2f}; best on it {chosen} (test MRR "
              f"{table[chosen]['test_mrr']:.3f})")
    out["decisions"] = {k: r[k]["reason"] for k in ("decision_without_folds", "decision") if k in r}
    if args.out:
        atomic_write_json(args.out, out)


if __name__ == "__main__":
    main()
