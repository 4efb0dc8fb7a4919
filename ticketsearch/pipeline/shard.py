"""One shard of a sharded collection, as its front asks it (`pipeline.sharded`): an `Engine` over the shard's
index directory, answering with raw per-method lists and the rows, vectors and token states of candidates.

Every call takes and returns plain data (numpy arrays, dataclasses), so the same object serves in process
(`LocalShards`) and behind a Ray Serve deployment (`service.ray_app`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
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
from ticketsearch.retrieval.first_stage import Candidates, fuse_candidates
from ticketsearch.retrieval.lexical import CorpusStats, tokenize
from ticketsearch.settings import Settings

from .copies import MIN_COSINE
from .engine import Engine, Prepared
from .search import Query, QueryOptions
from .shared_models import SharedModels

COSINE_SLACK = 1e-4  # a shard's exact cosine and the front's list score of a row may differ in the last bits


@dataclass
class ShardQuery:
    """What a shard needs of a query for its one answer (`ShardServer.search`): vectors and text computed once
    by the front, and how much of the answer the front wants besides the lists."""

    method: str
    k: int
    vector: np.ndarray | None
    title_vector: np.ndarray | None
    bm25_text: str
    # BM25's statistics: None scores with the shard's own (a collection of one shard); else the whole
    # collection's, summed by the front from `own`, its guess of this shard's part (None: no guess)
    stats: CorpusStats | None
    filters: dict[str, list[Any]] | None = None
    before: datetime | None = None
    after: datetime | None = None
    exclude_ids: list[str] = field(default_factory=list)
    reference: datetime | None = None
    own: CorpusStats | None = None
    force: bool = False  # score with `stats` even where `own` is no longer this shard's (the front's last try)
    rows: int = 0  # the rows of the top `rows` of the shard's own fused list come with the answer
    vectors: bool = False  # and the reranker's candidate vectors of those rows
    text: str = ""  # the query's text: the words each of those rows shares with it (`pipeline.copies`)
    title: str = ""  # the query's title: BM25 of it for a reranker that reads the text columns
    only: bool = False  # the collection's only shard: its fusion is the collection's (`ShardAnswer.fused`)
    # a search like this indexed ticket (the only shard's): the shard reads it and builds the query from it and
    # `options` (`SearchPipeline.like_query`: vectors, text and time are then its, not the fields above)
    like: str | None = None
    options: QueryOptions | None = None


@dataclass
class ShardAnswer:
    """A shard's one answer to a search: its top list per method (scores, row ids), best first; recency's
    scores are creation times (µs) so that the front can merge them. `complete`: every method's exact score of
    each row in any list. `stats`: the shard's BM25 statistics for the query's terms now (a front's next
    guess); `stale`: the front's guess of them was wrong, and nothing else was computed (unless the front forced
    it: then the answer was scored with the statistics it was given). `rows` (and their
    candidate `vectors`, in the same order): the top of the shard's own fused list, which holds the
    collection's top candidates in this shard in the usual case (the front fetches any it lacks)."""

    lists: dict[str, tuple[np.ndarray, np.ndarray]]
    complete: dict[str, dict[int, float]]
    stats: CorpusStats | None = None
    stale: bool = False
    rows: list[StoredTicket] = field(default_factory=list)
    vectors: np.ndarray | None = None
    copies: list[float | None] | None = None  # each of `rows`' words shared with `ShardQuery.text` (copies.py)
    fused: Candidates | None = None  # the only shard's candidates, as one index's first stage gives them
    query: Query | None = None  # the query the shard built of a `like` ticket (`ShardQuery.like`)


@dataclass
class ShardRows:
    rows: list[StoredTicket]
    vectors: np.ndarray | None = None  # the reranker's candidate vectors, in the order of `rows`
    tokens: list[Tokens] | None = None


def present(stats: CorpusStats) -> CorpusStats:
    """The statistics without terms no document holds (an index leaves them out or counts 0: the same)."""
    return CorpusStats(stats.n, stats.total_len, {t: c for t, c in stats.df.items() if c > 0})


