"""Recall of an approximate vector index against exact search, and clustered test vectors to measure it on.

Uniform random vectors make every index look bad (no neighbourhoods); real embeddings are clustered. The
benchmark (`scripts/bench_search.py`) uses `clustered` above the demo size, where encoding real text would
take hours, and cross-checks on real embeddings.
"""

from __future__ import annotations

import numpy as np


def clustered(
    n: int, dim: int = 384, seed: int = 0, spread: float = 0.6, queries: int = 200
) -> tuple[np.ndarray, np.ndarray]:
    """n unit vectors around max(50, n/100) random centres, plus `queries` more from the same mixture."""
    rng = np.random.default_rng(seed)
    k = max(50, n // 100)
    centres = rng.normal(size=(k, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def draw(m: int) -> np.ndarray:
        out = np.empty((m, dim), np.float32)
        for s in range(0, m, 100_000):
            e = min(m, s + 100_000)
            c = centres[rng.integers(0, k, e - s)]
            v = c + spread * rng.normal(size=(e - s, dim)).astype(np.float32) / np.sqrt(dim)
            out[s:e] = v / np.linalg.norm(v, axis=1, keepdims=True)
        return out

    return draw(n), draw(queries)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each query's exact top k (rows of `truth`) that the index returned (rows of `found`)."""
    found, truth = np.atleast_2d(found), np.atleast_2d(truth)
    return float(np.mean([len(set(f[f >= 0].tolist()) & set(t.tolist())) / len(t) for f, t in zip(found, truth)]))
