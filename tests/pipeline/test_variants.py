"""The reranker's variants (pipeline/variants.py): the linear one trained, installed and searched without token
states or candidate vectors, live writes reranked by it at once; `auto` and the simplest-variant rule; the names
every door trains, refused the same way."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from ticketsearch.errors import QueryError
from ticketsearch.index_data.records import normalize_row
from ticketsearch.index_data.schema import load_schema
from ticketsearch.index_dir import IndexDir
from ticketsearch.pipeline.engine import Engine
from ticketsearch.pipeline.folds import OCCAM_MARGIN
from ticketsearch.pipeline.search import SearchPipeline
from ticketsearch.pipeline.training import train_index
from ticketsearch.pipeline.variants import AUTO_VARIANTS, VARIANTS, train_variants
from ticketsearch.requests import SearchRequest
from ticketsearch.rerank.general import GeneralReranker, LinearReranker
from ticketsearch.rerank.pair_features import CODE_COLUMNS, KIND_COLUMNS, TEXT_COLUMNS, pair_dim
from ticketsearch.rerank.train import TrainConfig
from ticketsearch.results import TRAIN_VARIANTS, TrainParams
from ticketsearch.service.cli import app
from ticketsearch.settings import Settings


def test_the_linear_model_reranks_without_token_states_or_candidate_vectors(
        linear_index: Path, encoder, settings: Settings) -> None:
    d = IndexDir(linear_index)
    cfg = json.loads((d.reranker_path / "config.json").read_text())
    assert cfg["kind"] == "linear" and cfg["name"] == "rerank-linear" and cfg["code"] is True and cfg["text"] is True
    assert cfg["schema"]["name"] == "support" and {"a", "b"} <= set(cfg["calibration"])
    assert not d.rerank_vectors_path.exists() and not d.rerank_tag_path.exists()
    s = SearchPipeline(linear_index, settings=settings, encoder=encoder)
    try:
        r = s.reranker
        assert isinstance(r, LinearReranker) and not isinstance(r, GeneralReranker) and s.vectors is None
        # its own pair inputs: the support schema's field agreement, the text and the code columns, not the
        # general model's
        assert r.model.weights.shape == (pair_dim(load_schema("support"), False, True, True),) != (KIND_COLUMNS,)
        out = s.search("refund missing after a double charge", k=10)
        assert out.reranked and out.reranker is not None and out.reranker.startswith("rerank-linear@")
        assert "with rerank-linear" in out.notes[-1]
        rest = [h.rerank_score for h in out.hits if not h.near_copy]
        assert all(x is not None for x in rest) and rest == sorted(rest, reverse=True)  # type: ignore[type-var]
        assert all(0.0 <= h.probability <= 1.0 for h in out.hits if h.probability is not None)
        # a BM25-only search reranked by it still encodes the query: its cosines are pair inputs, never zeros
        req = SearchRequest.of("refund missing after a double charge", method="bm25")
        q, cands = s.retrieve(req, "bm25", s.rerank_depth, False, True)
        assert q.vector is not None and q.title_vector is not None
        s.complete(q, cands, s.rerank_depth)
        pair = s.pair_inputs(q, cands, s.candidate_rows(cands, cands.row_ids[:s.rerank_depth]))
        assert pair is not None and (pair[:, 0] != 0).all() and (pair[:, -CODE_COLUMNS - TEXT_COLUMNS] != 0).all()
        q, _ = s.retrieve(req, "bm25", 10, False, False)  # not reranked: not encoded
        assert q.vector is None
    finally:
        s.close()


def test_a_write_is_reranked_by_the_linear_model_at_once(linear_index: Path, tmp_path: Path) -> None:
    shutil.copytree(linear_index, tmp_path / "idx")
    eng = Engine(tmp_path / "idx", Settings())
    eng.start()
    try:
        assert eng.error is None and isinstance(eng.searcher.reranker, LinearReranker)
        eng.upsert([normalize_row(eng.store.schema, {"id": "NEW-LIN-1", "title": "narwhal ledger reconciliation "
                                                     "stalls at midnight", "created": "2026-01-02"}, 1)])
        res = eng.search(text="narwhal ledger reconciliation stalls", k=3)
        assert res.reranked and res.hits[0].id == "NEW-LIN-1" and res.hits[0].rerank_score is not None
    finally:
        eng.close(compact=False)
    assert not IndexDir(tmp_path / "idx").rerank_vectors_path.exists()  # nothing of the fusion model's kind


def test_every_door_trains_the_same_names(tmp_path: Path) -> None:
    """One list (`results.TRAIN_VARIANTS`) and one check (`train_variants`): the library, the CLI and the API
    refuse the same names, before anything is read."""
    assert set(TRAIN_VARIANTS) - {"auto"} <= set(VARIANTS) and TRAIN_VARIANTS[0] == "auto"
    assert not any(VARIANTS[n].get("shuffle") or VARIANTS[n].get("optional") for n in TRAIN_VARIANTS[1:])
    assert train_variants("auto") == AUTO_VARIANTS == ["rerank-linear", "rerank-cross+pair"]
    assert train_variants("rerank-linear") == ["rerank-linear"]
    for bad in ("rerank-cross-shuffled", "rerank-cross-noprior", "linear", ""):
        with pytest.raises(QueryError, match="variant: must be one of auto, rerank-linear"):
            train_index(tmp_path / "none", None, None, bad, Settings(), TrainConfig())
        with pytest.raises(ValidationError):
            TrainParams(variant=bad)  # type: ignore[arg-type]
        res = CliRunner().invoke(app, ["train", "--index", str(tmp_path / "none"), "--variant", bad])
        assert res.exit_code == 2 and "variant: must be one of auto, rerank-linear" in res.output, res.output
    assert not (tmp_path / "none").exists()
    assert TrainParams().variant == "auto"


def test_auto_installs_the_linear_model_unless_the_fusion_model_validates_clearly_better(
        index_dir: Path, tmp_path: Path, settings: Settings) -> None:
    shutil.copytree(index_dir, tmp_path / "idx")
    res = train_index(tmp_path / "idx", None, None, "auto", settings, TrainConfig(epochs=2), progress=False,
                      log=lambda _: None, install_rule="always", validation_folds=0)
    lin, deep = res["valid"]["rerank-linear"]["MRR"], res["valid"]["rerank-cross+pair"]["MRR"]
    expected = "rerank-cross+pair" if deep - lin > OCCAM_MARGIN else "rerank-linear"
    assert res["installed"] == expected == res["decision"]["variant"], (lin, deep)
    # the reason says so where the rule chose the linear model over one that validated higher
    assert ("the simpler rerank-linear is chosen" in res["decision"]["reason"]) == (lin < deep <= lin + OCCAM_MARGIN)
    d = IndexDir(tmp_path / "idx")
    assert json.loads((d.reranker_path / "config.json").read_text())["name"] == expected
    assert d.rerank_vectors_path.exists() == (expected == "rerank-cross+pair")  # vectors only for the fusion model
    assert {"rerank-linear vs hybrid (top 100)", "rerank-cross+pair vs rerank-linear"} <= set(res["comparisons"])
    assert np.isfinite(lin) and np.isfinite(deep)
