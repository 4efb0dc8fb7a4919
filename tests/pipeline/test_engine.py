"""The engine's lock, and checkpoints that never stall searches (a real HNSW index, model and reranker)."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ticketsearch.index_data.records import normalize_row
from ticketsearch.index_data.store import TicketStore
from ticketsearch.index_dir import IndexDir
from ticketsearch.pipeline.engine import Engine, RWLock
from ticketsearch.pipeline.ingest import build_index
from ticketsearch.retrieval.lexical import BM25Index
from ticketsearch.retrieval.manifest import Manifest
from ticketsearch.retrieval.vector_index import VectorIndex
from ticketsearch.settings import Settings


def wait_until(cond: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.005)
    return bool(cond())


def start(target: Any) -> threading.Thread:
    th = threading.Thread(target=target, daemon=True)
    th.start()
    return th


# ---- RWLock -------------------------------------------------------------------------------------------
def test_many_readers_hold_the_lock_at_once() -> None:
    lock = RWLock()
    inside = threading.Barrier(8, timeout=5)  # broken (an error) unless all 8 readers are inside together
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            with lock.read():
                inside.wait()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [start(reader) for _ in range(8)]
    for th in threads:
        th.join(10)
    assert not errors and not any(th.is_alive() for th in threads)


def test_a_writer_excludes_readers_and_writers() -> None:
    lock = RWLock()
    entered: list[str] = []

    def reader() -> None:
        with lock.read():
            entered.append("reader")

    def writer() -> None:
        with lock.write():
            entered.append("writer")

    with lock.write():
        threads = [start(reader), start(writer)]
        time.sleep(0.3)
        assert entered == []
    for th in threads:
        th.join(5)
    assert sorted(entered) == ["reader", "writer"]


def test_a_waiting_writer_blocks_new_readers() -> None:
    lock = RWLock()
    events: list[str] = []
    release_first = threading.Event()

    def first_reader() -> None:
        with lock.read():
            events.append("r1 in")
            release_first.wait(5)
        events.append("r1 out")

    def writer() -> None:
        with lock.write():
            events.append("w in")
            time.sleep(0.1)
        events.append("w out")

    def second_reader() -> None:
        with lock.read():
            events.append("r2 in")

    r1 = start(first_reader)
    assert wait_until(lambda: "r1 in" in events)
    w = start(writer)
    assert wait_until(lambda: lock._waiting_writers == 1)
    r2 = start(second_reader)
    time.sleep(0.3)
    assert events == ["r1 in"]  # the writer waits for r1; r2 waits behind the writer
    release_first.set()
    for th in (r1, w, r2):
        th.join(5)
    assert events.index("w out") < events.index("r2 in") and events.index("r1 out") < events.index("w in")


def test_no_lost_wake_ups_under_mixed_load() -> None:
    lock = RWLock()
    state = {"readers": 0, "writers": 0, "count": 0, "bad": 0}
    guard = threading.Lock()

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(300):
            if rng.random() < 0.3:
                with lock.write():
                    with guard:
                        state["writers"] += 1
                        state["bad"] += state["readers"] > 0 or state["writers"] > 1
                    state["count"] += 1
                    with guard:
                        state["writers"] -= 1
            else:
                with lock.read():
                    with guard:
                        state["readers"] += 1
                        state["bad"] += state["writers"] > 0
                    time.sleep(0)
                    with guard:
                        state["readers"] -= 1

    threads = [start(lambda s=s: worker(s)) for s in range(8)]
    for th in threads:
        th.join(60)
    assert not any(th.is_alive() for th in threads), "a thread is stuck: a wake-up was lost"
    assert state["bad"] == 0 and state["readers"] == 0 and state["writers"] == 0
    writes = sum(int((np.random.default_rng(s).random(300) < 0.3).sum()) for s in range(8))
    assert state["count"] == writes


# ---- checkpoints under concurrent searches --------------------------------------------------------------
# A compaction build is held (it waits until the test lets it go) instead of being slow: a search or a write
# that waited for one would not finish while it is held. Order and completion, not wall-clock bounds.
DONE_S = 120  # an operation finishes within this while a build is held, or it is waiting for the build


class HeldBuilds:
    """Every compaction build waits here until released; `next()` gives the kind of the next one held."""

    def __init__(self) -> None:
        self.held: list[tuple[str, threading.Event]] = []
        self.cond = threading.Condition()
        self.counts = {"vectors": 0, "bm25": 0}
        self.open = threading.Event()  # set: builds pass without waiting

    def hold(self, kind: str) -> None:
        go = threading.Event()
        with self.cond:
            self.counts[kind] += 1
            if self.open.is_set():
                return
            self.held.append((kind, go))
            self.cond.notify_all()
        assert go.wait(DONE_S * 3), "a held build was never released"

    def next(self) -> tuple[str, threading.Event]:
        with self.cond:
            assert self.cond.wait_for(lambda: bool(self.held), DONE_S), "no compaction build started"
            return self.held.pop(0)

    def release_all(self) -> None:
        with self.cond:
            self.open.set()
            for _, go in self.held:
                go.set()
            self.held.clear()


def finishes(op: Any) -> Any:
    """Run `op` in a thread; its result if it finishes within DONE_S (else the test fails: it waited)."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = op()
        except BaseException as exc:  # noqa: BLE001
            out["error"] = exc

    th = start(run)
    th.join(DONE_S)
    assert not th.is_alive(), "the operation waited for a held compaction build"
    if "error" in out:
        raise out["error"]
    return out.get("value")


