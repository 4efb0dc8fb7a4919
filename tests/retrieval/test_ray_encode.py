"""Index builds on Ray (a local Ray instance, num_cpus=2), the input read and validated and the texts encoded
there: the same vectors and the same answers as a local build, and a build that resumes from the embedding
cache."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ticketsearch.pipeline.parts import open_store

from ..demo_rows import generate

pytestmark = pytest.mark.ray
QUERIES = ["customers were charged twice", "the app crashes when I log in", "export to CSV is slow",
           "password reset email never arrives", "dashboard shows the wrong totals"]


@pytest.fixture(scope="module")
def ray_encoding(local_ray, settings) -> Iterator:  # noqa: ANN001
    from ticketsearch.retrieval.ray_encode import RayEncoding

    remote = RayEncoding("minilm", settings, num_cpus=2)
    yield remote
    remote.close()  # leaves the session's Ray running (it did not start it)


def build(root: Path, rows: list[dict], encoder, settings, remote=None, before=None):  # noqa: ANN001, ANN201
    from ticketsearch.index_data.ingest import ingest_file
    from ticketsearch.index_data.schema import load_schema
    from ticketsearch.index_data.store import TicketStore
    from ticketsearch.index_dir import IndexDir
    from ticketsearch.pipeline.ingest import build_index
    from ticketsearch.pipeline.rerank_vectors import refresh_rerank_vectors

    root.mkdir(parents=True, exist_ok=True)
    data = root / "t.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with TicketStore(IndexDir(root / "idx").store_path, schema=load_schema("support")) as store:
        ingest_file(store, data, progress=False, executor="ray" if remote is not None else "local")
        if before is not None:
            before(store)
        report = build_index(root / "idx", store, encoder, "minilm", settings=settings, progress=False, remote=remote)
        # the ingest workflow's last step (pipeline/ingest.py): the installed reranker's vectors, tokens on Ray
        report.rerank_vectors = refresh_rerank_vectors(IndexDir(root / "idx"), store, encoder, False, remote)
    return root / "idx", report


def cache(index: Path) -> dict[tuple[str, str], np.ndarray]:
    from ticketsearch.index_dir import IndexDir

    with open_store(IndexDir(index)) as store:
        return store.all_embeddings()


def answers(index: Path) -> list[list[str]]:
    from ticketsearch.api import TicketIndex

    with TicketIndex.open(index) as idx:
        return [[h.id for h in idx.search(q, k=10).hits] for q in QUERIES]


def test_a_ray_build_resumed_from_the_cache_equals_a_local_build(ray_encoding, encoder, settings, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """One Ray pass: a build interrupted after 25 of 60 tickets (their vectors in the cache) is resumed on Ray;
    it encodes only the 35 missing, and the index equals a local build: the same vectors, the same answers. On
    the way one encoder worker dies (its process exits mid-batch): Ray restarts it and retries the batch."""
    import os

    import ticketsearch.retrieval.ray_encode as ray_encode
    from ticketsearch.index_data.records import text_hash, ticket_text
    from ticketsearch.index_data.schema import load_schema

    crash = tmp_path / "crash-once"
    crash.touch()
    real = ray_encode.EncodeBatch

    class DiesOnce(real):  # type: ignore[misc, valid-type]  # defined here: Ray ships it by value
        def __call__(self, batch):  # noqa: ANN001, ANN204
            try:  # the first batch any worker takes: the worker's process dies (one claim: two batches at once
                crash.unlink()  # both saw the file, and the second's unlink failed the run)
            except FileNotFoundError:
                return real.__call__(self, batch)
            os._exit(1)

    monkeypatch.setattr(ray_encode, "EncodeBatch", DiesOnce)

    rows = generate(60, seed=21)
    local, rep_local = build(tmp_path / "local", rows, encoder, settings)
    assert rep_local.encoded == 60
    schema = load_schema("support")
    first = [ticket_text(schema, r["title"], r.get("body", "")) for r in rows[:25]]

    def interrupted(store) -> None:  # noqa: ANN001
        store.put_embeddings(encoder.key, [text_hash(t) for t in first], encoder.encode(first))

    on_ray, rep = build(tmp_path / "ray", rows, encoder, settings, remote=ray_encoding, before=interrupted)
    assert rep.encoded == 35 and rep.cached == 25, rep  # only what the cache lacked went to Ray
    assert not crash.exists()  # a worker did die, and its batch was encoded all the same
    a, b = cache(local), cache(on_ray)
    assert set(a) == set(b) and len(a) >= 100  # every ticket's text and title, under their keys
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) < 1e-5
    assert answers(on_ray) == answers(local)


def test_a_ray_build_encodes_the_rerankers_token_states_there(ray_encoding, trained_index: Path, encoder, settings,
                                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An index with a reranker installed: a Ray build also encodes the token states (on the workers) and
    computes the candidate vectors from them; both equal those of a local pass over the same tickets."""
    import shutil

    from ticketsearch.index_data.records import text_hash, ticket_text
    from ticketsearch.index_data.schema import load_schema
    from ticketsearch.index_dir import IndexDir
    from ticketsearch.pipeline.rerank_vectors import build_rerank_vectors, token_cache_for

    rows = generate(40, seed=23)
    for name in ("local", "ray"):
        (tmp_path / name / "idx").mkdir(parents=True)
        shutil.copytree(trained_index / "reranker", tmp_path / name / "idx" / "reranker")
    local, _ = build(tmp_path / "local", rows, encoder, settings)
    with open_store(IndexDir(local), read_only=False) as store:
        build_rerank_vectors(IndexDir(local), store, encoder, progress=False)  # what a local engine does at start
    def no_local_encoding(_encoder):  # noqa: ANN001, ANN202
        def encode(texts):  # noqa: ANN001, ANN202
            raise AssertionError(f"{len(texts)} token states encoded here, not on Ray")
        return encode

    import ticketsearch.pipeline.rerank_vectors as rv

    monkeypatch.setattr(rv, "token_encode_fn", no_local_encoding)
    on_ray, _ = build(tmp_path / "ray", rows, encoder, settings, remote=ray_encoding)
    monkeypatch.undo()
    schema = load_schema("support")
    hashes = [text_hash(ticket_text(schema, r["title"], r.get("body", ""))) for r in rows]
    a, b = token_cache_for(IndexDir(local), encoder), token_cache_for(IndexDir(on_ray), encoder)
    assert all(h in b for h in hashes)
    for h in hashes:
        assert np.array_equal(a.get(h).ids, b.get(h).ids)
        assert float(np.abs(a.get(h).states.astype(np.float32) - b.get(h).states.astype(np.float32)).max()) < 2e-2
    va, vb = np.load(IndexDir(local).rerank_vectors_path), np.load(IndexDir(on_ray).rerank_vectors_path)
    assert va.shape == vb.shape == (40, va.shape[1]) and float(np.abs(va.astype(np.float32) - vb).max()) < 2e-2
    assert answers(on_ray) == answers(local)
