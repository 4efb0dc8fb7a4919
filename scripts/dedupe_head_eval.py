"""Backlog dedupe with a stacked head: can a score fitted on the backlog meet a target precision with more recall
than the reranker probability alone?

    OMP_NUM_THREADS=1 python scripts/dedupe_head_eval.py --index /tmp/hd/idx \
        --truth ../shared/data/apache_hadoop.jsonl.gz --since 2016-01-01 --fit-since 2015-01-01 \
        --fit-until 2016-01-01 --out docs/dedupe_head_hadoop.json

The index is the one of scripts/dedupe_eval.py: the file with the `duplicate_of` of every ticket created since
--since removed, its reranker trained before the fit period and validated on it. Every ticket of the fit period
and every ticket since --since is compared with the earlier ones once (its reranked top --k, as
`pipeline.dedupe.compare` does), and each hit's query-time signals are kept in a cache (--cache; a rerun with the
same settings reads it back instead of searching again).

Pair features, all known when the ticket is filed (never status, resolution, links or the other post-hoc fields
of the data README): the reranker's probability and logit, the hit's rank, its probability's gap to the list's
best and to the next hit, the list's best probability, the first-stage scores the hit carries (fused, dense,
title, BM25 over the list's best BM25), log days between the two tickets, title-word Jaccard, same project,
same priority, component and version Jaccard, and a prior: the size of the candidate's known duplicate group
counting only the links among tickets created before the period starts (what an index holds for a backlog it has
not deduped yet: the fit period gets the links from before it, the test period those from before it).

Heads, fitted on the fit period's pairs with the index's own links as labels (a pair is a duplicate when both
tickets are in one known group): logistic regression on standardised features (with and without the group
prior), and a small LightGBM model when lightgbm is installed. Each head's threshold for a target precision is
the lowest score whose precision on the fit period's out-of-fold scores (5 folds grouped by query) reaches the
target, the same rule `pipeline.dedupe.calibrated_threshold` uses for the probability; the head applied to the
test period is the one fitted on all of the fit period. Scored as scripts/dedupe_eval.py scores (pairwise
precision and recall against the file's true groups, duplicates clustered with an earlier member), plus the best
precision each score reaches on the test period at recall 0.05, 0.1, 0.2 and 0.3 (what any threshold could give).
Each scored cut also gives the 95% Wilson interval of its precision and how many distinct true groups its right
links come from and how many come from the largest one (a clone group of n tickets alone makes n(n-1)/2 right
links); the PR points are given again without the test-period tickets of the group with the most true pairs.

One more rule, needing no labels on the test period: Platt-scale the reranker's logit on the fit period's pairs
(every ticket a query, so the backlog's base rate), and take on the test period the lowest threshold whose kept
pairs' mean calibrated probability (their expected precision) reaches the target ("expected_precision_rule",
for targets 0.5 to 0.95, so that its calibration can be judged).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import os
import platform
import re
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from dedupe_eval import score, true_groups  # noqa: E402

FEATURES = ["probability", "logit", "rank_log", "gap_best", "gap_next", "list_best", "fused", "dense", "title_sim",
            "bm25_rel", "days_log", "title_jaccard", "same_project", "same_priority", "components_jaccard",
            "versions_jaccard", "group_prior"]
NO_PRIOR = [f for f in FEATURES if f != "group_prior"]
RECALLS = (0.05, 0.1, 0.2, 0.3)
WORD = re.compile(r"[a-z0-9_]{2,}")


# ---- collection ---------------------------------------------------------------------------------------------
def collect(idx: Any, rows: list[tuple[str, datetime]], k: int, desc: str) -> list[dict[str, Any]]:
    """Each ticket's reranked top `k` among the earlier tickets, with the hit's query-time signals."""
    out = []
    for tid, created in tqdm(rows, desc=desc, unit=" tickets", mininterval=2.0):
        res = idx.search(like=tid, before=created, k=k)
        for rank, h in enumerate(res.hits, start=1):
            if h.probability is None:
                continue
            out.append({"a": h.id, "b": tid, "rank": rank, "probability": h.probability, "logit": h.rerank_score,
                        "fused": h.retrieval_score, "dense": h.scores.get("dense"), "title": h.scores.get("title"),
                        "bm25": h.scores.get("bm25")})
    return out


def cached_pairs(args: argparse.Namespace, periods: dict[str, list[tuple[str, datetime]]],
                 idx: Any) -> tuple[dict[str, list[dict[str, Any]]], dict[str, float]]:
    reranker = idx.pipeline.reranker
    key = {"index": str(args.index.resolve()), "k": args.k, "reranker": getattr(reranker, "checksum", None),
           "periods": {p: [len(r), r[0][0] if r else None, r[-1][0] if r else None] for p, r in periods.items()}}
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    path = args.cache / f"pairs_{digest}.json.gz"
    if path.is_file():
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            data = json.load(fh)
        if data["key"] == key:
            print(f"read the pairs back from {path}", file=sys.stderr)
            return data["pairs"], data["seconds"]
    pairs, seconds = {}, {}
    for name, rows in periods.items():
        t0 = time.perf_counter()
        pairs[name] = collect(idx, rows, args.k, name)
        seconds[name] = round(time.perf_counter() - t0, 1)
    args.cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as fh:
        json.dump({"key": key, "pairs": pairs, "seconds": seconds}, fh)
    tmp.replace(path)
    return pairs, seconds


# ---- features -----------------------------------------------------------------------------------------------
def jaccard(x: set[str], y: set[str]) -> float:
    return len(x & y) / len(x | y) if x or y else 0.0


def group_sizes_before(store: Any, until: datetime) -> dict[str, int]:
    """ticket id -> the size of its known duplicate group counting only tickets (and so links) created before
    `until` (1 for a ticket in no group, or created since)."""
    from ticketsearch.index_data.links import components

    rows = store.duplicate_links(before=until)
    root = components((r[0] for r in rows), ((t, d) for t, d in rows if d is not None))
    size: dict[str, int] = {}
    for r in root.values():
        size[r] = size.get(r, 0) + 1
    return {t: size[r] for t, r in root.items()}


def features(pairs: list[dict[str, Any]], info: dict[str, dict[str, Any]], prior: dict[str, int]) -> np.ndarray:
    """One row of FEATURES per pair (pairs grouped by query, in rank order, as collected)."""
    best: dict[str, float] = {}
    bm_best: dict[str, float] = {}
    for p in pairs:
        best[p["b"]] = max(best.get(p["b"], 0.0), p["probability"])
        bm_best[p["b"]] = max(bm_best.get(p["b"], 0.0), p["bm25"] or 0.0)
    nxt = {}
    for p, q in zip(pairs, pairs[1:] + [None]):
        nxt[(p["a"], p["b"])] = q["probability"] if q is not None and q["b"] == p["b"] else 0.0
    x = np.zeros((len(pairs), len(FEATURES)), np.float64)
    for i, p in enumerate(pairs):
        a, b = info[p["a"]], info[p["b"]]
        days = abs((b["created"] - a["created"]).total_seconds()) / 86400.0
        x[i] = [p["probability"], p["logit"] or 0.0, math.log(p["rank"]), best[p["b"]] - p["probability"],
                p["probability"] - nxt[(p["a"], p["b"])], best[p["b"]], p["fused"] or 0.0, p["dense"] or 0.0,
                p["title"] or 0.0, (p["bm25"] or 0.0) / bm_best[p["b"]] if bm_best[p["b"]] > 0 else 0.0,
                math.log1p(days), jaccard(a["words"], b["words"]), float(a["project"] == b["project"]),
                float(a["priority"] == b["priority"]), jaccard(a["components"], b["components"]),
                jaccard(a["versions"], b["versions"]), math.log(prior.get(p["a"], 1))]
    return x


def ticket_info(store: Any) -> dict[str, dict[str, Any]]:
    values = store.values_by_row()
    out = {}
    for r in store.eval_rows():
        v = values[r["row_id"]]
        out[r["id"]] = {"words": set(WORD.findall(r["title"].lower())), "created": r["created"],
                        "project": v.get("project"), "priority": v.get("priority"),
                        "components": set(v.get("components") or []), "versions": set(v.get("versions") or [])}
    return out


# ---- heads --------------------------------------------------------------------------------------------------
def make_head(kind: str) -> Any:
    if kind == "lgbm":
        import lightgbm as lgb

        return lgb.LGBMClassifier(n_estimators=200, learning_rate=0.03, num_leaves=7, min_child_samples=40,
                                  subsample=0.8, subsample_freq=1, colsample_bytree=0.8, reg_lambda=1.0,
                                  n_jobs=1, verbose=-1, random_state=0)
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))


def out_of_fold(kind: str, x: np.ndarray, y: np.ndarray, queries: list[str], folds: int = 5) -> np.ndarray:
    from sklearn.model_selection import GroupKFold

    scores = np.zeros(len(y))
    for tr, te in GroupKFold(n_splits=folds).split(x, y, groups=queries):
        scores[te] = make_head(kind).fit(x[tr], y[tr]).predict_proba(x[te])[:, 1]
    return scores


def pr_points(scores: np.ndarray, right: np.ndarray, hit: np.ndarray, true_pairs: int) -> dict[str, Any]:
    """The best pairwise precision reachable at each recall of RECALLS (recall over `true_pairs`), and the
    recall all the pairs together reach."""
    order = np.argsort(-scores, kind="stable")
    links = np.arange(1, len(order) + 1)
    prec = np.cumsum(right[order]) / links
    rec = np.cumsum(hit[order]) / true_pairs
    # only cut between distinct scores (a threshold keeps all ties)
    cut = np.r_[scores[order][1:] != scores[order][:-1], True]
    prec, rec, links = prec[cut], rec[cut], links[cut]
    out: dict[str, Any] = {"max_recall": round(float(rec[-1]), 3)}
    for r in RECALLS:
        ok = np.flatnonzero(rec >= r)
        if len(ok):
            i = ok[np.argmax(prec[ok])]
            out[str(r)] = {"precision": round(float(prec[i]), 3), "links": int(links[i])}
        else:
            out[str(r)] = None
    return out


def wilson(right: int, n: int, z: float = 1.96) -> list[float] | None:
    if n == 0:
        return None
    p = right / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(mid - half, 3), round(mid + half, 3)]


def scored(pairs: list[dict[str, Any]], values: np.ndarray, threshold: float, group: dict[str, str],
           created: dict[str, datetime], test_ids: list[str]) -> dict[str, Any]:
    """dedupe_eval.score of the pairs cut at `threshold` of `values`, with the precision's 95% interval and the
    number of distinct true groups the right links come from."""
    with_score = [{**p, "probability": float(v)} for p, v in zip(pairs, values)]
    row = score(with_score, threshold, group, created, test_ids)
    kept = [p for p in with_score if p["probability"] >= threshold]
    right = [p for p in kept if group[p["a"]] == group[p["b"]]]
    per_group = Counter(group[p["b"]] for p in right)
    return {**row, "precision_95ci": wilson(len(right), len(kept)), "right_groups": len(per_group),
            "right_links_largest_group": max(per_group.values(), default=0)}


def expected_precision_threshold(p: np.ndarray, target: float) -> float | None:
    """The lowest threshold whose kept pairs' mean probability reaches `target` (None: none does)."""
    order = np.argsort(-p, kind="stable")
    mean = np.cumsum(p[order]) / np.arange(1, len(order) + 1)
    ok = np.flatnonzero(mean >= target)
    return None if len(ok) == 0 else float(p[order][ok.max()])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--truth", type=Path, required=True)
    ap.add_argument("--since", required=True, help="the test period starts here (its links are hidden)")
    ap.add_argument("--fit-since", required=True, help="the fit/calibration period (its links are known)")
    ap.add_argument("--fit-until", required=True)
    ap.add_argument("--precisions", default="0.8,0.9,0.95")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/dedupe_head"))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from ticketsearch.api import TicketIndex
    from ticketsearch.pipeline.dedupe import groups_of
    from ticketsearch.rerank.calibration import lowest_threshold_for_precision

    t_start = time.perf_counter()
    group, created = true_groups(args.truth)
    since, fit0, fit1 = (datetime.fromisoformat(x) for x in (args.since, args.fit_since, args.fit_until))
    targets = [float(x) for x in args.precisions.split(",")]
    with TicketIndex.open(args.index) as idx:
        store = idx.pipeline.store
        rows = store.ids_by_created()
        periods = {"fit": [(t, c) for t, c in rows if fit0 <= c < fit1],
                   "test": [(t, c) for t, c in rows if c >= since]}
        pairs, collect_s = cached_pairs(args, periods, idx)
        linked = groups_of(store)  # the index's links: the fit period's are known, the test period's hidden
        info = ticket_info(store)
        prior_fit = group_sizes_before(store, fit0)
        prior_test = group_sizes_before(store, since)
    fit, test = pairs["fit"], pairs["test"]
    x_fit = features(fit, info, prior_fit)
    x_test = features(test, info, prior_test)
    y_fit = np.array([linked[p["a"]] == linked[p["b"]] for p in fit], dtype=int)
    q_fit = [p["b"] for p in fit]
    test_ids = [t for t, _ in periods["test"]]

    # the test period's truth, vectorised for the PR curves (as dedupe_eval.score counts it)
    members: dict[str, list[str]] = {}
    for t in created:
        members.setdefault(group[t], []).append(t)
    true_pairs = {(a, b) for b in test_ids for a in members[group[b]] if created[a] < created[b]}
    right = np.array([group[p["a"]] == group[p["b"]] for p in test], dtype=int)
    hit = np.array([(p["a"], p["b"]) in true_pairs for p in test], dtype=int)

    heads: dict[str, tuple[str, list[str]]] = {"logreg": ("logreg", FEATURES),
                                               "logreg_no_prior": ("logreg", NO_PRIOR)}
    try:
        import lightgbm  # noqa: F401

        heads["lgbm"] = ("lgbm", FEATURES)
    except ImportError:
        pass
    scores_fit: dict[str, np.ndarray] = {"probability": x_fit[:, 0]}
    scores_test: dict[str, np.ndarray] = {"probability": x_test[:, 0]}
    models: dict[str, Any] = {}
    for name, (kind, cols) in heads.items():
        sel = [FEATURES.index(c) for c in cols]
        scores_fit[name] = out_of_fold(kind, x_fit[:, sel], y_fit, q_fit)
        models[name] = make_head(kind).fit(x_fit[:, sel], y_fit)
        scores_test[name] = models[name].predict_proba(x_test[:, sel])[:, 1]

    out: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch 1 thread",
        "command": "OMP_NUM_THREADS=1 python scripts/dedupe_head_eval.py " + " ".join(sys.argv[1:]),
        "index": str(args.index), "since": args.since, "fit_period": [args.fit_since, args.fit_until], "k": args.k,
        "tickets": {p: len(r) for p, r in periods.items()},
        "pairs": {"fit": len(fit), "fit_linked": int(y_fit.sum()), "test": len(test), "test_right": int(right.sum()),
                  "test_true_pairs": len(true_pairs), "test_true_pairs_in_candidates": int(hit.sum())},
        "collect_s": collect_s, "features": FEATURES,
        "heads": {"probability": "the reranker's calibrated probability alone",
                  "logreg": "logistic regression (standardised features, C=1), all features",
                  "logreg_no_prior": "logistic regression without group_prior",
                  "lgbm": "LightGBM, 200 trees of 7 leaves, learning rate 0.03, min 40 per leaf"},
        "targets": {}, "pr_test": {}, "pr_fit_out_of_fold": {},
        "notes": ["pr_fit_out_of_fold: the heads' out-of-fold scores on the fit period, the probability as it is; "
                  "recall there is over the linked pairs among the candidates",
                  "collect_s: the seconds the searches took when the cache was written (--cache)",
                  "logistic regression coefficients are per standard deviation of the feature"],
    }
    biggest = Counter(group[b] for _, b in true_pairs).most_common(1)[0]
    rest = np.array([group[p["b"]] != biggest[0] for p in test])
    out["pairs"]["test_largest_group"] = {"group": biggest[0], "true_pairs": biggest[1]}
    others = len(true_pairs) - biggest[1]
    out["pr_test_without_largest_group"] = {name: pr_points(v[rest], right[rest], hit[rest], others)
                                            for name, v in scores_test.items()}
    fit_right = y_fit  # on the fit period the truth is the index's links; recall over the linked pairs collected
    for name in scores_fit:
        out["pr_test"][name] = pr_points(scores_test[name], right, hit, len(true_pairs))
        out["pr_fit_out_of_fold"][name] = pr_points(scores_fit[name], fit_right, fit_right, int(fit_right.sum()))
    for target in targets:
        row: dict[str, Any] = {}
        for name in scores_fit:
            t, reached = lowest_threshold_for_precision(scores_fit[name], y_fit, target)
            if t is None:
                row[name] = None
                continue
            row[name] = {**scored(test, scores_test[name], t, group, created, test_ids),
                         "fit_precision": round(float(reached), 3), "fit_links": int((scores_fit[name] >= t).sum())}
        out["targets"][str(target)] = row
    from sklearn.linear_model import LogisticRegression

    logit_fit, logit_test = x_fit[:, [FEATURES.index("logit")]], x_test[:, [FEATURES.index("logit")]]
    platt = LogisticRegression(C=1e6, max_iter=1000).fit(logit_fit, y_fit)
    p_test = platt.predict_proba(logit_test)[:, 1]
    rule: dict[str, Any] = {"platt": [round(float(platt.coef_[0, 0]), 4), round(float(platt.intercept_[0]), 4)],
                            "expected_right_links_test": round(float(p_test.sum()), 1), "targets": {}}
    for target in sorted({0.5, 0.6, 0.7, *targets}):
        t = expected_precision_threshold(p_test, target)
        rule["targets"][str(target)] = None if t is None else scored(test, p_test, t, group, created, test_ids)
    out["expected_precision_rule"] = rule
    coef: dict[str, Any] = {}
    for name in ("logreg", "logreg_no_prior"):
        lr = models[name][-1]
        coef[name] = {"intercept": round(float(lr.intercept_[0]), 3),
                      **{c: round(float(w), 3) for c, w in zip(heads[name][1], lr.coef_[0])}}
    if "lgbm" in models:
        gain = models["lgbm"].booster_.feature_importance(importance_type="gain")
        coef["lgbm_gain_share"] = {c: round(float(g / gain.sum()), 3) for c, g in zip(FEATURES, gain)}
    out["coefficients"] = coef
    out["seconds"] = round(time.perf_counter() - t_start, 1)
    print(json.dumps(out, indent=2))
    if args.out:
        args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
