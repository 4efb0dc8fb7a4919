"""The service's engine: one writable index directory, searched and updated while it serves.

DuckDB is the source of truth. The vector indexes, BM25 and the reranker's cached candidate vectors are
derived state, kept in memory (`retrieval.live`) and persisted by checkpoints: each file atomically, the
manifest last, stamped with the last change every file reflects. Each write also logs its row ids in DuckDB
(`changes`), in the write's own transaction, so at start-up the engine replays what the files missed, drops
what DuckDB no longer holds, and rebuilds any file it cannot read.

Each live index is a read-only base plus an overlay of the changes since it was built. A checkpoint saves the
overlays (small files: O(changes)); an index whose overlay has reached `Settings.compact_changes` rows is first
compacted: a new base is built from a snapshot in the checkpoint thread and swapped in, keeping later changes.

Locking: searches share a read lock. Writers take turns (`_write_lock`): a write commits to DuckDB, then holds
the exclusive lock only to apply the change in memory (its text is encoded before). A checkpoint holds the
read lock only to copy the overlays, and the exclusive lock only to swap a compacted base in: no search waits
for a build or a file.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa

from ticketsearch.atomic import fsync_dir
from ticketsearch.errors import ConflictError, DiskFullError, NotFoundError, TicketsearchError, one_line
from ticketsearch.index_data import deliveries, feedback
from ticketsearch.index_data.records import Ticket, last_of_each, text_hash, ticket_text
from ticketsearch.index_data.schema import Schema
from ticketsearch.index_data.store import Embeddings, TicketStore, UpsertResult, read_texts
from ticketsearch.index_dir import IndexDir
from ticketsearch.pipeline.ingest import build_index
from ticketsearch.pipeline.parts import open_store
from ticketsearch.pipeline.rerank_vectors import (
    batch_tokens,
    build_rerank_vectors,
    save_rerank_vectors,
)
from ticketsearch.pipeline.search import SearchPipeline
from ticketsearch.requests import SearchRequest
from ticketsearch.rerank.runtime import Reranker
from ticketsearch.results import CollectionSchema, SchemaField, SearchResult
from ticketsearch.retrieval.builder import (
    build_bm25,
    build_dense,
    build_titles,
    title_key,
)
from ticketsearch.retrieval.first_stage import FirstStageIndexes
from ticketsearch.retrieval.lexical import BM25Index, bm25_text
from ticketsearch.retrieval.live import Compacted, Live, LiveBM25, LiveVectors
from ticketsearch.retrieval.manifest import Manifest
from ticketsearch.retrieval.vector_index import VectorIndex
from ticketsearch.settings import Settings

from .batcher import Batcher
from .search import model_id
from .shared_models import Loaded, SharedModels

log = logging.getLogger("ticketsearch.engine")
T = TypeVar("T")

# Fault injection for the durability tests (never a user setting): SIGKILL the process at this point
# (after-commit, mid-checkpoint, before-manifest).
CRASH_AT_ENV = "TICKETSEARCH_TEST_CRASH_AT"
WRITE_CHUNK = 32  # texts per encoder pass when a batch of tickets is written


class RWLock:
    """Many readers or one writer; a waiting writer stops new readers from entering."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting_writers += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


@dataclass
class Prepared:
    """A write's tickets with everything computed that does not need the lock."""

    tickets: list[Ticket]
    vecs: np.ndarray
    title_vecs: np.ndarray
    texts: list[str]
    titles: list[str]
    bm25_texts: list[str]
    rerank_vecs: np.ndarray | None

    def part(self, at: list[int]) -> Prepared:
        """The tickets at these positions (a shard's share of a write)."""
        return Prepared([self.tickets[i] for i in at], self.vecs[at], self.title_vecs[at],
                        [self.texts[i] for i in at], [self.titles[i] for i in at],
                        [self.bm25_texts[i] for i in at], None if self.rerank_vecs is None else self.rerank_vecs[at])


