"""Shared service fixtures: an index of generated tickets, and a copy of it with a trained reranker."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ticketsearch.index_data.demo import generate
from ticketsearch.index_data.ingest import ingest_file
from ticketsearch.index_data.schema import load_schema
from ticketsearch.index_data.store import TicketStore
from ticketsearch.retrieval.builder import build_index
from ticketsearch.index_dir import IndexDir
from ticketsearch.service.cli import app

runner = CliRunner()


@pytest.fixture(scope="session")
def index_dir(tmp_path_factory: pytest.TempPathFactory, encoder, settings) -> Path:
    root = tmp_path_factory.mktemp("rr")
    data = root / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in generate(1000, seed=11)))
    with TicketStore(IndexDir(root / "idx").store_path, schema=load_schema("support")) as store:
        ingest_file(store, data, progress=False)
        build_index(root / "idx", store, encoder, "minilm", settings=settings, progress=False)
    return root / "idx"


@pytest.fixture(scope="session")
def trained_index(index_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("trained") / "idx"
    shutil.copytree(index_dir, target)
    res = runner.invoke(app, ["train", "--index", str(target), "--epochs", "3", "-q"])
    assert res.exit_code == 0, res.output
    assert "installed rerank-cross+pair" in res.output
    cfg = json.loads((IndexDir(target).reranker_path / "config.json").read_text())
    assert {"a", "b"} <= set(cfg["calibration"]) and cfg["features"]["schema"]["name"] == "support"
    assert (IndexDir(target).reranker_path / "model.safetensors").is_file()
    return target


