"""Do no harm: a trained reranker is installed only when it beats the first stage it reranks on validation
(ticketsearch/pipeline/install.py; its own cases in test_install.py), and search says why it keeps first-stage
order otherwise."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

from typer.testing import CliRunner

from ticketsearch.index_dir import IndexDir
from ticketsearch.pipeline.search import SearchPipeline
from ticketsearch.service.cli import app

from ..demo_rows import generate

runner = CliRunner()


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
    # pooled with the period before validation (its model trained on the same rewired links): still refused
    res = runner.invoke(app, ["train", "--index", str(index), "--train-before", tb, "--valid-before", vb,
                              "--epochs", "2", "--validation-folds", "1", "-q"])
    assert res.exit_code == 0, res.output
    assert "installed no reranker" in res.output
    assert not d.has_reranker() and (d.rerankers_path / "rerank-cross+pair" / "config.json").is_file()
    decision = d.load_rerank_decision()
    assert decision is not None and decision["install"] is False and decision["use"] in ("general", "first_stage")
    assert decision["valid_mrr"] < decision["first_stage_valid_mrr"]
    assert decision["folds"] == 1 and "the validation period and 1 earlier fold" in res.output
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
