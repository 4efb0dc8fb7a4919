"""Fusing first-stage rankings: reciprocal rank fusion (default) and weighted min-max-normalised score fusion.

Each method contributes its top-N list; an id missing from a list gets nothing from it. The evaluation
harness applies the same rule over whole candidate pools (`retrieval.eval_index.fusion_fn`), through
`list_contributions`; BM25 lists hold lexical matches only, in both (`lexical.lexical_matches`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RRF_K = 60.0


def minmax(scores: np.ndarray) -> np.ndarray:
    if len(scores) == 0:
        return scores.astype(np.float64)
    lo, hi = float(np.min(scores)), float(np.max(scores))
    if hi - lo < 1e-12:
        return np.zeros(len(scores), dtype=np.float64)
    return (scores.astype(np.float64) - lo) / (hi - lo)


def list_contributions(method: str, scores: np.ndarray, k: float = RRF_K) -> np.ndarray:
    """What each member of one method's list (best first) adds to its fused score, before the method's
    weight: 1 / (k + rank) for RRF, the min-max-normalised score for score fusion. Search and evaluation
    both fuse through this."""
    if method == "rrf":
        return 1.0 / (k + np.arange(1, len(scores) + 1))
    return minmax(np.asarray(scores))


def fuse_lists(
    lists: Sequence[tuple[np.ndarray, np.ndarray]], weights: Sequence[float], method: str = "rrf", k: float = RRF_K
) -> tuple[np.ndarray, np.ndarray]:
    """Fuse top-N (scores, ids) lists. Returns (fused scores, ids), best first; ties by id."""
    acc: dict[int, float] = {}
    for (s, ids), w in zip(lists, weights):
        if w == 0 or len(ids) == 0:
            continue
        contrib = list_contributions(method, np.asarray(s), k)
        for i, c in zip(ids.tolist(), contrib.tolist()):
            acc[i] = acc.get(i, 0.0) + w * c
    if not acc:
        return np.zeros(0), np.zeros(0, np.int64)
    items = sorted(acc.items(), key=lambda kv: (-kv[1], kv[0]))
    return np.array([v for _, v in items]), np.array([i for i, _ in items], dtype=np.int64)
