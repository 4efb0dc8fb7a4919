"""The shipped general reranker: it loads offline from the package, scores pair inputs of any schema, keeps
its weights whole, and gives way to a collection's own model once one is trained."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ticketsearch.errors import TicketsearchError
from ticketsearch.index_data.schema import load_schema
from ticketsearch.pipeline.pairs import ListScores, pair_inputs
from ticketsearch.rerank.general import (
    GENERAL_SCHEMA,
    SHIPPED,
    GeneralReranker,
    LinearPairModel,
    load_general,
    save_general,
)
from ticketsearch.rerank.pair_features import KIND_COLUMNS, pair_dim


def test_the_shipped_model_loads_and_scores() -> None:
    g = GeneralReranker()
    assert g.directory == SHIPPED and sum(f.stat().st_size for f in SHIPPED.iterdir()) < 5_000_000
    assert g.model.weights.shape == (pair_dim(GENERAL_SCHEMA, g.query_kinds),) == (KIND_COLUMNS,)
    assert set(g.meta["trained_on"]) == {"hadoop", "hive"} and g.meta["train_queries"] > 500
    # its inputs exist under every schema: a support ticket's pair inputs under the general schema
    support = load_schema("support")
    n = 4
    scores = ListScores(np.array([0.9, 0.5, 0.4, 0.2]), np.array([0.8, 0.4, 0.5, 0.1]), np.array([9.0, 3, 4, 1]),
                        np.arange(1.0, n + 1))
    from datetime import datetime, timedelta

    now = datetime(2025, 1, 10)
    mat = pair_inputs(g.schema, "charged twice for one order", {"product": "Billing"}, now, scores, 9.0,
                      ["Charged twice", "Refund", "Invoice PDF", "Login"], [{}] * n,
                      [now - timedelta(days=d) for d in (1, 30, 2, 400)])
    assert mat.shape == (n, KIND_COLUMNS) and support.fields  # the query's fields play no part
    logits = g.score_pairs(mat)
    assert np.isfinite(logits).all() and int(np.argmax(logits)) == 0  # better on every input
    assert np.all(np.diff(g.probability(np.sort(logits))) >= 0)
    assert 0 < g.duplicate_threshold() < 1


def test_save_load_round_trip_and_checksum(tmp_path: Path) -> None:
    m = LinearPairModel(np.array([1.0, -2.0, 0.5, 0, 0, 1]), -0.25)
    save_general(tmp_path / "g", m, {"name": "general", "duplicate_threshold": 0.7})
    back, meta = load_general(tmp_path / "g")
    assert np.allclose(back.weights, m.weights) and back.bias == pytest.approx(-0.25)
    assert meta["kind"] == "general-linear"
    (tmp_path / "g" / "model.safetensors").write_bytes((tmp_path / "g" / "model.safetensors").read_bytes()[:-1] + b"!")
    with pytest.raises(TicketsearchError, match="checksum"):
        load_general(tmp_path / "g")
    with pytest.raises(TicketsearchError, match="no linear reranker"):
        load_general(tmp_path / "missing")


def test_a_trained_collection_uses_its_own_model(trained_index: Path, encoder, settings) -> None:
    from ticketsearch.pipeline.search import SearchPipeline
    from ticketsearch.rerank.runtime import Reranker

    s = SearchPipeline(trained_index, settings=settings, encoder=encoder)
    try:
        assert isinstance(s.reranker, Reranker) and s.reranker.name == "rerank-cross+pair"
        assert "with rerank-cross+pair" in s.search("refund", k=3).notes[-1]
    finally:
        s.close()


def test_an_untrained_index_answers_duplicates_with_the_general_model(index_dir: Path, settings) -> None:
    """Before its first model, an index still says whether a new ticket is a duplicate: with the general
    model's calibrated probability and its stored threshold (no 503)."""
    from ticketsearch.api import TicketIndex

    with TicketIndex.open(index_dir, settings=settings) as idx:
        assert isinstance(idx.pipeline.reranker, GeneralReranker)
        first = idx.search("charged twice", k=1).hits[0]
        stored = idx.get(first.id)
        res = idx.duplicates({"title": stored.title, "body": stored.body, "created": "2030-01-01"}, k=3)
        assert res.threshold == GeneralReranker().duplicate_threshold(settings.duplicate_precision)
        assert res.probability is not None and 0 <= res.probability <= 1 and res.candidates[0].id == first.id
        assert res.near_copy and res.candidates[0].near_copy  # its own words, four years on: a near copy
        assert res.is_duplicate is True  # whatever the probability (the rule outside the model)


def test_a_linear_model_whose_pair_inputs_this_version_does_not_compute_is_refused(tmp_path: Path) -> None:
    """Saved for one layout of pair inputs, loaded where the schema gives another: retrain, one rule for both
    kinds of reranker (`pair_features.check_pair_width`)."""
    from ticketsearch.rerank.general import LINEAR_KIND, LinearReranker

    support = load_schema("support")
    width = pair_dim(support, False, True)
    meta = {"name": "rerank-linear", "schema": support.to_dict(), "code": True, "query_kinds": False}
    save_general(tmp_path / "ok", LinearPairModel(np.zeros(width), 0.0), meta, kind=LINEAR_KIND)
    assert LinearReranker(tmp_path / "ok").model.weights.shape == (width,)
    save_general(tmp_path / "old", LinearPairModel(np.zeros(width - 2), 0.0), meta, kind=LINEAR_KIND)
    with pytest.raises(TicketsearchError, match=f"trained with {width - 2} pair inputs .* computes {width}: retrain"):
        LinearReranker(tmp_path / "old")
