"""Live indexes: after upserts and deletes they answer as an index rebuilt from the final data would."""

from __future__ import annotations

import numpy as np
import pytest

from ticketsearch.settings import Settings
from ticketsearch.retrieval.lexical import BM25Index, tokenize
from ticketsearch.retrieval.live import LiveBM25, LiveVectors, RowVectors
from ticketsearch.retrieval.vector_index import VectorIndex


def unit(rng: np.random.Generator, n: int, d: int = 16) -> np.ndarray:
    v = rng.normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_live_vectors_match_a_rebuild(kind: str) -> None:
    rng = np.random.default_rng(0)
    settings = Settings(hnsw_ef_search=256, ivf_nprobe=1000, exact_filter_max=0)
    ids = np.arange(300, dtype=np.int64)
    vecs = unit(rng, 300)
    live = LiveVectors(VectorIndex.build(ids, vecs, kind=kind, settings=settings))
    truth = dict(zip(ids.tolist(), vecs))
    new = unit(rng, 60)
    upd = np.concatenate([np.arange(0, 40), np.arange(300, 320)])  # 40 updates, 20 inserts
    live.upsert(upd, new)
    truth.update(zip(upd.tolist(), new))
    gone = np.array([5, 6, 310, 299])
    live.delete(gone)
    for g in gone.tolist():
        truth.pop(g)
    assert live.ids().tolist() == sorted(truth)
    assert np.allclose(live.reconstruct(7), truth[7]) and np.allclose(live.reconstruct(305), truth[305])
    with pytest.raises(KeyError):
        live.reconstruct(5)
    keys = np.array(sorted(truth))
    mat = np.stack([truth[k] for k in keys])
    queries = unit(rng, 10)
    allowed = keys[::3]
    for q in queries:
        exact = keys[np.argsort(-(mat @ q), kind="stable")[:10]]
        _, got = live.search(q, 10)
        assert set(got[0].tolist()) == set(exact.tolist())
        sub = mat[::3] @ q
        exact_f = allowed[np.argsort(-sub, kind="stable")[:10]]
        _, got_f = live.search(q, 10, allowed=allowed)
        assert set(got_f[0].tolist()) == set(exact_f.tolist())
    compact = live.compacted()
    assert sorted(compact.ids().tolist()) == sorted(truth)


def test_live_bm25_scores_changes_with_the_base_statistics_and_rebases() -> None:
    texts = ["disk full on node", "node crashed at night", "disk quota exceeded", "login fails"] * 5
    base = BM25Index.build(np.arange(20), texts)
    live = LiveBM25(base)
    live.upsert([3], ["quokka disk exploded"], seq=1)  # update: the old text must not match
    live.upsert([20], ["quokka quokka migration"], seq=2)  # insert
    live.delete([0], seq=3)
    s, ids = live.search("quokka", 5)
    assert ids.tolist() == [20, 3]  # tf 2 beats tf 1
    assert 3 not in live.search("login fails", 20)[1].tolist()
    assert 0 not in live.search("disk full node", 20)[1].tolist()
    # a delta document scores as it would inside the base index (same statistics)
    d = base.score_tokens(tokenize(["disk node"])[0], tokenize([texts[0]]))[0]
    assert d == pytest.approx(base.scores("disk node")[0], rel=1e-5)
    # allowed filter applies to delta documents too
    assert live.search("quokka", 5, allowed=np.array([3]))[1].tolist() == [3]
    # rebase on a snapshot taken after change 2: only change 3 stays in the overlay
    final = {i: t for i, t in enumerate(texts)}
    final[3] = "quokka disk exploded"
    final[20] = "quokka quokka migration"
    snap = BM25Index.build(np.array(sorted(final)), [final[i] for i in sorted(final)])
    rebased = live.rebased(snap, snapshot_seq=2)
    assert rebased.delta == {} and rebased.deleted == {0: 3} and rebased.stale == {0}
    assert 0 not in rebased.search("disk full node", 20)[1].tolist()


def test_row_vectors_upsert_delete_reuse_slots() -> None:
    rv = RowVectors(np.array([3, 1]), np.eye(2, 4, dtype=np.float32))
    rv.upsert([5, 1], np.array([np.ones(4), 2 * np.ones(4)]))
    rv.delete([3])
    rv.upsert([7], np.array([3 * np.ones(4)]))
    rows, vecs = rv.compact()
    assert rows.tolist() == [1, 5, 7] and vecs[:, 0].tolist() == [2, 1, 3]
    assert 3 not in rv and 7 in rv and len(rv) == 3


def test_row_vectors_in_half_precision_read_back_close() -> None:
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(50, 8)).astype(np.float32)
    rv = RowVectors(np.arange(50), vecs, dtype=np.float16)
    got = rv.get(list(range(50)))
    assert got.dtype == np.float32 and np.allclose(got, vecs, rtol=1e-3, atol=1e-3)
    assert rv.compact()[1].dtype == np.float16
    with pytest.raises(ValueError):
        RowVectors(np.arange(2), vecs[:2], dtype=np.int8)
