"""Platt calibration and precision thresholds (rerank/calibration.py)."""

from __future__ import annotations

import numpy as np

from ticketsearch.rerank.calibration import fit_platt, lowest_threshold_for_precision, platt


def test_fit_platt_recovers_the_generating_sigmoid() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, 20_000)
    labels = rng.random(len(logits)) < platt(logits, 0.7, -1.2)
    a, b = fit_platt(logits, labels)
    assert abs(a - 0.7) < 0.05 and abs(b + 1.2) < 0.08
    assert fit_platt(logits, np.zeros(len(logits))) == (1.0, 0.0)  # one class: identity


def test_lowest_threshold_for_precision_by_hand() -> None:
    probs = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.5])
    labels = np.array([1, 1, 0, 1, 0, 0])
    # at >= 0.9: 2/2; >= 0.8: 2/3; >= 0.7: 3/4 = .75; >= 0.6: 3/5; >= 0.5: 3/6
    assert lowest_threshold_for_precision(probs, labels, 0.75) == (0.7, 0.75)
    assert lowest_threshold_for_precision(probs, labels, 1.0) == (0.9, 1.0)
    assert lowest_threshold_for_precision(probs, labels, 0.5) == (0.5, 0.5)
    assert lowest_threshold_for_precision(probs, np.zeros(6), 0.5) == (None, None)
    # equal probabilities are one threshold: both tickets at 0.8 are in or out together
    tied = np.array([0.9, 0.8, 0.8, 0.1])
    assert lowest_threshold_for_precision(tied, np.array([1, 1, 0, 0]), 0.7) == (0.9, 1.0)


def test_platt_is_the_sigmoid_of_the_scaled_logit_and_never_overflows() -> None:
    assert platt(np.array([0.0]), 1.0, 0.0)[0] == 0.5
    np.testing.assert_allclose(platt(np.array([1.0, -2.0]), 2.0, 1.0), 1 / (1 + np.exp([-3.0, 3.0])), rtol=1e-12)
    with np.errstate(over="raise"):  # the clip at +-50 keeps exp finite
        far = platt(np.array([-1e6, 1e6]), 1.0, 0.0)
    assert 0.0 < far[0] < 1e-21 and far[0] == 1 / (1 + np.exp(50.0))
    assert far[1] == 1 / (1 + np.exp(-50.0))
    assert platt([3], 1.0, 0.0).dtype == np.float64  # lists and ints are read as float64


def test_stored_threshold_reads_the_default_target_and_the_table() -> None:
    from ticketsearch.rerank.calibration import stored_threshold

    meta = {"threshold_target_precision": 0.9, "duplicate_threshold": 0.61,
            "duplicate_thresholds": {"0.80": 0.42, "0.95": None, "0.99": float("nan")}}
    assert stored_threshold(meta) == 0.61 and stored_threshold(meta, 0.9) == 0.61
    assert stored_threshold(meta, 0.9 + 1e-12) == 0.61  # the default target, as a float computed elsewhere
    assert stored_threshold(meta, 0.8) == 0.42 and stored_threshold(meta, 0.800000001) == 0.42  # by 2 decimals
    assert stored_threshold(meta, 0.95) is None  # validation reached no such precision
    assert stored_threshold(meta, 0.99) is None  # NaN is stored as "none reached"
    try:
        stored_threshold(meta, 0.7)
    except KeyError as exc:
        assert "0.80, 0.90, 0.95, 0.99" in str(exc)
    else:
        raise AssertionError("a precision the model did not store must be a KeyError")
    # another default target; a model without thresholds stored at all
    assert stored_threshold({"threshold_target_precision": 0.8, "duplicate_threshold": 0.3}, 0.8) == 0.3
    assert stored_threshold({"duplicate_threshold": 0.5}) == 0.5  # 0.9 when the model does not say
    assert stored_threshold({}) is None
    assert stored_threshold({"duplicate_threshold": float("nan")}) is None
    assert isinstance(stored_threshold({"duplicate_threshold": 1}), float)


def test_threshold_edges_one_positive_one_qualifying_threshold_and_the_default_target() -> None:
    from ticketsearch.rerank.calibration import stored_threshold

    # exactly one positive pair is enough to choose a threshold; exactly one threshold may qualify
    assert lowest_threshold_for_precision(np.array([0.9, 0.5, 0.2]), np.array([1, 0, 0]), 1.0) == (0.9, 1.0)
    assert lowest_threshold_for_precision(np.array([0.9, 0.5]), np.array([1, 0]), 0.9) == (0.9, 1.0)
    # positives, but no threshold reaches the target: none, not an error
    assert lowest_threshold_for_precision(np.array([0.9, 0.8]), np.array([0, 1]), 1.0) == (None, None)
    # a model that names no target was fitted for 0.9: asking for 0.9 reads its own threshold, not the table
    assert stored_threshold({"duplicate_threshold": 0.5, "duplicate_thresholds": {}}, 0.9) == 0.5
