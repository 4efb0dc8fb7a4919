from __future__ import annotations

import json
from pathlib import Path

import pytest

from ticketsearch.settings import Settings
from ticketsearch.index_data.demo import generate


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def encoder(settings: Settings):
    from ticketsearch.retrieval.encoder import Encoder

    return Encoder("minilm", settings=settings)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def demo_rows() -> list[dict]:
    return generate(300, seed=7)


@pytest.fixture(scope="session")
def demo_file(tmp_path_factory: pytest.TempPathFactory, demo_rows: list[dict]) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "demo.jsonl", demo_rows)


@pytest.fixture(scope="session")
def built_index(tmp_path_factory: pytest.TempPathFactory, demo_file: Path, encoder, settings: Settings) -> Path:
    """A real index directory: DuckDB store + FAISS index over 300 generated tickets, built with MiniLM."""
    from ticketsearch.index_data.ingest import ingest_file
    from ticketsearch.index_data.schema import load_schema
    from ticketsearch.index_data.store import TicketStore
    from ticketsearch.retrieval.builder import build_index
    from ticketsearch.index_dir import IndexDir

    index_dir = tmp_path_factory.mktemp("index")
    with TicketStore(IndexDir(index_dir).store_path, schema=load_schema("support")) as store:
        ingest_file(store, demo_file, progress=False)
        build_index(index_dir, store, encoder, "minilm", settings=settings, progress=False)
    return index_dir
