from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ticketsearch.retrieval.vector_index import VectorIndex, choose_kind
from ticketsearch.settings import Settings


def unit(rng: np.random.Generator, n: int, d: int = 32) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture()
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = np.arange(1000, 3000, 2, dtype=np.int64)  # sparse, non-contiguous row ids
    return ids, unit(rng, len(ids))


def exact(vecs: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int, allowed=None) -> np.ndarray:
    mask = np.ones(len(ids), bool) if allowed is None else np.isin(ids, allowed)
    s = vecs[mask] @ q
    return ids[mask][np.argsort(-s, kind="stable")[:k]]


def test_auto_kind_by_size() -> None:
    s = Settings(flat_max_rows=100)
    assert choose_kind(100, s) == "flat"
    assert choose_kind(101, s) == "hnsw"
    assert choose_kind(5, Settings(index_type="ivf")) == "ivf"


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_search_returns_row_ids_and_matches_exact(kind: str, data) -> None:
    ids, vecs = data
    idx = VectorIndex.build(ids, vecs, kind=kind, settings=Settings(ivf_nprobe=64))
    assert idx.ntotal == len(ids) and idx.kind == kind
    scores, got = idx.search(vecs[10], 1)
    assert got[0, 0] == ids[10] and abs(scores[0, 0] - 1.0) < 1e-5
    truth = exact(vecs, ids, vecs[5], 10)
    overlap = len(set(idx.search(vecs[5], 10)[1][0]) & set(truth))
    assert overlap >= (10 if kind == "flat" else 8)


@pytest.mark.parametrize("kind, exact_max", [("flat", 0), ("hnsw", 0), ("hnsw", 10_000), ("ivf", 0)])
def test_filtered_search_returns_k_when_k_exist(kind: str, exact_max: int, data) -> None:
    ids, vecs = data
    idx = VectorIndex.build(ids, vecs, kind=kind, settings=Settings(exact_filter_max=exact_max, ivf_nprobe=4))
    rng = np.random.default_rng(1)
    allowed = np.sort(rng.choice(ids, size=25, replace=False))
    q = unit(rng, 1)[0]
    _, got = idx.search(q, 20, allowed)
    assert (got[0] >= 0).sum() == 20
    assert set(got[0]) <= set(allowed)
    if kind == "flat" or exact_max:
        assert list(got[0]) == list(exact(vecs, ids, q, 20, allowed))


def test_filtered_search_with_fewer_than_k(data) -> None:
    ids, vecs = data
    idx = VectorIndex.build(ids, vecs, kind="flat", settings=Settings())
    _, got = idx.search(vecs[0], 10, np.array([ids[0], ids[1]]))
    assert list(got[0][:2]) == [ids[0], ids[1]] and (got[0][2:] == -1).all()
    _, none = idx.search(vecs[0], 5, np.array([], dtype=np.int64))
    assert (none == -1).all()


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_save_load_gives_identical_results(kind: str, data, tmp_path: Path) -> None:
    ids, vecs = data
    idx = VectorIndex.build(ids, vecs, kind=kind, settings=Settings())
    idx.save(tmp_path / "v.faiss")
    again = VectorIndex.load(tmp_path / "v.faiss", kind, Settings())
    q = vecs[:7]
    a, b = idx.search(q, 15), again.search(q, 15)
    assert np.array_equal(a[1], b[1]) and np.allclose(a[0], b[0])
    assert np.allclose(again.reconstruct(ids[3]), vecs[3])
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary files left behind


def test_remove_and_add(data) -> None:
    ids, vecs = data
    idx = VectorIndex.build(ids, vecs, kind="flat", settings=Settings())
    assert idx.remove(ids[:2]) == 2
    assert ids[0] not in set(idx.search(vecs[0], 5)[1][0])
    idx.add(ids[:1], vecs[:1])
    assert idx.search(vecs[0], 1)[1][0, 0] == ids[0]


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_added_vectors_are_searchable_and_reconstructable(kind: str, data) -> None:
    ids, vecs = data
    idx = VectorIndex.build(ids[:-10], vecs[:-10], kind=kind, settings=Settings())
    idx.add(ids[-10:], vecs[-10:])
    assert np.allclose(idx.reconstruct(ids[-1]), vecs[-1])
    _, got = idx.search(vecs[-1], 5, np.array(ids[-10:]))
    assert got[0, 0] == ids[-1]


def test_automatic_choice_switches_at_the_threshold() -> None:
    from ticketsearch.retrieval.vector_index import choose_kind
    from ticketsearch.settings import Settings

    s = Settings(flat_max_rows=1000)
    assert choose_kind(1000, s) == "flat" and choose_kind(1001, s) == "hnsw"
    assert choose_kind(10, Settings(index_type="ivf")) == "ivf"


def test_recall_measurement_on_a_small_clustered_set() -> None:
    from ticketsearch.retrieval.recall import clustered, recall_at_k
    from ticketsearch.settings import Settings

    vecs, queries = clustered(3000, dim=32, seed=1, queries=50)
    ids = np.arange(len(vecs), dtype=np.int64)
    _, truth = VectorIndex.build(ids, vecs, kind="flat", settings=Settings()).search(queries, 20)
    assert recall_at_k(truth, truth) == 1.0
    good = VectorIndex.build(ids, vecs, kind="hnsw", settings=Settings(hnsw_ef_search=200))
    assert recall_at_k(good.search(queries, 20)[1], truth) >= 0.95
    poor = VectorIndex.build(ids, vecs, kind="ivf", settings=Settings(ivf_nprobe=1))
    r_poor = recall_at_k(poor.search(queries, 20)[1], truth)
    assert r_poor < 0.95  # one probed list out of many misses neighbours: the measure can tell them apart
    rng = np.random.default_rng(0)
    assert recall_at_k(rng.integers(0, len(vecs), size=truth.shape), truth) < 0.05
