"""Settings per layer: the service's apart from the index's and models'; thread counts set by the entry point,
never by a constructor."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from ticketsearch.retrieval.threads import apply_threads
from ticketsearch.retrieval.vector_index import VectorIndex
from ticketsearch.service.settings import ServiceSettings
from ticketsearch.settings import Settings


def test_the_service_settings_are_apart_from_the_index_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert set(Settings.model_fields).isdisjoint(ServiceSettings.model_fields)
    assert {"api_keys", "webhook_secrets", "port", "workers"} <= set(ServiceSettings.model_fields)
    key = "secret-key-7f3a9c:read"  # long enough not to turn up by chance (a temporary folder's name held "k1")
    monkeypatch.setenv("TICKETSEARCH_API_KEYS", key)
    monkeypatch.setenv("TICKETSEARCH_SEARCH_THREADS", "3")
    assert ServiceSettings().api_keys == key and Settings().search_threads == 3
    assert "secret-key" not in repr(ServiceSettings()) and "secret-key" not in Settings().model_dump_json()


def test_no_constructor_sets_the_process_thread_count(tmp_path) -> None:  # noqa: ANN001
    before = faiss.omp_get_max_threads()
    other = 1 if before != 1 else 2
    settings = Settings(search_threads=other)
    vecs = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    idx = VectorIndex.build(np.arange(50), vecs, kind="flat", settings=settings)
    idx.save(tmp_path / "v.faiss")
    VectorIndex.load(tmp_path / "v.faiss", "flat", settings)
    assert faiss.omp_get_max_threads() == before
    try:
        apply_threads(settings)  # the entry point's call
        assert faiss.omp_get_max_threads() == other
    finally:
        faiss.omp_set_num_threads(before)
