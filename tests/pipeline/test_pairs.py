"""The pair inputs' optional columns (pipeline/pairs.py): the text columns' values and where they sit, and data
built with optional columns read by a model without them."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest

from ticketsearch.index_data.schema import load_schema
from ticketsearch.pipeline.pairs import ListScores, TextScores, pair_inputs, select_columns
from ticketsearch.rerank.pair_features import CODE_COLUMNS, TEXT_COLUMNS, code_terms, pair_dim
from ticketsearch.retrieval.first_stage import Candidates
from ticketsearch.retrieval.lexical import title_query


def _inputs(text: TextScores | None, code: bool) -> np.ndarray:
    schema = load_schema("support")
    scores = ListScores(np.array([0.9, 0.5, 0.2]), np.array([0.8, 0.4, 0.1]), np.array([9.0, 3.0, 0.0]),
                        np.array([1.0, 2.0, 3.0]))
    now = datetime(2026, 1, 2)
    body = "Checkout fails with QUOTA_EXCEEDED"
    return pair_inputs(schema, body, {}, now, scores, 9.0, ["Checkout fails", "Refund late", "Dark mode"],
                       [{}, {}, {}], [now, now, now], text=text,
                       candidate_code=[code_terms(body), frozenset(), frozenset()] if code else None)


def test_the_text_columns_sit_before_the_code_columns_and_scale_bm25_by_the_lists_best() -> None:
    text = TextScores(np.array([0.7, 0.3, 0.1]), np.array([0.6, 0.2, 0.0]), np.array([4.0, 2.0, 0.0]), 4.0)
    plain, both = _inputs(None, True), _inputs(text, True)
    support = load_schema("support")
    assert plain.shape == (3, pair_dim(support, code=True))
    assert both.shape == (3, pair_dim(support, code=True, text=True))
    cols = both[:, -CODE_COLUMNS - TEXT_COLUMNS:-CODE_COLUMNS]
    assert np.allclose(cols, [[0.7, 0.6, 1.0], [0.3, 0.2, 0.5], [0.1, 0.0, 0.0]])
    assert np.array_equal(both[:, -CODE_COLUMNS:], plain[:, -CODE_COLUMNS:]) and both[0, -2] == 1.0
    # read back without either optional set, or with one of them, it is what a model without them computes
    assert np.array_equal(select_columns(both, True, True, False, True), plain)
    assert np.array_equal(select_columns(both, True, True, True, False), _inputs(text, False))
    assert np.array_equal(select_columns(both, True, True, False, False), _inputs(None, False))
    with pytest.raises(ValueError, match="without the text columns"):
        select_columns(plain, False, True, True, True)


def test_bm25_of_the_title_is_of_the_whole_text_without_one() -> None:
    assert title_query("  Refund late ", "Refund late\nRefund late\nno money yet") == "Refund late"
    assert title_query("", "charged twice") == "charged twice"


def test_the_text_columns_scores_are_no_method_of_a_hit() -> None:
    c = Candidates("hybrid", [1], [0.5], {"dense": {1: 0.9}, "bm25": {1: 3.0}, "dense_title": {1: 0.4},
                                          "title_dense": {1: 0.3}, "bm25_title": {1: 1.0}})
    assert c.method_scores(1) == {"dense": 0.9, "bm25": 3.0}
