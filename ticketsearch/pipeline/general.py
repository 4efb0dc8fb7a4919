"""Training and scoring linear rerankers (`rerank.general`) on mined lists: the general model on one or more
indexes' lists, and an index's own `rerank-linear` variant on its lists."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ticketsearch.index_data.store import TicketStore
from ticketsearch.pipeline.mining import Mined, build_train_data, calibration_meta
from ticketsearch.rerank.general import GENERAL_SCHEMA, LinearPairModel
from ticketsearch.rerank.train import Group, RankList, TrainData, fit_logistic
from ticketsearch.retrieval.encoder import Encoder
from ticketsearch.retrieval.eval_index import EvalInputs

L2 = 1e-3


@dataclass
class GeneralInputs:
    """One index's mined lists with the general model's pair inputs (no fields: GENERAL_SCHEMA)."""

    mined: Mined
    data: TrainData


def general_inputs(store: TicketStore, inp: EvalInputs, encoder: Encoder, index_dir: Path, mined: Mined,
                   progress: bool = False, query_kinds: bool = False, text: bool = False) -> GeneralInputs:
    """`query_kinds`: lay the pair inputs out by query kind, as a general model trained so would need them;
    `text`: with the text columns (`pairs.TextScores`)."""
    data, _, _ = build_train_data(store, inp, encoder, index_dir, mined, with_pair=True, progress=progress,
                                  pair_schema=GENERAL_SCHEMA, query_kinds=query_kinds, tokens=False, text=text)
    return GeneralInputs(mined, data)


def pair_rows(data: TrainData, groups: Sequence[Group]) -> tuple[np.ndarray, np.ndarray]:
    """Every training pair of `groups` (each group's positives and negatives) as pair inputs and labels: the
    pairs the fusion model trains on, and its linear start (`rerank.train.fit_pair_skip`) fits."""
    assert data.pair is not None
    xs, ys = [], []
    for grp in groups:
        for c, y in [(c, 1.0) for c in grp.positives] + [(c, 0.0) for c in grp.negatives]:
            xs.append(data.pair(grp.query, c))
            ys.append(y)
    if not xs:
        raise ValueError("no training pairs: the index has no train-period duplicates in its first stage's top 100")
    return np.stack(xs), np.asarray(ys)


def train_pairs(g: GeneralInputs) -> tuple[np.ndarray, np.ndarray]:
    return pair_rows(g.data, g.mined.groups)


def fit_linear(data: TrainData, groups: Sequence[Group], l2: float = L2) -> LinearPairModel:
    """A logistic regression on the pair inputs of `groups`' training pairs (`rerank-linear`)."""
    w, b = fit_logistic(*pair_rows(data, groups), l2)
    return LinearPairModel(np.asarray(w, np.float64), b)


def linear_scores(model: LinearPairModel, data: TrainData, lists: Sequence[RankList]) -> list[np.ndarray]:
    """A linear model's logits of every candidate of every list."""
    assert data.pair is not None
    return [model.logits(np.stack([data.pair(r.query, c) for c in r.candidates])) for r in lists]


def list_scores(model: LinearPairModel, g: GeneralInputs, lists: Sequence[RankList]) -> list[np.ndarray]:
    return linear_scores(model, g.data, lists)


def fit_general(sources: Sequence[GeneralInputs], names: Sequence[str],
                text: bool = False) -> tuple[LinearPairModel, dict[str, Any]]:
    """One logistic regression on the training pairs of every source (each source's pairs weighted equally
    per pair), calibrated on their validation lists together; `text`: the sources were built with the text
    columns (`general_inputs(text=True)`), and the model says so."""
    parts = [train_pairs(g) for g in sources]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    w, b = fit_logistic(x, y, L2)
    model = LinearPairModel(np.asarray(w, np.float64), b)
    val_scores = [s for g in sources for s in list_scores(model, g, g.mined.valid)]
    valid = [r for g in sources for r in g.mined.valid]
    meta = {"name": "general", "trained_on": list(names), "train_pairs": int(len(y)),
            "train_queries": int(sum(len(g.mined.groups) for g in sources)), "l2": L2,
            "query_kinds": False, "text": text, "rerank_depth": 100,
            **calibration_meta(val_scores, valid)}
    return model, meta
