"""Statistics fitted on validation pairs: Platt calibration of the reranker's logits and the duplicate
threshold for a target precision (scikit-learn); the one Platt sigmoid that training and serving apply."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def platt(logits: np.ndarray, a: float, b: float) -> np.ndarray:
    """p = sigmoid(a * logit + b)."""
    z = a * np.asarray(logits, np.float64) + b
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def fit_platt(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Platt scaling fitted by maximum likelihood (unpenalised logistic regression on the logit)."""
    from sklearn.linear_model import LogisticRegression  # deferred: scikit-learn, pyarrow

    y = np.asarray(labels).astype(int)
    if len(np.unique(y)) < 2:
        return 1.0, 0.0
    lr = LogisticRegression(C=np.inf, solver="lbfgs", max_iter=1000)  # unpenalised
    lr.fit(np.asarray(logits, np.float64).reshape(-1, 1), y)
    return float(lr.coef_[0, 0]), float(lr.intercept_[0])


def lowest_threshold_for_precision(probs: np.ndarray, labels: np.ndarray,
                                   target: float) -> tuple[float | None, float | None]:
    """The lowest probability threshold whose precision on these pairs reaches `target`, and that precision
    (None, None when no threshold does). Tickets at or above the threshold count as duplicates."""
    from sklearn.metrics import precision_recall_curve  # deferred: scikit-learn, pyarrow

    y = np.asarray(labels).astype(int)
    if len(y) == 0 or y.sum() == 0:
        return None, None
    precision, _, thresholds = precision_recall_curve(y, np.asarray(probs, np.float64))
    ok = np.flatnonzero(precision[:-1] >= target)  # the last point (recall 0) has no threshold
    if len(ok) == 0:
        return None, None
    i = int(ok[np.argmin(thresholds[ok])])
    return float(thresholds[i]), float(precision[i])


def stored_threshold(meta: dict[str, Any], precision: float | None = None) -> float | None:
    """The duplicate-probability threshold a model stored for a target precision (its default target when
    None); None when its validation reached no such precision. KeyError for a precision it did not store."""
    default = float(meta.get("threshold_target_precision", 0.9))
    if precision is None or abs(precision - default) < 1e-9:
        t = meta.get("duplicate_threshold")
    else:
        table = meta.get("duplicate_thresholds", {})
        key = f"{precision:.2f}"
        if key not in table:
            stored = sorted({f"{default:.2f}", *table})
            raise KeyError(f"this reranker stores duplicate thresholds for precision {', '.join(stored)} only")
        t = table[key]
    return None if t is None or (isinstance(t, float) and math.isnan(t)) else float(t)
