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
