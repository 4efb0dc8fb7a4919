from __future__ import annotations

import numpy as np

from ticketsearch.retrieval.ties import TIE_DECIMALS, best_first, top_k


def test_near_equal_scores_are_ties_broken_by_row_id_wherever_the_list_is_cut() -> None:
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(1, 60))
        base = rng.choice(np.round(rng.random(8), 3), size=n)  # few distinct values: many ties
        noisy = base + rng.uniform(-1e-7, 1e-7, size=n)  # the last bits of another batch or shard
        ids = rng.permutation(1000)[:n].astype(np.int64)
        k = int(rng.integers(1, n + 2))
        s1, i1 = best_first(base, ids, k)
        s2, i2 = top_k(noisy, ids, k)
        assert i1.tolist() == i2.tolist(), trial  # the same members, in the same order
        assert np.allclose(s1, s2, atol=1e-6)
        keys = np.round(s2, TIE_DECIMALS)
        assert all(keys[j] > keys[j + 1] or (keys[j] == keys[j + 1] and i2[j] < i2[j + 1]) for j in range(len(i2) - 1))


def test_distinct_scores_keep_their_order() -> None:
    s, i = top_k(np.array([0.1, 0.9, 0.5, 0.3]), np.array([4, 3, 2, 1]), 3)
    assert i.tolist() == [3, 2, 1] and s.tolist() == [0.9, 0.5, 0.3]
    assert top_k(np.zeros(0), np.zeros(0, np.int64), 5)[1].tolist() == []
