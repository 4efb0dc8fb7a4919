"""Fusion by hand (retrieval/fusion.py): no model, no index, so that each of its mutants is judged in a second
(scripts/mutate.py)."""

from __future__ import annotations

import numpy as np
import pytest

from ticketsearch.retrieval.fusion import RRF_K, fuse_lists, list_contributions, minmax


def test_minmax() -> None:
    out = minmax(np.array([3, 1, 2], np.int64))
    assert out.dtype == np.float64 and out.tolist() == [1.0, 0.0, 0.5]
    assert minmax(np.array([], np.float32)).dtype == np.float64 and len(minmax(np.array([]))) == 0
    assert minmax(np.array([0.7, 0.7, 0.7])).tolist() == [0.0, 0.0, 0.0]  # one value: nothing to spread
    assert minmax(np.array([1.0, 1.0 + 1e-13])).tolist() == [0.0, 0.0]  # below the 1e-12 spread: one value
    assert minmax(np.array([-2.0, 0.0, 2.0])).tolist() == [0.0, 0.5, 1.0]


def test_list_contributions() -> None:
    assert RRF_K == 60.0
    assert list_contributions("rrf", np.array([9.0, 5.0, 1.0])) == pytest.approx([1 / 61, 1 / 62, 1 / 63])
    assert list_contributions("rrf", np.array([0.1, 0.2]), k=1.0) == pytest.approx([1 / 2, 1 / 3])  # ranks, not scores
    assert list_contributions("score", np.array([4.0, 2.0, 0.0])) == pytest.approx([1.0, 0.5, 0.0])


def test_fuse_lists_by_hand() -> None:
    a = (np.array([3.0, 2.0, 1.0]), np.array([10, 20, 30]))
    b = (np.array([9.0, 8.0]), np.array([30, 40]))
    s, ids = fuse_lists([a, b], [1.0, 0.5])
    want = {10: 1 / 61, 20: 1 / 62, 30: 1 / 63 + 0.5 / 61, 40: 0.5 / 62}
    order = sorted(want, key=lambda i: -want[i])
    assert ids.tolist() == order and ids.dtype == np.int64
    assert s.tolist() == pytest.approx([want[i] for i in order])
    s, ids = fuse_lists([a, b], [1.0, 2.0], method="score")  # min-max per list, weighted
    want = {10: 1.0, 20: 0.5, 30: 0.0 + 2.0, 40: 0.0}
    assert dict(zip(ids.tolist(), s.tolist())) == pytest.approx(want) and ids.tolist()[0] == 30


def test_weights_of_zero_and_empty_lists_add_nothing() -> None:
    a = (np.array([3.0, 2.0]), np.array([10, 20]))
    only_b = (np.array([5.0]), np.array([99]))
    s, ids = fuse_lists([a, only_b], [1.0, 0.0])
    assert 99 not in ids.tolist() and ids.tolist() == [10, 20]
    s, ids = fuse_lists([a, (np.array([]), np.array([], np.int64))], [1.0, 1.0])
    assert ids.tolist() == [10, 20]
    s, ids = fuse_lists([], [])
    assert len(s) == 0 and len(ids) == 0 and ids.dtype == np.int64
    s, ids = fuse_lists([a], [0.0])
    assert len(s) == 0 and len(ids) == 0


def test_ties_go_to_the_lower_id() -> None:
    s, ids = fuse_lists([(np.array([1.0]), np.array([7])), (np.array([1.0]), np.array([3]))], [1.0, 1.0])
    assert ids.tolist() == [3, 7] and s[0] == s[1] == pytest.approx(1 / 61)


def test_the_method_is_read_by_value_and_a_skipped_list_skips_only_itself() -> None:
    # a method name read from a manifest's JSON is another string object than the literal "rrf"
    method = "".join(["r", "r", "f"])
    assert list_contributions(method, np.array([5.0, 1.0])) == pytest.approx([1 / 61, 1 / 62])
    a = (np.array([3.0, 2.0]), np.array([10, 20]))
    for skipped in ((np.array([5.0]), np.array([99])), (np.array([]), np.array([], np.int64))):
        weight = 0.0 if len(skipped[1]) else 1.0
        s, ids = fuse_lists([skipped, a], [weight, 1.0])  # the skipped list first: the rest is still fused
        assert ids.tolist() == [10, 20], skipped
