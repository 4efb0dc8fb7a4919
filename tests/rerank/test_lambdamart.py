"""The LambdaMART stage (rerank/lambdamart.py): fitted on ranked lists, saved as LightGBM text, trained as the
rerank-lambdamart variant and used by search when installed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from ticketsearch.index_dir import IndexDir
from ticketsearch.rerank.lambdamart import LTR_FILE, LambdaMART, ltr_inputs
from ticketsearch.service.cli import app
from ticketsearch.settings import Settings


def lists(n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Lists of 20 candidates whose one hit has the highest value of input 2 plus noise (inputs 0, 1: noise)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = rng.normal(size=(20, 3))
        y = np.zeros(20)
        hit = int(np.argmax(x[:, 2] + rng.normal(scale=0.3, size=20)))
        y[hit] = 1
        out.append((x, y))
    return out


def test_lambdamart_learns_a_ranking_and_round_trips_as_text(tmp_path: Path) -> None:
    train, valid, test = lists(300, 0), lists(60, 1), lists(100, 2)
    ltr = LambdaMART.fit(train, valid)
    first = [int(np.argsort(-ltr.predict(x))[0]) == int(np.argmax(y)) for x, y in test]
    assert np.mean(first) > 0.5  # chance is 0.05
    ltr.save(tmp_path)
    text = (tmp_path / LTR_FILE).read_text()
    assert text.startswith("tree")  # LightGBM's text format, not a pickle
    again = LambdaMART.load(tmp_path)
    assert again is not None and LambdaMART.load(tmp_path / "none") is None
    x = test[0][0]
    assert np.allclose(again.predict(x), ltr.predict(x))
    assert ltr_inputs(np.ones((4, 2)), np.arange(4.0)).shape == (4, 3)


def test_rerank_lambdamart_variant_trains_and_serves(trained_index: Path, tmp_path: Path) -> None:
    """On a copy of the trained index (its token states are cached: training here encodes nothing); installed
    as asked (`--install always`), the variant replaces the reranker the index had, and search reranks with it."""
    from ticketsearch.pipeline.search import SearchPipeline
    from ticketsearch.rerank.runtime import Reranker

    idx = tmp_path / "idx"
    shutil.copytree(trained_index, idx)
    res = CliRunner().invoke(app, ["train", "--index", str(idx), "--variant", "rerank-lambdamart", "--epochs", "1",
                                   "--install", "always", "--validation-folds", "0",
                                   "-q"])  # one epoch: checked are its files and serving
    assert res.exit_code == 0, res.output
    d = IndexDir(idx)
    variant = d.rerankers_path / "rerank-lambdamart"
    assert (variant / LTR_FILE).is_file()
    cfg = json.loads((variant / "config.json").read_text())
    assert cfg["ltr"]["method"] == "lambdamart" and cfg["ltr"]["trees"] >= 1
    rr = Reranker(variant)
    assert rr.ltr is not None
    rng = np.random.default_rng(0)
    src, tgt = rng.normal(size=rr.model.cfg.text_dim), rng.normal(size=(5, rr.model.cfg.text_dim))
    pair = rng.normal(size=(5, rr.model.cfg.pair_dim)).astype(np.float32)
    logits = rr.logits(src, tgt, pair)
    assert np.allclose(rr.score(src, tgt, pair), rr.ltr.predict(ltr_inputs(pair, logits)))
    # installed as asked (whatever validation says): search reranks with this variant, not the one before
    assert d.has_reranker() and (d.reranker_path / LTR_FILE).is_file() and "installed rerank-lambdamart" in res.output
    found = SearchPipeline(idx, Settings()).search("refund", k=3)
    assert found.reranked and (found.reranker or "").startswith("rerank-lambdamart@"), found.reranker
