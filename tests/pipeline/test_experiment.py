"""`ticketsearch experiment` end to end on generated tickets (the shared data is never needed)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from ticketsearch.index_dir import IndexDir
from ticketsearch.service.cli import app

runner = CliRunner()


def test_experiment_writes_results_and_reuses_embeddings(demo_file: Path, tmp_path: Path) -> None:
    args = ["experiment", "--data", str(demo_file), "--schema", "support", "--train-before", "2024-09-01",
            "--test-since", "2024-12-01", "--out", str(tmp_path / "exp"), "-q", "--no-rerank", "--no-tune-encoder"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "[4/6]" in res.output and "[6/6]" not in res.output and "| hybrid |" in res.output
    results = json.loads((tmp_path / "exp" / "results.json").read_text())
    methods = results["methods"]
    assert {"bm25", "dense", "hybrid", "hybrid-rrf-plain", "title-dense"} <= set(methods)
    for m in methods.values():
        assert m["queries"] > 5
        assert 0.0 <= m["RR@1"] <= m["RR@5"] <= m["RR@10"] <= m["RR@20"] <= m["RR@100"] <= 1.0
        assert 0.0 < m["MRR"] <= 1.0
    # generated duplicates are reworded but findable. Measured on this fixture (21 test queries): RR@10 .952 / 1.0 /
    # 1.0 / 1.0 for bm25, dense, plain RRF and hybrid, MRR .637 / .717 / .704 / .791, title-dense .810 / .498; a
    # shuffled top 100 gets ~.04. Floors a broken stage misses, with room for the last digits of another machine:
    for name in ("bm25", "dense", "hybrid", "hybrid-rrf-plain"):
        assert methods[name]["RR@10"] >= 0.9 and methods[name]["MRR"] >= 0.6, (name, methods[name])
    assert methods["title-dense"]["RR@10"] >= 0.75 and methods["title-dense"]["MRR"] >= 0.45
    assert methods["hybrid"]["MRR"] >= min(methods["dense"]["MRR"], methods["bm25"]["MRR"])  # fusion never the worst
    assert results["window"]["methods"]["dense"]["queries"] <= methods["dense"]["queries"]
    md = (tmp_path / "exp" / "results.md").read_text()
    assert "Test period, no window" in md and "365-day window" in md
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "encoded 0" in again.output
    assert json.loads((tmp_path / "exp" / "results.json").read_text())["methods"] == methods


def test_evaluate_command(demo_file: Path, tmp_path: Path, built_index: Path) -> None:
    out = tmp_path / "eval.json"
    res = runner.invoke(app, ["evaluate", "--index", str(built_index), "--since", "2024-06-01", "--window-days",
                              "365", "--out", str(out), "--query", "full,title"])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["methods"]["bm25"]["queries"] > 0 and data["window_days"] == 365
    full, title = data["queries"]["full"], data["queries"]["title"]
    assert full == data["methods"] and "### title queries" in res.output
    assert title["hybrid"]["queries"] == full["hybrid"]["queries"] and title["dense"]["MRR"] != full["dense"]["MRR"]
    assert title["title-dense"]["MRR"] == full["title-dense"]["MRR"]  # a title query is the title's own vector
    bad = runner.invoke(app, ["evaluate", "--index", str(built_index), "--since", "2024-06-01", "--query", "words"])
    assert bad.exit_code == 2 and "--query must be full, title or words:N" in bad.stderr
    bad = runner.invoke(app, ["evaluate", "--index", str(built_index), "--since", "someday"])
    assert bad.exit_code == 2 and "--since" in bad.stderr


def test_experiment_adds_reranker_rows(demo_file: Path, tmp_path: Path) -> None:
    args = ["experiment", "--data", str(demo_file), "--schema", "support", "--train-before", "2024-09-01",
            "--test-since", "2024-12-01", "--out", str(tmp_path / "exp"), "-q", "--rerank-budget", "10",
            "--query", "full", "--query", "words:6", "--tune-budget", "10"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    results = json.loads((tmp_path / "exp" / "results.json").read_text())
    rows = results["methods"]
    short = results["queries"]["kinds"]["words:6"]["methods"]  # first-stage and reranked rows per query kind
    assert short["rerank-general"]["queries"] == short["hybrid"]["queries"] == rows["hybrid"]["queries"]
    assert short["rerank-cross+pair"]["RR@100"] == short["hybrid"]["RR@100"]  # reranking reorders the top 100
    assert short["hybrid"]["MRR"] != rows["hybrid"]["MRR"]  # six words are another query than the ticket
    assert "words:6 queries" in (tmp_path / "exp" / "results.md").read_text()
    for name in ("rerank-concat", "rerank-cross", "rerank-cross+pair", "rerank-cross-shuffled"):
        assert rows[name]["queries"] == rows["hybrid"]["queries"]
        assert rows[name]["RR@100"] == rows["hybrid"]["RR@100"]  # reranking only reorders the top 100
    assert "rerank-cross vs rerank-concat" in results["rerank"]["comparisons"]
    decision = results["rerank"]["decision"]  # do no harm: installed only where validation shows no loss
    has_model = IndexDir(tmp_path / "exp" / "index").has_reranker()
    assert decision["install"] is has_model or decision.get("use") == "general"
    if decision["install"]:
        assert decision["valid_mrr"] >= decision["first_stage_valid_mrr"], decision
    for table in ("window", "no_easy"):  # the reranked rows in every table, over the same queries
        t = results[table]["methods"]
        assert t["rerank"]["queries"] == t["hybrid"]["queries"] and t["rerank"]["RR@100"] == t["hybrid"]["RR@100"]
        # the row a user gets: the installed model's, or the general model's where it reranks
        assert t["rerank"] == t[decision["variant"] if has_model else "rerank-general"]
    assert has_model == decision["install"] and (has_model or decision["use"] == "general"), decision
    # the tuned encoder's rows, in every table, over the same queries (installed or not, as validation says)
    tune = results["tune_encoder"]
    for table in (rows, short, results["window"]["methods"], results["validation"]["methods"]):
        assert table["dense-tuned"]["queries"] == table["dense"]["queries"]
        assert table["hybrid-tuned"]["queries"] == table["hybrid"]["queries"]
    assert rows["dense-tuned"]["MRR"] != rows["dense"]["MRR"]  # another encoder ranks otherwise
    assert {"dense-tuned vs dense", "hybrid-tuned vs hybrid"} <= set(tune["test_comparisons"])
    assert results["reranks"] == ("hybrid-tuned" if tune["installed"] else "hybrid")
    assert tune["reason"] in (tmp_path / "exp" / "results.md").read_text()
    # the index an experiment leaves reranks (the installed model's candidate vectors are there)
    from ticketsearch import TicketIndex

    with TicketIndex.open(tmp_path / "exp" / "index") as idx:
        found = idx.search("refund", k=3)
    assert found.reranked and any("reranked the top" in n for n in found.notes), found.notes
