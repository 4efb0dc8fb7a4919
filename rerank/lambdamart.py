"""LightGBM LambdaMART over the fusion model's pair inputs and its own score: a second stage that a reranker
directory may hold (variant `rerank-lambdamart`), installed like any variant when it validates best.

Training lists: each train-period duplicate's mined candidates (the fusion model's own training pairs: its
group members in the hybrid top 100, its hardest negatives, a sample of the rest of the top 100 and a few
random tickets), labelled by group membership; early stopping on the validation lists' NDCG@10.
The fusion model's score on the training queries is in-sample (it was trained on them), which flatters that
input during LambdaMART's training; validation is out of sample for both.

Persisted as LightGBM's own text model format (`lambdamart.txt`: trees as text, not pickle) beside the fusion
model's config and safetensors. LightGBM is optional (`pip install ticketsearch[ltr]`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ticketsearch.atomic import atomic_write_text
from ticketsearch.errors import TicketsearchError

LTR_FILE = "lambdamart.txt"
PARAMS: dict[str, Any] = {
    "objective": "lambdarank", "n_estimators": 1000, "learning_rate": 0.03, "num_leaves": 15,
    "min_child_samples": 20, "subsample": 0.8, "subsample_freq": 1, "colsample_bytree": 0.8, "random_state": 0,
    "verbose": -1,
}
EARLY_STOPPING = 50


def available() -> bool:
    try:
        import lightgbm  # noqa: F401  # deferred: LightGBM (an optional extra)
    except ImportError:
        return False
    return True


def _lightgbm() -> Any:
    try:
        import lightgbm  # deferred: LightGBM, scikit-learn
    except ImportError:
        raise TicketsearchError("LambdaMART needs LightGBM: pip install 'ticketsearch[ltr]'") from None
    return lightgbm


def ltr_inputs(pair: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """One row per candidate: its pair inputs and the fusion model's logit (training and serving)."""
    return np.concatenate([np.asarray(pair, np.float64), np.asarray(logits, np.float64).reshape(-1, 1)], axis=1)


class LambdaMART:
    def __init__(self, booster: Any, best_iteration: int) -> None:
        self.booster = booster
        self.best_iteration = best_iteration

    @classmethod
    def fit(cls, train: Sequence[tuple[np.ndarray, np.ndarray]], valid: Sequence[tuple[np.ndarray, np.ndarray]],
            ) -> LambdaMART:
        """Fit on lists of (inputs [n, d], labels [n]); early-stop on the validation lists' NDCG@10."""
        lgb = _lightgbm()

        def stack(lists: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, list[int]]:
            return (np.concatenate([x for x, _ in lists]), np.concatenate([y for _, y in lists]).astype(int),
                    [len(y) for _, y in lists])

        xt, yt, gt = stack(train)
        ranker = lgb.LGBMRanker(**PARAMS)
        kwargs: dict[str, Any] = {}
        if valid:
            xv, yv, gv = stack(valid)
            kwargs = {"eval_set": [(xv, yv)], "eval_group": [gv], "eval_at": [10],
                      "callbacks": [lgb.early_stopping(EARLY_STOPPING, verbose=False)]}
        with warnings.catch_warnings():  # LightGBM 4.7 renames eval_set; older 4.x know only eval_set
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            ranker.fit(xt, yt, group=gt, **kwargs)
        best = int(ranker.best_iteration_ or ranker.n_estimators)
        return cls(ranker.booster_, best)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(x, num_iteration=self.best_iteration), dtype=np.float32)

    def save(self, directory: Path) -> None:
        atomic_write_text(Path(directory) / LTR_FILE, self.booster.model_to_string(num_iteration=self.best_iteration))

    @classmethod
    def load(cls, directory: Path) -> LambdaMART | None:
        """The directory's LambdaMART stage, or None when it has none."""
        path = Path(directory) / LTR_FILE
        if not path.is_file():
            return None
        booster = _lightgbm().Booster(model_str=path.read_text("utf-8"))
        return cls(booster, int(booster.current_iteration()))