def prepare(tickets: list[Ticket], schema: Schema, enc: Any, rerank: Reranker | None,
            cached: Callable[[str, list[str]], dict[str, np.ndarray]]) -> Prepared:
    """Everything a write of these tickets computes before it takes a lock: their vectors (text, title and,
    with a reranker that has them, its candidate vectors) and BM25 texts. A text embedded before keeps its
    cached vector (`cached(model key, text hashes)`), so that a rebuild, which reads the cache, gives the very
    same index. One function for an index and for a sharded collection's front, which prepares a write for
    all its shards as one index would (the same batches: the same floats)."""
    texts = [ticket_text(schema, t.title, t.body) for t in tickets]
    titles = [t.title for t in tickets]
    dim = enc.dim
    vecs = np.zeros((len(tickets), dim), np.float32)
    rvecs = np.zeros((len(tickets), dim), np.float32) if rerank is not None else None
    for s in range(0, len(tickets), WRITE_CHUNK):
        chunk = texts[s : s + WRITE_CHUNK]
        tb = enc.encode_with_tokens(chunk)
        vecs[s : s + len(chunk)] = tb.pooled.float().cpu().numpy()
        if rerank is not None and rvecs is not None:
            rvecs[s : s + len(chunk)] = rerank.vectors_from_cache(
                batch_tokens(tb), [t.values for t in tickets[s : s + len(chunk)]], "target")
    tvecs = np.asarray(enc.encode(titles), np.float32) if titles else np.zeros((0, dim), np.float32)
    for key, arr, strs in ((enc.key, vecs, texts), (title_key(enc), tvecs, titles)):
        hashes = [text_hash(x) for x in strs]
        hits = cached(key, hashes)
        for i, h in enumerate(hashes):
            if (hit := hits.get(h)) is not None:
                arr[i] = hit
    return Prepared(tickets, vecs, tvecs, texts, titles, [bm25_text(t.title, t.body) for t in tickets], rvecs)


@dataclass
class ReplicaChanges:
    """The primary's changes after a follower's position, up to `seq` (`changes_for_replica`, `apply_replicated`:
    pipeline/replica.py)."""

    seq: int
    rows: pa.Table | None = None  # the rows written, as stored (the layout `TicketStore.upsert_tables` takes)
    row_ids: list[int] = field(default_factory=list)
    vecs: np.ndarray | None = None  # text and title vectors, and the reranker's candidate vectors, by row
    title_vecs: np.ndarray | None = None
    rerank_vecs: np.ndarray | None = None
    deleted: list[int] = field(default_factory=list)  # row ids


@dataclass
class LivePart:
    """One live index of the engine and where its files go."""

    name: str
    live: Live[Any, Any]
    overlay_path: Path
    save_base: Callable[[Compacted[Any]], None]
    tag: str = ""  # stamped on the overlay file (the reranker's checksum for its vectors)


