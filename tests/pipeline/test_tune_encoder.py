"""Tuning the bi-encoder on an index's own links (ticketsearch/pipeline/tune_encoder.py).

The generated tickets name each product by a team codename in the first report ("Falcon: crashes on login")
and by what it is in the duplicate ("The mobile app crashes on login"). A general-purpose encoder cannot tell
which codename a duplicate means (every codename has every problem); the links of the train period teach it.
"""

from __future__ import annotations

import json
import random
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ticketsearch.index_dir import IndexDir
from ticketsearch.pipeline.parts import load_manifest, open_store
from ticketsearch.pipeline.tune_encoder import TuneConfig, TuneExample, group_safe_batches, tune_index
from ticketsearch.service.cli import app
from ticketsearch.settings import Settings

CODENAMES = ["Falcon", "Orchid", "Basalt", "Juniper", "Quartz", "Tundra", "Marlin", "Cobalt"]
PRODUCTS = ["the mobile app", "the billing portal", "the reporting dashboard", "the email gateway",
            "the search service", "the admin console", "the payments API", "the file uploader"]
PROBLEMS = ["crashes on login", "times out when saving", "shows a blank page", "sends duplicate notifications",
            "rejects valid passwords", "loses uploaded files", "displays wrong totals", "is slow at night",
            "logs users out at random", "fails to export CSV"]
OPENERS = ["Since this morning", "After the update", "A customer reports that", "Again:"]


def codename_tickets(seed: int = 0) -> list[dict]:
    """Every (codename, problem) reported once in 2024 by codename; then duplicates naming the product, the
    first 60% (by date) in early 2025 and the rest later (the validation period)."""
    rng = random.Random(seed)
    rows: list[dict] = []
    start = datetime(2024, 1, 1)
    combos = [(c, p) for c in range(len(CODENAMES)) for p in range(len(PROBLEMS))]
    for n, (c, p) in enumerate(combos):
        created = start + timedelta(days=rng.uniform(0, 300))
        rows.append({"id": f"M-{n}", "created": created.isoformat(), "duplicate_of": None,
                     "title": f"{CODENAMES[c]}: {PROBLEMS[p]}",
                     "body": f"{rng.choice(OPENERS)} {CODENAMES[c]} {PROBLEMS[p]}. Please investigate.",
                     "fields": {"product": CODENAMES[c]}})
    rng.shuffle(combos)
    for n, (c, p) in enumerate(combos):
        created = datetime(2025, 1, 1) + timedelta(days=n * 2 + rng.uniform(0, 1))
        product = PRODUCTS[c]
        rows.append({"id": f"D-{n}", "created": created.isoformat(), "duplicate_of": f"M-{c * len(PROBLEMS) + p}",
                     "title": f"{product[0].upper()}{product[1:]} {PROBLEMS[p]}",
                     "body": f"{rng.choice(OPENERS)} {product} {PROBLEMS[p]}.", "fields": {}})
    return rows


@pytest.fixture(scope="module")
def codename_index(tmp_path_factory: pytest.TempPathFactory, encoder, settings) -> Path:
    from ticketsearch.index_data.ingest import ingest_file
    from ticketsearch.index_data.schema import load_schema
    from ticketsearch.index_data.store import TicketStore
    from ticketsearch.pipeline.ingest import build_index

    root = tmp_path_factory.mktemp("tune")
    data = root / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in codename_tickets()))
    with TicketStore(IndexDir(root / "idx").store_path, schema=load_schema("support")) as store:
        ingest_file(store, data, progress=False)
        build_index(root / "idx", store, encoder, "minilm", settings=settings, progress=False)
    return root / "idx"


def test_group_safe_batches_never_pair_a_group_with_itself() -> None:
    rng = np.random.default_rng(0)
    examples = [TuneExample(i, 1000 + i, 2000 + i, frozenset({int(rng.integers(100)), int(rng.integers(100))}))
                for i in range(200)]
    batches = group_safe_batches(examples, 16, seed=0)
    assert sorted(i for b in batches for i in b) == list(range(200))
    assert max(len(b) for b in batches) == 16
    for b in batches:
        seen: set[int] = set()
        for i in b:
            assert not examples[i].groups & seen, "two examples of one group share a batch"
            seen |= examples[i].groups


