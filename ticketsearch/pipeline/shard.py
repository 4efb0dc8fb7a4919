"""One shard of a sharded collection, as its front asks it (`pipeline.sharded`): an `Engine` over the shard's
index directory, answering with raw per-method lists and the rows, vectors and token states of candidates.

Every call takes and returns plain data (numpy arrays, dataclasses), so the same object serves in process
(`LocalShards`) and behind a Ray Serve deployment (`service.ray_app`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from ticketsearch.errors import as_unavailable
from ticketsearch.index_data.records import Ticket
from ticketsearch.index_data.schema import Schema
from ticketsearch.index_data.store import StoredTicket, UpsertResult
from ticketsearch.rerank.runtime import Reranker
from ticketsearch.rerank.token_cache import Tokens
from ticketsearch.results import SchemaField
from ticketsearch.retrieval.first_stage import Candidates
from ticketsearch.retrieval.lexical import CorpusStats, tokenize
from ticketsearch.settings import Settings

from .engine import Engine, Prepared
from .shared_models import SharedModels


@dataclass
class ShardQuery:
    """What a shard needs of a query for its lists: vectors and text computed once by the front."""

    method: str
    k: int
    vector: np.ndarray | None
    title_vector: np.ndarray | None
    bm25_text: str
    stats: CorpusStats | None  # the whole collection's BM25 statistics for this query
    filters: dict[str, list[Any]] | None = None
    before: datetime | None = None
    after: datetime | None = None
    exclude_ids: list[str] = field(default_factory=list)
    reference: datetime | None = None


@dataclass
class ShardLists:
    """A shard's top list per method (scores, row ids), best first; recency's scores are creation times (µs)
    so that the front can merge them. `complete`: every method's exact score of each row in any list."""

    lists: dict[str, tuple[np.ndarray, np.ndarray]]
    complete: dict[str, dict[int, float]]


@dataclass
class ShardRows:
    rows: list[StoredTicket]
    vectors: np.ndarray | None = None  # the reranker's candidate vectors, in the order of `rows`
    tokens: list[Tokens] | None = None


# What a front asks of a shard (`ShardedEngine`, `ReplicatedShard`) and a follower of its primary: the one list
# every transport answers (`ShardServer.dispatch`); anything else (an upsert that skips the front's row numbering,
# close, open) is refused, whoever asks.
CALLS = frozenset({
    "schema", "stats", "lists", "rows", "ticket", "bodies", "schema_fields", "get", "count",  # reads
    "write", "cached_embeddings", "existing_row_ids", "next_row_id", "allocate_rows", "delete",  # the front's writes
    "store_decision", "feedback_for", "delivery_answer", "remember_delivery", "checkpoint",
    "seq", "changes", "copy_to", "at",  # read replicas (a follower answers reads through `at`)
})


