"""The rerank-cross+pair+code variant: cross+pair with the agreement of the two texts' code terms (stack frames,
exception classes, error codes) as two more pair inputs, trained and served (`pair_features.code_agreement`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from ticketsearch.index_dir import IndexDir
from ticketsearch.pipeline.search import SearchPipeline
from ticketsearch.requests import SearchRequest
from ticketsearch.rerank.pair_features import CODE_COLUMNS, pair_dim
from ticketsearch.rerank.runtime import Reranker
from ticketsearch.service.cli import app
from ticketsearch.settings import Settings


def test_the_code_variant_trains_and_serves_on_both_runtimes(trained_index: Path, tmp_path: Path) -> None:
    """Installed as asked, the variant's model says it reads code terms and has CODE_COLUMNS more pair inputs;
    search reranks with it through ONNX Runtime and through torch alike, and its pair inputs for a query with
    an error code (the demo's QUOTA_EXCEEDED tickets) agree with the candidates that share the code."""
    idx = tmp_path / "idx"
    shutil.copytree(trained_index, idx)
    res = CliRunner().invoke(app, ["train", "--index", str(idx), "--variant", "rerank-cross+pair+code", "--epochs",
                                   "1", "--install", "always", "--validation-folds", "0",
                                   "-q"])  # one epoch: checked are its files and serving
    assert res.exit_code == 0, res.output
    d = IndexDir(idx)
    cfg = json.loads((d.reranker_path / "config.json").read_text())
    rr = Reranker(d.reranker_path)
    assert cfg["model"]["code"] is True and rr.code
    assert cfg["model"]["pair_dim"] == pair_dim(rr.schema, False, True) == pair_dim(rr.schema) + CODE_COLUMNS
    answers: dict[str, tuple[list[str], np.ndarray]] = {}
    for runtime in ("onnx", "torch"):
        s = SearchPipeline(idx, Settings(rerank_runtime=runtime))
        try:
            req = SearchRequest.of("Getting QUOTA_EXCEEDED from the API since this morning", k=10)
            found = s.run(req)
            assert found.reranked and (found.reranker or "").startswith("rerank-cross+pair+code@"), found.reranker
            answers[runtime] = ([h.id for h in found.hits], np.array([h.rerank_score for h in found.hits], float))
            q, cands = s.retrieve(req, "hybrid", s.rerank_depth, tokens=True, rerank=True)
            s.complete(q, cands, s.rerank_depth)
            rows = s.candidate_rows(cands, cands.row_ids[: s.rerank_depth])
            pair = s.pair_inputs(q, cands, rows)
            assert pair is not None and pair.shape == (len(rows), pair_dim(rr.schema, False, True))
            bodies = s.bodies([t.id for t in rows])
            shares = ["QUOTA_EXCEEDED" in f"{t.title} {bodies[t.id]}" for t in rows]
            assert any(shares) and np.array_equal(pair[:, -2] > 0, np.array(shares))
        finally:
            s.close()
    assert answers["onnx"][0] == answers["torch"][0]
    assert np.allclose(answers["onnx"][1], answers["torch"][1], atol=1e-3)
