"""Live indexes: after upserts and deletes they answer as an index rebuilt from the final data would."""

from __future__ import annotations

import numpy as np
import pytest

from ticketsearch.errors import TicketsearchError
from ticketsearch.retrieval.lexical import BM25Index, tokenize
from ticketsearch.retrieval.live import LiveBM25, LiveVectors, RowVectors
from ticketsearch.retrieval.vector_index import VectorIndex
from ticketsearch.settings import Settings


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
    live.upsert(upd, new, seq=1)
    truth.update(zip(upd.tolist(), new))
    gone = np.array([5, 6, 310, 299])
    live.delete(gone, seq=2)
    for g in gone.tolist():
        truth.pop(g)
    assert live.ids().tolist() == sorted(truth)
    assert np.allclose(live.reconstruct(7), truth[7]) and np.allclose(live.reconstruct(305), truth[305])
    with pytest.raises(KeyError):
        live.reconstruct(5)
    # many at once: the same vectors as one at a time, changed rows from the overlay, deleted and unknown rows
    # left out (the base holds 5 and 6 still, under the overlay's deletion)
    asked = [7, 305, 5, 0, 310, 1000, 299, 150]
    many = live.reconstruct_many(asked)
    assert sorted(many) == sorted(r for r in asked if r in truth)
    for r, v in many.items():
        np.testing.assert_array_equal(v, live.reconstruct(r))
    assert live.reconstruct_many([]) == {} and sorted(live.base.reconstruct_many([5, 1000, 7])) == [5, 7]
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
    compact = live.compacted(live.snapshot(2))
    assert sorted(compact.base.ids().tolist()) == sorted(truth) and compact.members.tolist() == sorted(truth)
    assert np.allclose(np.stack([compact.base.reconstruct(k) for k in keys]), mat)


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
    # score_rows (the reranker's pair input) sees the overlay: new text, 0 for a deletion
    assert live.score_rows("quokka", [3, 20, 0]).tolist() == pytest.approx(
        [float(live.search("quokka", 5, allowed=np.array([3]))[0][0]), float(s[0]), 0.0])
    # compact from a source read after change 2: only change 3 stays in the overlay
    final = {i: t for i, t in enumerate(texts)}
    final[3] = "quokka disk exploded"
    final[20] = "quokka quokka migration"
    live.rebuild = lambda: BM25Index.build(np.array(sorted(final)), [final[i] for i in sorted(final)])
    live.rebase(live.compacted(live.snapshot(2)))
    assert live.changes == {0: (3, None)} and live.stale == {0} and live.changed == 1
    assert 0 not in live.search("disk full node", 20)[1].tolist()
    assert live.search("quokka", 5)[1].tolist() == [20, 3] and len(live) == 20


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


def _vectors(kind: str, n: int = 300, seed: int = 0) -> tuple[LiveVectors, dict[int, np.ndarray], Settings]:
    rng = np.random.default_rng(seed)
    settings = Settings(hnsw_ef_search=256, ivf_nprobe=1000, exact_filter_max=0)
    vecs = unit(rng, n)
    live = LiveVectors(VectorIndex.build(np.arange(n), vecs, kind=kind, settings=settings))
    return live, dict(enumerate(vecs)), settings