class ShardServer:
    """The shard side: every call is one short read or one write of the shard's engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def dispatch(self, method: str, *args: Any) -> Any:
        """A front's call by name: only those in CALLS (ValueError otherwise)."""
        if method not in CALLS:
            raise ValueError(f"no shard call {method!r}")
        return getattr(self, method)(*args)

    @classmethod
    def open(cls, path: Path, settings: Settings, models: SharedModels | None = None) -> ShardServer:
        engine = Engine(Path(path), settings, models=models)
        engine.start()
        if engine.failure is not None:
            engine.close(compact=False)
            raise as_unavailable(f"shard {path} cannot be opened", engine.failure)
        return cls(engine)

    @property
    def _searcher(self) -> Any:
        assert self.engine.searcher is not None
        return self.engine.searcher

    def close(self) -> None:
        self.engine.close()

    def ready(self) -> bool:
        return self.engine.ready

    # ---- what the front needs to search ------------------------------------------------------------
    def schema(self) -> Schema:
        assert self.engine.store is not None
        return self.engine.store.schema

    def stats(self, bm25_text: str) -> CorpusStats:
        """BM25 statistics of the shard's live corpus for this query's terms (exact at every moment, so that
        their sum is the collection's whatever each shard's last rebuild)."""
        with self.engine.lock.read():
            return self.engine.bm25.corpus_stats(tokenize([bm25_text])[0])

    def lists(self, q: ShardQuery) -> ShardLists:
        s = self._searcher
        with self.engine.lock.read():
            lists = s.first.lists(q.method, q.k, q.vector, q.title_vector, q.bm25_text, q.filters, q.before,
                                  q.after, q.exclude_ids, q.reference, q.stats)
            rows = sorted({int(r) for _, ids in lists.values() for r in ids.tolist()})
            done = Candidates(q.method, rows, [0.0] * len(rows))  # no list scores: each one computed exactly
            s.first.complete_scores(done, len(rows), q.vector, q.title_vector, q.bm25_text, q.stats)
            if "recency" in lists:
                rec = lists["recency"][1]
                by_row = {t.row_id: t.created for t in s.store.get_rows(rec.tolist(), with_body=False)}
                created = np.array([np.datetime64(by_row[int(r)], "us").astype(np.int64) for r in rec], np.float64)
                lists["recency"] = (created, rec)
        return ShardLists(lists, done.per_method)

    def rows(self, row_ids: list[int], vectors: bool = False, tokens: bool = False,
             with_body: bool = False) -> ShardRows:
        """These rows (those that still exist), with the reranker's candidate vectors and token states."""
        s = self._searcher
        with self.engine.lock.read():
            rows = s.store.get_rows(row_ids, with_body=with_body)
            ids = [t.row_id for t in rows]
            vecs = s.target_vectors(ids) if vectors and isinstance(s.reranker, Reranker) and ids else None
            toks = s._tokens_for(ids) if tokens else None
        return ShardRows(rows, vecs, toks)

    def ticket(self, ticket_id: str, vectors: bool = False,
               tokens: bool = False) -> tuple[StoredTicket, tuple[np.ndarray, np.ndarray] | None, Tokens | None]:
        """An indexed ticket (NotFoundError if none), its text and title vectors and its token states."""
        s = self._searcher
        with self.engine.lock.read():
            src = s.store.get(ticket_id)
            vecs = None
            if vectors:
                try:
                    vecs = s.ticket_vectors(src)
                except KeyError:
                    vecs = None
            return src, vecs, s.ticket_tokens(src) if tokens else None

    def bodies(self, ids: list[str]) -> dict[str, str]:
        with self.engine.lock.read():
            return self._searcher.bodies(ids)

    def schema_fields(self) -> list[SchemaField]:
        return self.engine.schema_info().fields

    # ---- writes and single-ticket reads (the shard owns the id) ----------------------------------------
    def upsert(self, tickets: list[Ticket]) -> UpsertResult:
        return self.engine.upsert(tickets)

    def write(self, prepared: Prepared, row_ids: dict[str, int] | None = None) -> UpsertResult:
        """The front's prepared share of a write (`ShardedEngine.upsert`)."""
        return self.engine.write(prepared, row_ids)

    def cached_embeddings(self, key: str, hashes: list[str]) -> dict[str, np.ndarray]:
        assert self.engine.store is not None
        with self.engine.lock.read():
            return self.engine.store.cached_embeddings(key, hashes)

    def existing_row_ids(self, ids: list[str]) -> dict[str, int]:
        assert self.engine.store is not None
        with self.engine.lock.read():
            return self.engine.store.existing_row_ids(ids)

    def next_row_id(self) -> int:
        assert self.engine.store is not None
        with self.engine.lock.read():
            return self.engine.store.next_row_id

    def allocate_rows(self, n: int, floor: int = 0) -> int:
        """Shard 0 numbers the collection's new tickets (`TicketStore.allocate_rows`)."""
        assert self.engine.store is not None
        with self.engine._write_lock:
            return self.engine.store.allocate_rows(n, floor)

    def delete(self, ticket_id: str) -> int:
        return self.engine.delete(ticket_id)

    def get(self, ticket_id: str) -> dict[str, Any]:
        return self.engine.get(ticket_id)

    def count(self) -> int:
        return self.engine.count()

    def record_feedback(self, ticket_id: str, candidate_id: str, label: str, by: str | None = None) -> Any:
        return self.engine.record_feedback(ticket_id, candidate_id, label, by)

    def store_decision(self, decision: Any) -> None:
        self.engine.store_decision(decision)

    def feedback_for(self, ticket_id: str) -> list[Any]:
        return self.engine.feedback_for(ticket_id)

    def delivery_answer(self, source: str, delivery_id: str) -> dict[str, Any] | None:
        return self.engine.delivery_answer(source, delivery_id)

    def remember_delivery(self, source: str, delivery_id: str, response: dict[str, Any]) -> None:
        self.engine.remember_delivery(source, delivery_id, response)

    def checkpoint(self) -> int:
        return self.engine.checkpoint()

    # ---- the primary of read replicas (pipeline.replica) ---------------------------------------------
    def seq(self) -> int:
        """The change every acknowledged write is at or below."""
        return self.engine.applied_seq

    def changes(self, since: int, replica: str) -> Any:
        return self.engine.changes_for_replica(since, replica)

    def copy_to(self, dest: str, replica: str) -> int:
        """Make a follower's directory (unless it is there); returns the change it holds. Only a replica folder
        of this shard (`ShardLayout.replica_dir`: ROOT/replicas/shard-NNN-rR beside ROOT/shard-NNN)."""
        own = self.engine.index_dir
        target = Path(dest)
        if (target.parent.resolve() != (own.parent / "replicas").resolve()
                or not re.fullmatch(re.escape(own.name) + r"-r[1-9][0-9]?", target.name) or replica != target.name):
            raise ValueError(f"{dest}: not a replica folder of shard {own.name}")
        if target.is_dir():
            return -1
        return self.engine.copy_for_replica(Path(dest), replica)
