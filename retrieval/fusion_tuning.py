"""Choosing the first stage's fusion on validation: a grid over RRF and score fusion, one objective.

`ticketsearch experiment` tunes the fusion of a freshly built index; `ticketsearch tune-encoder` re-tunes it for
a tuned encoder's embeddings (and for the frozen ones it is compared with).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from .eval_index import fusion_fn
from .evaluation import QueryPool, evaluate
from .manifest import default_fusion

# Weights relative to dense (1.0). Title-dense and recency may be switched off (0).
RRF_GRID = {"bm25": [0.5, 0.75, 1.0, 1.5], "title": [0.0, 0.5, 0.75, 1.0], "recency": [0.0, 0.15, 0.3, 0.5],
            "k": [10.0, 30.0, 60.0]}
SCORE_GRID = {"bm25": [0.1, 0.2, 0.3, 0.5], "title": [0.0, 0.5, 1.0], "recency": [0.0, 0.1, 0.2]}
MIN_TUNE_QUERIES = 30  # below this, validation is too small to choose weights: keep the default fusion


def objective(m: Mapping[str, Any]) -> tuple[float, float]:
    """What fusion tuning maximises on validation: RR@10 + RR@100 (the reranker's ceiling), then MRR."""
    return (m["RR@10"] + m["RR@100"], m["MRR"])


def tune_fusion(pools: list[QueryPool], depth: int) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """Grid-search RRF and score fusion on validation pools. Returns (best rrf, best score fusion, trials)."""
    trials: list[dict[str, Any]] = []
    best: dict[str, tuple[tuple[float, float], dict[str, Any]]] = {}
    candidates: list[dict[str, Any]] = [
        {"method": "rrf", "k": k, "weights": {"dense": 1.0, "bm25": b, "title": t, "recency": r}}
        for b, t, r, k in itertools.product(RRF_GRID["bm25"], RRF_GRID["title"], RRF_GRID["recency"], RRF_GRID["k"])
    ] + [
        {"method": "score", "k": 60.0, "weights": {"dense": 1.0, "bm25": b, "title": t, "recency": r}}
        for b, t, r in itertools.product(SCORE_GRID["bm25"], SCORE_GRID["title"], SCORE_GRID["recency"])
    ]
    for fusion in candidates:
        m, _ = evaluate(pools, fusion_fn(fusion, depth))
        obj = objective(m)
        trials.append({"fusion": fusion, "RR@10": m["RR@10"], "RR@100": m["RR@100"], "MRR": m["MRR"]})
        if fusion["method"] not in best or obj > best[fusion["method"]][0]:
            best[fusion["method"]] = (obj, fusion)
    return best["rrf"][1], best["score"][1], trials


def choose_fusion(val: list[QueryPool], depth: int) -> tuple[str | None, dict[str, Any], dict[str, Any] | None,
                                                                 dict[str, Any] | None, list[dict[str, Any]]]:
    """The fusion to use, chosen on validation pools: (name or None for the default, fusion, best rrf, best score
    fusion, trials). Below MIN_TUNE_QUERIES the default fusion stays."""
    if len(val) < MIN_TUNE_QUERIES:
        return None, default_fusion(), None, None, []
    best_rrf, best_score, trials = tune_fusion(val, depth)
    fusions = {"hybrid-rrf": best_rrf, "hybrid-score": best_score}
    val_metrics = {n: evaluate(val, fusion_fn(f, depth))[0] for n, f in fusions.items()}
    name = max(val_metrics, key=lambda n: objective(val_metrics[n]))
    return name, fusions[name], best_rrf, best_score, trials