def _same_answers(a: LiveVectors, b: LiveVectors | VectorIndex, seed: int = 5) -> None:
    assert a.ids().tolist() == sorted(b.ids().tolist())
    for i in a.ids().tolist()[::17]:
        assert np.allclose(a.reconstruct(i), b.reconstruct(i))
    for q in unit(np.random.default_rng(seed), 8):
        sa, ia = a.search(q, 10)
        sb, ib = b.search(q, 10)
        assert ia[0].tolist() == ib[0].tolist() and np.allclose(sa, sb, atol=1e-5)


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_vector_overlay_save_load_round_trip(kind: str, tmp_path) -> None:
    live, truth, settings = _vectors(kind)
    rng = np.random.default_rng(1)
    live.upsert(np.array([3, 400, 401]), unit(rng, 3), seq=7)
    live.delete([8, 401], seq=8)
    path = tmp_path / "vectors.overlay"
    live.save_overlay(path, live.snapshot(8))
    again = LiveVectors(live.base)
    assert again.load_overlay(path, min_seq=8) == 4
    assert again.changes.keys() == live.changes.keys() and again.stale == {3, 8} and len(again) == 300
    _same_answers(again, live)
    # an overlay from before the base it would land on (e.g. an ingest rebuilt the base since) is ignored
    assert LiveVectors(live.base).load_overlay(path, min_seq=9) is None
    assert LiveVectors(live.base).load_overlay(path, min_seq=8, tag="another model") is None
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(TicketsearchError, match="unreadable overlay"):
        LiveVectors(live.base).load_overlay(path, min_seq=0)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_compaction_equals_a_fresh_build_and_keeps_later_changes(kind: str) -> None:
    live, truth, settings = _vectors(kind)
    rng = np.random.default_rng(2)
    early = unit(rng, 30)
    live.upsert(np.arange(0, 30), early, seq=1)  # updates
    live.upsert(np.arange(300, 310), unit(rng, 10), seq=2)  # inserts
    live.delete(np.arange(30, 40), seq=3)
    snap = live.snapshot(3)
    compact = live.compacted(snap)  # built while later changes arrive
    late = unit(rng, 3)
    live.upsert(np.array([0, 500, 301]), late, seq=4)
    live.delete([50], seq=5)
    live.rebase(compact)
    assert set(live.changes) == {0, 500, 301, 50} and live.stale == {0, 301, 50}
    assert np.allclose(live.reconstruct(0), late[0]) and np.allclose(live.reconstruct(1), early[1])
    # equal to an index built from scratch out of the final vectors
    for i in range(30):
        truth[i] = early[i]
    truth.update(zip(range(300, 310), [snap.changes[r][1] for r in range(300, 310)]))
    for i in range(30, 40):
        truth.pop(i)
    truth.update({0: late[0], 500: late[1], 301: late[2]})
    truth.pop(50)
    keys = sorted(truth)
    fresh = VectorIndex.build(np.array(keys), np.stack([truth[k] for k in keys]), kind=kind, settings=settings)
    _same_answers(live, fresh)
    # folding the rest in gives the fresh index's rows exactly
    live.rebase(live.compacted(live.snapshot(5)))
    assert live.changed == 0 and live.base.ids().tolist() == keys
    _same_answers(live, fresh)


def test_row_vectors_overlay_round_trip_and_compaction(tmp_path) -> None:
    rv = RowVectors(np.array([4, 2, 9]), np.arange(12, dtype=np.float32).reshape(3, 4), dtype=np.float16)
    rv.upsert([2, 11], np.full((2, 4), 7.0), seq=3)
    rv.delete([9], seq=4)
    path = tmp_path / "rerank.overlay"
    rv.save_overlay(path, rv.snapshot(4), tag="abc")
    again = RowVectors(rv.base.rows, rv.base.vecs, dtype=np.float16)
    assert again.load_overlay(path, 4, tag="abc") == 3
    assert again.rows().tolist() == [2, 4, 11] and again.get([11, 4]).tolist() == [[7.0] * 4, [0, 1, 2, 3]]
    assert 9 not in again and 11 in again
    with pytest.raises(KeyError):
        again.get([9])
    compact = again.compacted(again.snapshot(4))
    again.upsert([4], np.ones((1, 4)), seq=5)
    again.rebase(compact)
    assert again.base.rows.tolist() == [2, 4, 11] and again.base.vecs.dtype == np.float16
    assert list(again.changes) == [4] and again.get([4, 2]).tolist() == [[1.0] * 4, [7.0] * 4]