def test_tuning_learns_the_teams_codenames_and_every_cache_follows_it(codename_index: Path, tmp_path: Path,
                                                                      settings) -> None:
    from ticketsearch.api import TicketIndex
    from ticketsearch.retrieval.encoder import Encoder
    from ticketsearch.retrieval.manifest import TUNED_MODEL

    idx = tmp_path / "idx"
    shutil.copytree(codename_index, idx)
    d = IndexDir(idx)
    before = load_manifest(d)
    cfg = TuneConfig(budget_s=300, lr=1e-4, max_epochs=2, patience=2, batch_size=8)
    out = tune_index(idx, datetime(2025, 4, 1), datetime(2026, 1, 1), settings, cfg, progress=False,
                     log=lambda m: None, retrain=True)
    tune = out["tune"]
    assert tune["installed"], tune["reason"]
    cur, tuned = tune["validation"]["current"], tune["validation"]["tuned"]
    assert cur["dense"]["queries"] >= 25
    # the frozen encoder picks one of eight codenames at random; a broken loss (or none) stays there
    assert tuned["dense"]["MRR"] >= cur["dense"]["MRR"] + 0.2, tune["validation"]
    assert tuned["hybrid"]["MRR"] >= cur["hybrid"]["MRR"] + 0.15, tune["validation"]
    # and decided on the whole pipeline: a reranker trained on each first stage, what search would use on top
    reranked = tune["validation"]["reranked"]
    assert reranked["tuned"]["MRR"] > reranked["current"]["MRR"] and reranked["tuned"]["queries"] >= 25, reranked
    assert "reranked validation MRR" in tune["reason"]
    # installed: a sentence-transformers directory inside the index, with its own identity
    after = load_manifest(d)
    assert json.loads(d.manifest_path.read_text())["model"] == TUNED_MODEL
    assert (d.encoder_path / "model.safetensors").is_file() and (d.encoder_path / "modules.json").is_file()
    assert after.model_key != before.model_key and after.model_key == tune["encoder_key"]
    assert after.extra["tuned_from"] == "minilm" and after.fusion == tune["fusion"]
    assert not d.staged_encoder_path.exists()
    with open_store(d) as store:  # every ticket's embedding cached under the tuned key
        n = store.con.execute("SELECT count(*) FROM embedding_cache WHERE model_key = ?",
                              [after.model_key]).fetchone()[0]
        assert n >= store.count()
    # the reranker was retrained on the tuned encoder's token states (their own cache folder)
    assert "rerank" in out and d.token_cache_path(after.model_key).is_dir()
    assert d.token_cache_path(after.model_key) != d.token_cache_path(before.model_key)
    # the index moves with its encoder; search encodes queries with the tuned model
    moved = tmp_path / "moved"
    shutil.move(str(idx), moved)
    with TicketIndex.open(moved) as ti:
        assert ti.pipeline.encoder.key == after.model_key
        res = ti.search("The mobile app crashes on login", k=3)  # Falcon's first report and its duplicate
        assert "M-0" in [h.id for h in res.hits[:2]], [(h.id, h.title) for h in res.hits]
    tuned_vec = Encoder(str(IndexDir(moved).encoder_path), settings=Settings()).encode(["the mobile app"])[0]
    base_vec = Encoder("minilm", settings=Settings()).encode(["the mobile app"])[0]
    assert float(tuned_vec @ base_vec) < 0.999


def test_a_better_first_stage_whose_reranked_pipeline_is_no_better_is_not_installed(
        codename_index: Path, tmp_path: Path, settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tuned encoder's first stage validates better (as above), but the pipeline on it is made to validate
    no better than the current one: the current encoder stays, the index is untouched, and the reason says so.
    The checks themselves run for real (a reranker trained on each first stage)."""
    import ticketsearch.pipeline.tune_encoder as tune_mod

    real = tune_mod.reranked_validation
    seen: list[dict] = []

    def no_better(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        got = real(*args, **kwargs)
        assert got is not None
        seen.append(got)
        return got if len(seen) == 1 else {**got, "MRR": seen[0]["MRR"]}  # the tuned pipeline: a tie

    monkeypatch.setattr(tune_mod, "reranked_validation", no_better)
    idx = tmp_path / "idx"
    shutil.copytree(codename_index, idx)
    before = IndexDir(idx).manifest_path.read_text()
    cfg = TuneConfig(budget_s=300, lr=1e-4, max_epochs=2, patience=2, batch_size=8)
    out = tune_index(idx, datetime(2025, 4, 1), datetime(2026, 1, 1), settings, cfg, progress=False,
                     log=lambda m: None, retrain=True)
    tune = out["tune"]
    assert len(seen) == 2 and not tune["installed"]
    assert "the reranked pipeline on it does not" in tune["reason"], tune["reason"]
    assert tune["validation"]["tuned"]["hybrid"]["MRR"] > tune["validation"]["current"]["hybrid"]["MRR"]
    assert IndexDir(idx).manifest_path.read_text() == before and not IndexDir(idx).encoder_path.exists()
    assert "rerank" not in out and not (idx / ".pipeline-check").exists()


def test_tune_encoder_cli_keeps_the_frozen_model_when_nothing_improves(codename_index: Path, tmp_path: Path) -> None:
    """Too small a learning rate to change anything: the command says so with the figures, and the index is
    untouched."""
    idx = tmp_path / "idx"
    shutil.copytree(codename_index, idx)
    before = IndexDir(idx).manifest_path.read_text()
    res = CliRunner().invoke(app, ["tune-encoder", "--index", str(idx), "--train-before", "2025-04-01",
                                   "--valid-before", "2026-01-01", "--epochs", "1", "--lr", "1e-12", "-q"])
    assert res.exit_code == 0, res.output
    assert "kept the current encoder" in res.output and "hybrid RR@10" in res.output
    assert IndexDir(idx).manifest_path.read_text() == before and not IndexDir(idx).encoder_path.exists()
    bad = CliRunner().invoke(app, ["tune-encoder", "--index", str(tmp_path / "none"), "-q"])
    assert bad.exit_code == 2 and "no ticket store" in bad.output