class Engine:
    def __init__(self, index_dir: Path, settings: Settings,
                 on_encode_batch: Callable[[int], None] | None = None, models: SharedModels | None = None) -> None:
        """`models`: the process's shared encoders (a service of many collections); None loads this engine's own."""
        self.index_dir = Path(index_dir)
        self.dir = IndexDir(self.index_dir)
        self.settings = settings
        self.lock = RWLock()
        self.ready = False
        self.failure: Exception | None = None  # why start() failed, its type kept (errors.reraise, as_unavailable)
        self.store: TicketStore | None = None
        self.searcher: SearchPipeline | None = None
        self._schema_info: tuple[int, CollectionSchema] | None = None  # (change seq, answer) of schema_info
        self.batcher: Batcher | None = None
        self.models = models or SharedModels(settings, on_encode_batch=on_encode_batch)
        self._own_models = models is None
        self._loaded: Loaded | None = None
        self.encoder: Any = None  # the index's encoder; every pass goes through the shared batcher thread
        self.applied_seq = 0
        self.saved_seq = 0
        self.unapplied_from: int | None = None  # the first committed change the indexes have not applied (`_applied`)
        self.write_problem: str | None = None  # why the last write could not be made (a full disk), until one can
        self.on_encode_batch = on_encode_batch  # told how many requests share each encoder pass (metrics)
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        self._checkpoint_lock = threading.Lock()
        self._write_lock = threading.Lock()  # one writer at a time: DuckDB's order of changes is the applied order
        self.parts: list[LivePart] = []

    # ---- start-up -------------------------------------------------------------------------------
    @property
    def error(self) -> str | None:
        """Why start() failed, in one line (None: it did not)."""
        return None if self.failure is None else one_line(self.failure)

    def start(self) -> None:
        """Open, repair and reconcile the index; then start checkpointing. Sets `ready` or `error`."""
        try:
            self._open()
        except TicketsearchError as exc:
            self.failure = exc
            log.error("cannot serve %s: %s", self.index_dir, exc)
            return
        except Exception as exc:  # noqa: BLE001 - reported on /readyz instead of a silent dead thread
            self.failure = exc
            log.exception("cannot serve %s", self.index_dir)
            return
        self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="checkpoint", daemon=True)
        self._checkpointer.start()
        self.ready = True
        log.info("ready: %d tickets, change %d", self.store.count() if self.store else 0, self.applied_seq)

    def _open(self) -> None:
        self.dir.require_store()
        self.store = open_store(self.dir, read_only=False)  # the one writer: a second process gets a clear error here
        try:
            manifest = Manifest.load(self.index_dir)
        except TicketsearchError as exc:
            log.warning("rebuilding every index file of %s: %s", self.index_dir, exc)
            loaded = self.models.load(self.settings.model)
            try:
                build_index(self.index_dir, self.store, loaded.batched, self.settings.model,  # type: ignore[arg-type]  # BatchedEncoder has the Encoder methods a build uses
                            self.settings, progress=False)
            finally:
                self.models.release(loaded)
            manifest = Manifest.load(self.index_dir)
        self._loaded = self.models.acquire(self.dir, manifest)
        self.encoder = self._loaded.batched
        self.manifest = manifest
        seq, kind, d = manifest.change_seq, manifest.index_kind, self.dir
        self.text = self._open_vectors("text", kind, seq)
        self.title = self._open_vectors("title", kind, seq)
        self.bm25 = self._open_bm25(seq)
        self.batcher = self._loaded.batcher
        indexes = FirstStageIndexes(self.text, self.title, self.bm25)
        self.searcher = SearchPipeline(
            self.dir, self.settings, encoder=self.encoder, store=self.store,
            query_encoder=self._loaded.batched_query, indexes=indexes,
        )
        self._repair_rerank_vectors()
        self.parts = [
            LivePart("text", self.text, d.overlay_path("text"), lambda c: c.base.save(d.vectors_path("text"))),
            LivePart("title", self.title, d.overlay_path("title"), lambda c: c.base.save(d.vectors_path("title"))),
            LivePart("bm25", self.bm25, d.bm25_overlay_path, lambda c: c.base.save(d.bm25_path)),
        ]
        rs = self.searcher
        if rs.vectors is not None and isinstance(rs.reranker, Reranker):
            reranker = rs.reranker
            self.parts.append(LivePart("rerank", rs.vectors, d.rerank_overlay_path,
                                       lambda c: save_rerank_vectors(d, reranker, c.base, c.seq), reranker.checksum))
        self.applied_seq = self.saved_seq = seq
        self._reconcile(seq)

    def _open_vectors(self, which: str, kind: str, seq: int) -> LiveVectors:
        """A FAISS file with its saved overlay; rebuilt from DuckDB and the embedding cache if either is unreadable."""
        d = self.dir
        try:
            live = LiveVectors(VectorIndex.load(d.vectors_path(which), kind, self.settings))
            live.load_overlay(d.overlay_path(which), seq)
            return live
        except TicketsearchError as exc:
            log.warning("rebuilding %s: %s", d.vectors_path(which), exc)
        assert self.store is not None
        build = build_dense if which == "text" else build_titles
        index, _, _ = build(d, self.store, self.encoder, kind, self.settings, False)
        d.overlay_path(which).unlink(missing_ok=True)  # the rebuilt base holds every change
        return LiveVectors(index)

    def _open_bm25(self, seq: int) -> LiveBM25:
        """The BM25 folder with its saved overlay; rebuilt from DuckDB if either is unreadable."""
        d = self.dir
        try:
            base = BM25Index.load(d.bm25_path)
            if base.avgdl is None:
                raise TicketsearchError(f"{d.bm25_path}: saved without its statistics (older format)")
            live = LiveBM25(base, rebuild=self._bm25_from_store)
            live.load_overlay(d.bm25_overlay_path, seq)
            return live
        except TicketsearchError as exc:
            log.warning("rebuilding %s: %s", d.bm25_path, exc)
        assert self.store is not None
        live = LiveBM25(build_bm25(d, self.store), rebuild=self._bm25_from_store)
        d.bm25_overlay_path.unlink(missing_ok=True)
        return live

    def _bm25_from_store(self) -> BM25Index:
        """A BM25 base of DuckDB as of now (one read statement: a consistent snapshot, taken without the lock)."""
        assert self.store is not None
        st = read_texts(self.store)
        return BM25Index.build(st.row_ids, [bm25_text(t, b) for t, b in zip(st.titles, st.bodies)],
                               keep_tf=True)

    def _repair_rerank_vectors(self) -> None:
        """The installed reranker's candidate vectors, rebuilt if the searcher could not load them."""
        rs, store, d = self.searcher, self.store, self.dir
        assert rs is not None and store is not None
        if d.has_reranker() and rs.reranker is None:
            log.warning("the installed reranker could not be used, its candidate vectors are rebuilt (none for a "
                        "linear model): %s", "; ".join(rs.notes))
            build_rerank_vectors(d, store, self.encoder, progress=False)
            rs.reranker, rs.vectors, rs.notes = rs.load_reranker()

    def _reconcile(self, seq: int, save: bool = True) -> None:
        """Apply the changes the files missed: DuckDB's change log after `seq`, and any id-set mismatch; then,
        with `save`, checkpoint (start-up; a checkpoint that catches up saves on its own)."""
        store, rs = self.store, self.searcher
        assert store is not None and rs is not None
        db_ids = set(store.row_ids().tolist())
        changed = store.changed_since(seq)
        todo = set() if changed is None else set(changed.tolist())
        comps = [set(part.live.ids().tolist()) for part in self.parts]
        for ids in comps:
            todo |= ids ^ db_ids
        if not todo:
            return
        rows = sorted(todo)
        present = [t for t in store.get_rows(rows)]
        gone = sorted(set(rows) - {t.row_id for t in present})
        tickets = [Ticket(id=t.id, title=t.title, body=t.body, created=t.created, duplicate_of=t.duplicate_of,
                          values=t.values, raw_fields={}) for t in present]
        prepared = self._prepare(tickets)
        self._apply_upsert(prepared, [t.row_id for t in present], store.change_seq)
        self._apply_delete(gone, store.change_seq)
        self.applied_seq = store.change_seq
        log.warning("reconciled the index files with DuckDB (changes after %d): %d re-applied, %d dropped",
                    seq, len(present), len(gone))
        if save:
            self.checkpoint()

    # ---- a new model, live ----------------------------------------------------------------------
    def reload_reranker(self) -> str | None:
        """Swap in the reranker the index directory now has installed (after training), without a restart:
        its candidate vectors are computed while writes wait (searches go on with the previous model), then
        the searcher switches under the exclusive lock. Returns the new model's id (`NAME@CHECKSUM`) or None
        when the index is left with first-stage order."""

        rs, store = self.searcher, self.store
        assert rs is not None and store is not None
        with self._checkpoint_lock, self._write_lock:
            if self.dir.has_reranker():
                build_rerank_vectors(self.dir, store, self.encoder, progress=False)  # as of the store's last change
            reranker, vectors, notes = rs.load_reranker()
            parts = [p for p in self.parts if p.name != "rerank"]
            if vectors is not None and isinstance(reranker, Reranker):
                d, model = self.dir, reranker
                parts.append(LivePart("rerank", vectors, d.rerank_overlay_path,
                                      lambda c: save_rerank_vectors(d, model, c.base, c.seq), model.checksum))
            with self.lock.write():
                rs.reranker, rs.vectors, rs.notes = reranker, vectors, notes
                rs.reset_token_cache()  # the training wrote token states through another handle
                self.parts = parts
        name = model_id(reranker) if reranker is not None else None
        log.info("reranker now: %s", name or "none (first-stage order)")
        return name

    # ---- shutdown -------------------------------------------------------------------------------
    def close(self, compact: bool = True) -> None:
        """Stop checkpointing, save what changed, and release the store and the model. `compact`: fold every
        overlay into its base first (a clean stop); without it only the overlays are saved (a quick close)."""
        self._stop.set()
        if self._checkpointer is not None:
            self._checkpointer.join(timeout=60)
        if self.ready:
            try:
                self.checkpoint(compact=compact)  # a cleanly stopped index directory holds plain base files
            except Exception:  # noqa: BLE001
                log.exception("final checkpoint failed (start-up will reconcile)")
        self.ready = False
        if self._loaded is not None:
            self.models.release(self._loaded)
            self._loaded = None
        if self._own_models:
            self.models.close()
        if self.store is not None:
            self.store.close()
            self.store = None
        # break the engine's reference cycles (the BM25 index's rebuild callback is one of its methods), so that
        # a closed engine's memory is freed at once, not at some later garbage collection: a service closing
        # idle collections measured +10 MB of resident memory per collection opened and closed without this
        if hasattr(self, "bm25"):
            self.bm25.rebuild = None
        self.parts = []

    # ---- reads ----------------------------------------------------------------------------------
    def search(self, text: str | None = None, **options: Any) -> SearchResult:
        return self.run(SearchRequest.of(text, **options))

    def run(self, req: SearchRequest) -> SearchResult:
        assert self.searcher is not None
        with self.lock.read():
            return self.searcher.run(req)

    def get(self, ticket_id: str) -> dict[str, Any]:
        assert self.store is not None
        with self.lock.read():
            return self.store.get(ticket_id).as_dict()

    def schema_info(self) -> CollectionSchema:
        """The collection's schema, with each categorical and multi field's known values (one scan of the
        tickets per field, kept until the next write: the page asks on every load)."""
        assert self.store is not None
        schema = self.store.schema
        with self.lock.read():
            seq = self.store.change_seq
            cached = self._schema_info
            if cached is not None and cached[0] == seq:
                return cached[1]
            fields = [SchemaField(name=f.name, kind=f.kind, values=self.store.known_values(f.name))
                      for f in schema.fields]
        info = CollectionSchema(name=schema.name, text_fields=list(schema.text_fields), fields=fields)
        self._schema_info = (seq, info)
        return info

    def count(self) -> int:
        assert self.store is not None
        with self.lock.read():
            return self.store.count()

    # ---- writes ---------------------------------------------------------------------------------
    def upsert(self, tickets: list[Ticket]) -> UpsertResult:
        """Commit tickets to DuckDB and make them searchable; returns after both."""
        latest, repeated = last_of_each(tickets)
        res = self.write(self._prepare(latest))
        res.repeated = repeated
        return res

    def write(self, prepared: Prepared, row_ids: dict[str, int] | None = None) -> UpsertResult:
        """Commit prepared tickets (`prepare`: distinct ids) and make them searchable. A sharded collection's
        front prepares its shards' writes and gives `row_ids`, the row id of each new ticket (it numbers them
        across the shards; default: the next ones)."""
        assert self.store is not None
        with self._write_lock:
            res = self._committed(lambda s: s.upsert(prepared.tickets, row_ids, self._embeddings(prepared)))
            if res.stale:  # left as stored (an older version): nothing of them reaches the indexes
                refused = set(res.stale)
                prepared = prepared.part([i for i, t in enumerate(prepared.tickets) if t.id not in refused])
            self._fault("after-commit")
            self._applied(res.change_seq, lambda: self._apply_upsert(prepared, res.row_ids, res.change_seq))
        return res

    def use_settings(self, settings: Settings) -> None:
        """Answer with these settings from now on (a collection's duplicate precision changed while open)."""
        self.settings = settings
        if self.searcher is not None:
            self.searcher.settings = settings

    def write_blocked(self) -> str | None:
        """Why writes cannot be made now (the last write found the disk full, and it still has no room), or
        None; once there is room again the problem is cleared."""
        if self.write_problem is not None and self.store is not None and self.store.has_room():
            self.write_problem = None
        return self.write_problem

    def _committed(self, write: Callable[[TicketStore], T]) -> T:
        """A store write; a full disk is remembered (`write_problem`: /readyz says so until there is room again)
        and raised, with nothing written; a write that succeeds clears it."""
        assert self.store is not None
        try:
            out = write(self.store)
        except DiskFullError as exc:
            self.write_problem = str(exc)
            raise
        self.write_problem = None
        return out

    def _applied(self, seq: int, apply: Callable[[], None]) -> None:
        """Apply a committed change to the in-memory indexes. Should that fail, the change is not lost: no
        checkpoint records a change past it (`unapplied_from`), the next checkpoint re-applies it from DuckDB,
        and so does start-up after a crash; the caller gets the error."""
        try:
            with self.lock.write():
                apply()
                self.applied_seq = seq
        except BaseException:
            self.unapplied_from = min(seq, self.unapplied_from or seq)
            log.exception("change %d is committed but not applied to the indexes: the next checkpoint re-applies it",
                          seq)
            raise

    def delete(self, ticket_id: str) -> int:
        assert self.store is not None
        with self._write_lock:
            rows = self._committed(lambda s: s.delete([ticket_id]))
            if not rows:
                raise NotFoundError(f"ticket {ticket_id!r} not found")
            seq = self.store.change_seq
            self._applied(seq, lambda: self._apply_delete(rows, seq))
        return seq

    def record_feedback(self, ticket_id: str, candidate_id: str, label: str, by: str | None = None) -> Any:
        """Store an agent's decision on a pair (`index_data.feedback`); it changes no index, only training."""

        assert self.store is not None
        with self._write_lock:
            return feedback.record(self.store, ticket_id, candidate_id, label, by)

    def store_decision(self, decision: Any) -> None:
        """Keep a decision made by a sharded collection's front on a pair that holds one of this shard's
        tickets (`pipeline.sharded`)."""

        assert self.store is not None
        with self._write_lock:
            feedback.store_decision(self.store, decision)

    def feedback_for(self, ticket_id: str) -> list[Any]:

        assert self.store is not None
        return feedback.for_ticket(self.store, ticket_id)

    def delivery_answer(self, source: str, delivery_id: str) -> dict[str, Any] | None:
        """The answer given to a webhook delivery before (`index_data.deliveries`), or None."""

        assert self.store is not None
        return deliveries.answered(self.store, source, delivery_id)

    def remember_delivery(self, source: str, delivery_id: str, response: dict[str, Any]) -> None:

        assert self.store is not None
        with self._write_lock:
            deliveries.remember(self.store, source, delivery_id, response)

    def _prepare(self, tickets: list[Ticket]) -> Prepared:
        assert self.store is not None and self.searcher is not None
        rerank = self.searcher.reranker if isinstance(self.searcher.reranker, Reranker) else None  # one with vectors
        return prepare(tickets, self.store.schema, self.encoder, rerank, self.store.cached_embeddings)

    def _embeddings(self, p: Prepared) -> list[Embeddings]:
        """A write's vectors for the embedding cache (committed in the write's own transaction)."""
        return [(self.encoder.key, [text_hash(t) for t in p.texts], p.vecs),
                (title_key(self.encoder), [text_hash(t) for t in p.titles], p.title_vecs)]

    def _apply_upsert(self, p: Prepared, row_ids: list[int], seq: int) -> None:
        rs = self.searcher
        assert rs is not None
        if not row_ids:
            return
        ids = np.asarray(row_ids, np.int64)
        self.text.upsert(ids, p.vecs, seq)
        self.title.upsert(ids, p.title_vecs, seq)
        self.bm25.upsert(row_ids, p.bm25_texts, seq)
        if rs.vectors is not None and p.rerank_vecs is not None:
            rs.vectors.upsert(row_ids, p.rerank_vecs, seq)

    def _apply_delete(self, row_ids: list[int], seq: int) -> None:
        if not row_ids:
            return
        for part in self.parts:
            part.live.delete(row_ids, seq)

    # ---- read replicas (pipeline.replica) --------------------------------------------------------
    def changes_for_replica(self, since: int, replica: str) -> ReplicaChanges:
        """What a read replica at this store's change `since` lacks: the rows written since (as stored, with
        their row ids and vectors, so that the replica encodes nothing) and the row ids deleted. Taken between
        writes; the change log keeps what `replica` has not pulled yet."""
        store, rs = self.store, self.searcher
        assert store is not None and rs is not None
        with self._write_lock:  # a whole write or none of it: DuckDB, the embedding cache and the indexes
            seq = store.change_seq
            store.set_replica_seq(replica, since)  # it has everything up to `since`
            if since >= seq:
                return ReplicaChanges(seq)
            if since < store.pruned_seq():
                raise ConflictError(f"replica {replica} is at change {since}, older than this shard's change log "
                                    f"({store.pruned_seq()}): make it again from the shard")
            changed = store.changed_since(since)
            rows, row_ids = store.rows_table([] if changed is None else changed.tolist())
            gone = sorted(set([] if changed is None else changed.tolist()) - set(row_ids))
            texts = [ticket_text(store.schema, t, b) for t, b in zip(rows.column("title").to_pylist(),
                                                                     rows.column("body").to_pylist())]
            titles = rows.column("title").to_pylist()
            vecs = self._cached_vectors(self.encoder.key, texts)
            title_vecs = self._cached_vectors(title_key(self.encoder), titles)
            rerank = None
            if rs.vectors is not None and isinstance(rs.reranker, Reranker) and row_ids:
                with self.lock.read():
                    rerank = rs.target_vectors(row_ids)
        return ReplicaChanges(seq, rows, row_ids, vecs, title_vecs, rerank, gone)

    def _cached_vectors(self, key: str, texts: list[str]) -> np.ndarray:
        """The embedding cache's vectors of these texts (every written text's is there); encoded if missing."""
        assert self.store is not None
        hashes = [text_hash(t) for t in texts]
        cached = self.store.cached_embeddings(key, hashes)
        missing = {h: t for h, t in zip(hashes, texts) if h not in cached}
        if missing:
            cached |= dict(zip(missing, self.encoder.encode(list(missing.values()))))
        return np.asarray([cached[h] for h in hashes], np.float32).reshape(len(texts), self.encoder.dim)

    def apply_replicated(self, ch: ReplicaChanges) -> int:
        """A read replica's side: apply the primary's changes (deletions first: an id deleted and written again
        has a new row id), keeping the primary's row ids and vectors. Returns the primary's change now held."""
        store = self.store
        assert store is not None
        with self._write_lock:
            if ch.seq <= store.primary_seq():
                return store.primary_seq()
            removed: list[int] = []
            gone = [t.id for t in store.get_rows(ch.deleted, with_body=False)]
            if gone:
                removed = store.delete(gone)
            res = None
            if ch.row_ids:
                assert ch.rows is not None and ch.vecs is not None and ch.title_vecs is not None
                ids = ch.rows.column("id").to_pylist()
                titles, bodies = ch.rows.column("title").to_pylist(), ch.rows.column("body").to_pylist()
                texts = [ticket_text(store.schema, t, b) for t, b in zip(titles, bodies)]
                prepared = Prepared([], ch.vecs, ch.title_vecs, texts, titles,
                                    [bm25_text(t, b) for t, b in zip(titles, bodies)], ch.rerank_vecs)
                res = store.upsert_tables(iter([ch.rows]), dict(zip(ids, ch.row_ids)), self._embeddings(prepared))
            store.set_primary_seq(ch.seq)
            seq = store.change_seq
            with self.lock.write():
                self._apply_delete(removed, seq)
                if res is not None:
                    self._apply_upsert(prepared, res.row_ids, seq)
                self.applied_seq = seq
        return ch.seq

    def copy_for_replica(self, dest: Path, replica: str) -> int:
        """A new read replica's directory at `dest`: the index files as last saved and a consistent copy of the
        database (which replays what the files missed when the replica opens). Returns the change it holds."""
        store = self.store
        assert store is not None
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".copying-{dest.name}-", dir=dest.parent))
        try:
            with self._checkpoint_lock:  # the saved index files stay as they are while they are copied
                for item in self.index_dir.iterdir():
                    if item.name.startswith(store.path.name) or item.name.startswith("."):
                        continue  # the database (and its WAL) is copied by DuckDB below
                    if item.is_dir():
                        shutil.copytree(item, tmp / item.name)
                    else:
                        shutil.copy2(item, tmp / item.name)
                with self._write_lock:
                    seq = store.copy_database(tmp / store.path.name)
                    store.set_replica_seq(replica, seq)
            with TicketStore(tmp / store.path.name) as copy:
                copy.make_replica(seq)
            os.replace(tmp, dest)
            fsync_dir(dest.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return seq

    def _fault(self, point: str) -> None:
        if os.environ.get(CRASH_AT_ENV) == point:  # fault injection for the crash tests only
            log.warning("crash_at=%s: killing the process", point)
            os.kill(os.getpid(), signal.SIGKILL)

    # ---- checkpoints ----------------------------------------------------------------------------
    def _checkpoint_loop(self) -> None:
        while not self._stop.wait(self.settings.checkpoint_interval_s):
            if self.applied_seq != self.saved_seq:
                try:
                    self.checkpoint()
                except Exception:  # noqa: BLE001 - the next checkpoint (or start-up) catches up
                    log.exception("checkpoint failed")

    def checkpoint(self, compact: bool = False) -> int:
        """Persist the derived state; the manifest, written last, records the change it reflects.

        Every live index's overlay is saved (small files); one whose overlay has reached `compact_changes` rows
        (with `compact`: any with changes) is compacted first. Searches and writes wait only while the overlays
        are copied and while a compacted base is swapped in, never for a build or a file.
        """
        with self._checkpoint_lock:
            return self._checkpoint(compact)

    def _catch_up(self) -> None:
        """Re-apply from DuckDB the changes that a failed apply left out of the indexes (`_applied`)."""
        with self._write_lock:
            first = self.unapplied_from
            if first is None:
                return
            with self.lock.write():
                self._reconcile(first - 1, save=False)
            self.unapplied_from = None

    def _checkpoint(self, compact_all: bool) -> int:
        store = self.store
        assert store is not None
        if self.unapplied_from is not None:  # no manifest may record a change past one the indexes lack
            self._catch_up()
        least = 1 if compact_all else self.settings.compact_changes
        for part in self.parts:
            if part.live.changed >= least:
                self._compact(part)
        with self.lock.read():
            seq = self.applied_seq
            snaps = [(part, part.live.snapshot(seq)) for part in self.parts]
            count = len(self.text)
        for part, snap in snaps:
            part.live.save_overlay(part.overlay_path, snap, part.tag)
            if part.name == "text":
                self._fault("mid-checkpoint")
        self._fault("before-manifest")
        m = self.manifest
        m.change_seq = seq
        m.counts = {**m.counts, "tickets": count, "vectors": count}
        m.built_at = datetime.now().astimezone().isoformat(timespec="seconds")
        m.save(self.index_dir)
        with self._write_lock:
            store.prune_changes(seq)
        self.saved_seq = seq
        return seq

    def _compact(self, part: LivePart) -> None:
        """Fold a live index's overlay into a new base, built and saved outside the lock, then swapped in."""
        t0 = time.perf_counter()
        with self.lock.read():
            snap = part.live.snapshot(self.applied_seq)
        new = part.live.compacted(snap)  # the slow part, from the read-only base and the copied overlay
        part.save_base(new)
        with self.lock.write():
            part.live.rebase(new)
        log.info("compacted %s: %d changes folded into %d rows in %.1f s", part.name, len(snap.changes),
                 len(new.members), time.perf_counter() - t0)