# What a front asks of a shard (`ShardedEngine`, `ReplicatedShard`) and a follower of its primary: the one list
# every transport answers (`ShardServer.dispatch`); anything else (an upsert that skips the front's row numbering,
# close, open) is refused, whoever asks.
CALLS = frozenset({
    "schema", "search", "rows", "ticket", "bodies", "schema_fields", "get", "count",  # reads
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

    def search(self, q: ShardQuery) -> ShardAnswer:
        """The shard's part of a search, in one answer: its lists, every method's exact score of their rows, its
        BM25 statistics, and the rows (and candidate vectors) of the top `q.rows` of its own fusion of them.
        With the whole collection's statistics (`q.stats`), the front's guess of this shard's part (`q.own`)
        is checked first, under the same read lock as the lists: a guess that no longer holds (a write since)
        gets the statistics as they are and nothing else (`stale`), so that the front asks again, unless
        `q.force`."""
        s = self._searcher
        with self.engine.lock.read():
            like = None
            if q.like is not None:  # read here, in the same call (the front has no vectors of it yet)
                assert q.options is not None and q.only
                like = s.like_query(q.like, q.options)
                q = replace(q, vector=like.vector, title_vector=like.title_vector, bm25_text=like.bm25_text,
                            title=like.title,
                            exclude_ids=like.exclude_ids, reference=like.reference, text=like.text)
            own, wrong = None, False
            if q.stats is not None:
                own = present(self.engine.bm25.corpus_stats(tokenize([q.bm25_text])[0]))
                wrong = q.own is None or present(q.own) != own
                if wrong and not q.force:
                    return ShardAnswer({}, {}, own, stale=True)
            lists = s.first.lists(q.method, q.k, q.vector, q.title_vector, q.bm25_text, q.filters, q.before,
                                  q.after, q.exclude_ids, q.reference, q.stats)
            fused = fuse_candidates(s.first.manifest, q.method, q.k, lists) if q.rows or q.only else None
            ranked = fused.row_ids[:q.rows] if fused is not None else []
            # every method's exact score: of the rows in any list, for the front to fuse and complete the
            # collection's top with; the only shard's top is the collection's, so of its top alone
            rows = ranked if q.only else sorted({int(r) for _, ids in lists.values() for r in ids.tolist()})
            done = Candidates(q.method, rows, [0.0] * len(rows))  # no list scores: each one computed exactly
            s.first.complete_scores(done, len(rows), q.vector, q.title_vector, q.bm25_text, q.stats,
                                    title_query=s.title_query(q.title, q.bm25_text))
            top: list[StoredTicket] = s.store.get_rows(ranked, with_body=False) if ranked else []
            vecs, copies = None, None
            if q.vectors and isinstance(s.reranker, Reranker) and top:
                vecs = s.target_vectors([t.row_id for t in top])
            if q.text and top:  # the words shared by those whose cosine may pass: the front applies the rule
                assert fused is not None   # with the scores it holds (`copies.is_near_copy`)
                dense = {**done.per_method.get("dense", {}), **fused.per_method.get("dense", {})}
                copies = s.word_shares(q.text, [dense.get(t.row_id) for t in top], top, MIN_COSINE - COSINE_SLACK)
            if q.only:
                return ShardAnswer({}, done.per_method, own, rows=top, vectors=vecs, copies=copies, fused=fused,
                                   query=like)
            if "recency" in lists:
                rec = lists["recency"][1]
                by_row = {t.row_id: t.created for t in s.store.get_rows(rec.tolist(), with_body=False)}
                created = np.array([np.datetime64(by_row[int(r)], "us").astype(np.int64) for r in rec], np.float64)
                lists["recency"] = (created, rec)
        return ShardAnswer(lists, done.per_method, own, stale=wrong, rows=top, vectors=vecs, copies=copies)

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

    def ticket(self, ticket_id: str,
               tokens: bool = False) -> tuple[StoredTicket, tuple[np.ndarray, np.ndarray] | None, Tokens | None]:
        """An indexed ticket (NotFoundError if none), its text and title vectors and, when `tokens`, its token
        states (`SearchPipeline.like_ticket`)."""
        with self.engine.lock.read():
            return self._searcher.like_ticket(ticket_id, tokens)

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