@pytest.fixture()
def hnsw_index(trained_index: Path, tmp_path: Path, encoder) -> Path:
    """The trained service index with its vector indexes rebuilt as HNSW (embeddings come from the cache)."""
    target = tmp_path / "idx"
    shutil.copytree(trained_index, target)
    with TicketStore(IndexDir(target).store_path) as store:
        build_index(target, store, encoder, "minilm", settings=Settings(index_type="hnsw"), progress=False)
    assert Manifest.load(target).index_kind == "hnsw"
    return target


def new_ticket(i: int) -> dict:
    return {"id": f"LIVE-{i}", "title": f"Checkpoint probe flux{i} quasar{i}",
            "body": f"Probe words liveword{i} and zeta{i}: the export stalls after the update.",
            "created": "2025-05-01T00:00:00", "fields": {"product": "Mobile App"}}


def test_checkpoints_and_compactions_never_stall_searches_or_writes(
    hnsw_index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a compaction build of each kind (the vector indexes, BM25) is held, searches keep finishing and
    writes are written and searchable the moment they return; released, the compactions complete and every
    part holds exactly the store's rows."""
    builds = HeldBuilds()
    real_vectors, real_bm25 = VectorIndex.build.__func__, BM25Index.build.__func__  # type: ignore[attr-defined]  # classmethods keep their function

    def held_vectors(cls: type, ids: np.ndarray, vecs: np.ndarray, kind: str = "auto", *, settings: Any) -> Any:
        if len(ids) >= 500:  # a compaction (the overlay's own little index is built empty)
            builds.hold("vectors")
        return real_vectors(cls, ids, vecs, kind, settings=settings)

    def held_bm25(cls: type, row_ids: np.ndarray, texts: list[str], *args: Any, **kwargs: Any) -> Any:
        builds.hold("bm25")
        return real_bm25(cls, row_ids, texts, *args, **kwargs)

    monkeypatch.setattr(VectorIndex, "build", classmethod(held_vectors))
    monkeypatch.setattr(BM25Index, "build", classmethod(held_bm25))
    settings = Settings(query_encoder="fp32", rerank_runtime="torch", cache_dir=tmp_path / "cache",
                        checkpoint_interval_s=3600, compact_changes=4)
    eng = Engine(hnsw_index, settings)
    eng.start()
    assert eng.ready, eng.error
    assert eng.text.kind == "hnsw" and eng.searcher is not None and eng.searcher.reranker is not None
    assert [p.name for p in eng.parts] == ["text", "title", "bm25", "rerank"]

    stop = threading.Event()
    searches = [0]
    failures: list[BaseException] = []

    def search_loop() -> None:
        try:
            while not stop.is_set():
                res = eng.search(text="the app crashes when I export a report", k=10)
                assert res.reranked and len(res.hits) == 10
                searches[0] += 1
        except BaseException as exc:  # noqa: BLE001
            failures.append(exc)

    def checkpoint_loop() -> None:
        try:
            while not stop.is_set():
                eng.checkpoint()
                time.sleep(0.05)
        except BaseException as exc:  # noqa: BLE001
            failures.append(exc)

    def write_and_find(i: int) -> None:
        assert eng.store is not None
        finishes(lambda: eng.upsert([normalize_row(eng.store.schema, new_ticket(i), 1)]))
        # searchable the moment the write returns, by its words and by its vector
        top = finishes(lambda: eng.search(text=f"liveword{i} zeta{i}", method="bm25", rerank=False, k=1).hits)
        assert top and top[0].id == f"LIVE-{i}"
        t = new_ticket(i)
        top = finishes(lambda: eng.search(text=t["body"], title=t["title"], method="dense", rerank=False, k=1).hits)
        assert top and top[0].id == f"LIVE-{i}"

    threads = [start(search_loop), start(checkpoint_loop)]
    held_kinds: list[str] = []
    written, deleted = 0, False
    try:
        for _ in range(4):  # enough changes for a compaction
            write_and_find(written)
            written += 1
        while set(held_kinds) != {"vectors", "bm25"} and len(held_kinds) < 8:
            kind, go = builds.next()  # a compaction build is held from here ...
            held_kinds.append(kind)
            before = searches[0]
            for _ in range(3):
                write_and_find(written)
                written += 1
            assert wait_until(lambda b=before: searches[0] >= b + 3, timeout=DONE_S), "searches stalled"
            if not deleted:
                deleted = True
                finishes(lambda: eng.delete("LIVE-3"))
                gone = finishes(lambda: eng.search(text="liveword3 zeta3", method="bm25", rerank=False, k=5).hits)
                assert "LIVE-3" not in [h.id for h in gone]
            assert not go.is_set()  # ... to here: everything above finished while it waited
            go.set()
        assert {"vectors", "bm25"} <= set(held_kinds), held_kinds
        builds.release_all()
        # the compactions complete once let go
        assert wait_until(lambda: not eng._checkpoint_lock.locked(), timeout=DONE_S)
    finally:
        builds.release_all()
        stop.set()
        for th in threads:
            th.join(DONE_S)
    assert not failures, failures
    assert builds.counts["vectors"] >= 2 and builds.counts["bm25"] >= 1, builds.counts
    db = eng.store.row_ids().tolist()
    for part in eng.parts:
        assert part.live.ids().tolist() == db, part.name
    assert eng.checkpoint() == eng.store.change_seq
    eng.close()
    # a clean stop leaves plain base files holding exactly DuckDB's rows, and empty overlays
    d = IndexDir(hnsw_index)
    with TicketStore(d.store_path, read_only=True) as store:
        db = store.row_ids().tolist()
        assert Manifest.load(hnsw_index).change_seq == store.change_seq
    assert sorted(VectorIndex.load(d.vectors_path("text"), "hnsw", Settings()).ids().tolist()) == db
    assert sorted(VectorIndex.load(d.vectors_path("title"), "hnsw", Settings()).ids().tolist()) == db
    assert sorted(BM25Index.load(d.bm25_path).row_ids.tolist()) == db
    assert sorted(np.load(d.rerank_rows_path).tolist()) == db
    with np.load(d.overlay_path("text")) as z:
        assert len(z["rows"]) == 0


def test_a_closed_engine_is_freed_at_once_sharing_its_model(trained_index: Path, tmp_path: Path) -> None:
    """A service opens and closes collections all day: a closed engine's indexes and model must be freed by
    reference counting, not left in a cycle for a later garbage collection (measured: +10 MB of resident memory
    per collection opened and closed), and engines share one loaded encoder."""
    import gc
    import weakref

    from ticketsearch.pipeline.shared_models import SharedModels

    settings = Settings()
    models = SharedModels(settings)
    dirs = []
    for i in range(2):
        dirs.append(tmp_path / f"c{i}")
        shutil.copytree(trained_index, dirs[-1])
    gc.disable()
    try:
        engines = [Engine(d, settings, models=models) for d in dirs]
        for e in engines:
            e.start()
            assert e.error is None and e.search(text="refund missing", k=3).reranker is not None
        assert models.loaded_count() == 1 and engines[0].encoder._encoder is engines[1].encoder._encoder
        parts = [weakref.ref(x) for e in engines for x in (e, e.searcher, e.searcher.reranker, e.bm25, e.text)]
        for e in engines:
            e.close(compact=False)
        del engines, e
        assert [r() is None for r in parts] == [True] * len(parts)
    finally:
        gc.enable()
        models.close()


def test_a_committed_change_the_indexes_missed_is_applied_by_the_next_checkpoint(
        built_index: Path, tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """An apply that fails after DuckDB's commit loses nothing: the write raises, no manifest records a change
    past it, the next checkpoint re-applies it from DuckDB, and so would start-up."""
    shutil.copytree(built_index, tmp_path / "idx")
    eng = Engine(tmp_path / "idx", settings.model_copy(update={"checkpoint_interval_s": 3600}))
    eng.start()
    assert eng.ready, eng.error
    assert eng.store is not None
    ticket = normalize_row(eng.store.schema, {"id": "LATE-1", "title": "narwhal ledger reconciliation stalls",
                                              "created": "2025-06-01"}, 1)
    real = type(eng.bm25).upsert

    def failing(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise MemoryError("injected: the BM25 apply fails once")

    monkeypatch.setattr(type(eng.bm25), "upsert", failing)
    with pytest.raises(MemoryError):
        eng.upsert([ticket])
    monkeypatch.setattr(type(eng.bm25), "upsert", real)
    assert eng.get("LATE-1")["title"] == ticket.title  # committed
    assert eng.unapplied_from == eng.store.change_seq
    assert "LATE-1" not in [h.id for h in eng.search(text="narwhal ledger reconciliation", method="bm25").hits]
    other = normalize_row(eng.store.schema, {"id": "LATE-2", "title": "another", "created": "2025-06-02"}, 1)
    eng.upsert([other])  # a later write does not carry the manifest past the missed one
    saved = eng.checkpoint()
    assert eng.unapplied_from is None and saved == eng.store.change_seq
    assert [h.id for h in eng.search(text="narwhal ledger reconciliation", method="bm25", k=1).hits] == ["LATE-1"]
    assert Manifest.load(tmp_path / "idx").change_seq == eng.store.change_seq
    eng.close()
