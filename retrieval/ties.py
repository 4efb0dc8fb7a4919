"""One order for every ranked list, wherever it is computed (one index, a shard, shards merged, a live overlay):
by score, ties by row id, where scores equal to TIE_DECIMALS decimals are ties.

Near-equal scores are common: tickets with one title have title vectors that differ only in the last bits (by the
batch each was encoded in), and a shard's BM25 with the collection's statistics differs from one index's in the
last bits. Ordered, or cut at a depth, by those bits, the same tickets took other ranks in a sharded and a one-index
answer; rounded first, they mostly do not. Rounding is a mitigation, not a tolerance: two scores that straddle a
rounding boundary (...4999999 and ...5000001) still order by their last bits.

Used by the vector index (its order and how far it looks past the cut), BM25, the live overlay's merge and the
merge of shards' lists."""

from __future__ import annotations

import numpy as np

TIE_DECIMALS = 5


def tie_keys(scores: np.ndarray, decimals: int = TIE_DECIMALS) -> np.ndarray:
    """The scores as the one order compares them (a reranker's logits use fewer decimals)."""
    return np.round(np.asarray(scores, np.float64), decimals)


def best_first(scores: np.ndarray, ids: np.ndarray, depth: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The list in the one order, cut at `depth`."""
    order = np.lexsort((ids, -tie_keys(scores)))[:depth]
    return scores[order], ids[order]


def top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`best_first(scores, ids, k)` without sorting (or rounding) the whole array: one partition finds the k-th
    largest score; every score close enough to tie with it is kept for the final order, so the cut is the one
    order's (rounding is monotone: a score more than one rounding step below the k-th cannot tie it)."""
    if k <= 0 or len(scores) == 0:
        return scores[:0], ids[:0]
    if k >= len(scores):
        return best_first(scores, ids, k)
    kth = np.partition(scores, len(scores) - k)[len(scores) - k]
    near = np.flatnonzero(scores >= kth - 2 * 10.0**-TIE_DECIMALS)
    return best_first(scores[near], ids[near], k)
