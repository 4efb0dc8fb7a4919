"""Do no harm: a trained reranker is installed only when it beats the first stage it reranks on validation
(ticketsearch/pipeline/training.py), and search says why it keeps first-stage order otherwise."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from ticketsearch.index_dir import IndexDir
from ticketsearch.pipeline.search import SearchPipeline
from ticketsearch.pipeline.training import decide_install
from ticketsearch.service.cli import app

from ..demo_rows import generate

runner = CliRunner()


def test_decide_install_needs_a_validation_gain_over_the_first_stage() -> None:
    first = np.array([1, 2, 4, 1, 10, 3], dtype=float)  # MRR .514
    better = np.array([1, 1, 2, 1, 5, 3], dtype=float)
    worse = np.array([2, 2, 4, 3, 10, 3], dtype=float)
    yes = decide_install("rerank-cross+pair", better, first)
    assert yes.install and yes.delta is not None and yes.delta["diff"] > 0
    assert yes.first_stage_valid_mrr == float(np.mean(1 / first)) and yes.queries == 6
    no = decide_install("rerank-cross+pair", worse, first)
    assert not no.install and "does not beat the first stage" in no.reason and "first-stage order" in no.reason
    assert not decide_install("rerank-cross+pair", first.copy(), first).install  # a tie is no gain
    assert not decide_install("rerank-cross+pair", better, np.zeros(0)).install  # nothing to validate on
    assert not decide_install(None, None, first).install
    assert json.loads(json.dumps(no.to_dict()))["variant"] == "rerank-cross+pair"
    # the general model: chosen over an own model that validates below it, never over one above it
    assert decide_install("rerank-cross+pair", better, first, better).use == "own"  # a tie keeps the own model
    gen = decide_install("rerank-cross+pair", worse, first, better)
    assert gen.use == "general" and not gen.install and "general model validates best" in gen.reason
    assert decide_install("rerank-cross+pair", better, first, np.ones(6)).use == "general"  # general MRR 1.0
    assert decide_install("rerank-cross+pair", worse, first, worse).use == "first_stage"
    assert decide_install(None, None, first, better).use == "general"  # too few links to train one
    assert decide_install("rerank-cross+pair", better, np.zeros(0), np.zeros(0)).use == "general"


def test_install_always_installs_what_validation_would_refuse_and_still_reports_it() -> None:
    first = np.array([1, 2, 4, 1, 10, 3], dtype=float)
    worse = np.array([2, 2, 4, 3, 10, 3], dtype=float)
    better = np.array([1, 1, 2, 1, 5, 3], dtype=float)
    for general in (None, better):
        d = decide_install("rerank-cross+pair", worse, first, general, rule="always")
        assert d.install and d.use == "own" and d.delta is not None and d.delta["diff"] < 0
        assert "installed as asked" in d.reason and "against the first stage's" in d.reason
        assert not decide_install("rerank-cross+pair", worse, first, general).install  # auto refuses it
    assert decide_install("rerank-cross+pair", worse, np.zeros(0), rule="always").install  # nothing to validate on
    assert not decide_install(None, None, first, rule="always").install  # nothing was trained


def test_training_on_links_that_teach_nothing_installs_no_reranker(tmp_path: Path, encoder, settings) -> None:
    """Train-period links rewired to random earlier tickets teach the model nothing, while validation keeps
    the true links: the trained model loses to the first stage there, so it must not be installed, and a
    reranker installed before it is taken out."""
    rows = generate(600, seed=3)
    rng = random.Random(0)
    cut = len(rows) * 6 // 10
    for i, r in enumerate(rows[:cut]):
        if r["duplicate_of"] and i > 1:
            r["duplicate_of"] = rows[rng.randrange(0, i)]["id"]
    data = tmp_path / "noisy.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    index = tmp_path / "idx"
    res = runner.invoke(app, ["ingest", "--data", str(data), "--index", str(index), "--schema", "support"])
    assert res.exit_code == 0, res.output
    d = IndexDir(index)
    (d.reranker_path).mkdir()  # stands for a model installed by an earlier training
    (d.reranker_path / "config.json").write_text("{}")
    tb, vb = rows[cut]["created"][:10], rows[len(rows) * 8 // 10]["created"][:10]
    res = runner.invoke(app, ["train", "--index", str(index), "--train-before", tb, "--valid-before", vb,
                              "--epochs", "2", "-q"])
    assert res.exit_code == 0, res.output
    assert "installed no reranker" in res.output
    assert not d.has_reranker() and (d.rerankers_path / "rerank-cross+pair" / "config.json").is_file()
    decision = d.load_rerank_decision()
    assert decision is not None and decision["install"] is False and decision["use"] in ("general", "first_stage")
    assert decision["valid_mrr"] < decision["first_stage_valid_mrr"]
    # the general model (not trained on these links) reranks only where it beat the first stage on validation
    general = decision["use"] == "general"
    assert general == (decision["general_valid_mrr"] > decision["first_stage_valid_mrr"])
    s = SearchPipeline(index, settings=settings, encoder=encoder)
    try:
        out = s.search("customers were charged twice", k=3)
        assert (out.hits[0].rerank_score is not None) == general
        said = "the general model validates best" if general else "does not beat the first stage"
        assert said in res.output and any(said in n for n in out.notes), out.notes
    finally:
        s.close()
    shutil.rmtree(index)
