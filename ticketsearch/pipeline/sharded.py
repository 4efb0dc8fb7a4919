"""A sharded collection's front: the search pipeline of one index, with every read of the index asked of the
shards (`pipeline.shard.ShardServer`), and the engine interface the service's routes use.

A query is encoded once here, then each shard is asked once (`ShardServer.search`): its top list per method
with raw scores (BM25 scored with the collection's statistics, so as one index would), every method's exact
score of those rows, and the rows, the reranker's candidate vectors and near-copy tests of the top of its own
fusion. The lists are merged per method and fused as one index fuses them (`first_stage.fuse_candidates`; ties
by row id, unique across shards); the reranker runs here (`SearchPipeline.rerank`, unchanged), asking an owner
only for what its answer did not bring. The collection's BM25 statistics are the sum of the front's guesses of
each shard's (`StatsGuess`), which each shard checks before it scores. A collection of one shard is answered
by its shard's own fusion. Writes go to the shard that owns the id (`sharding.shard_of`).

The shards are reached through `ShardClient.call(method, *args) -> object with .result()`: a thread pool over
in-process shards (`LocalShards`), or Ray Serve deployment handles (`service.ray_app`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ticketsearch.errors import TicketsearchError, one_line
from ticketsearch.index_data import feedback
from ticketsearch.index_data.records import Ticket, last_of_each
from ticketsearch.index_data.schema import Schema
from ticketsearch.index_data.store import StoredTicket, UpsertResult
from ticketsearch.pipeline.parts import load_manifest
from ticketsearch.pipeline.sharding import ShardLayout, shard_of
from ticketsearch.requests import SearchRequest
from ticketsearch.rerank.runtime import Reranker
from ticketsearch.rerank.token_cache import Tokens
from ticketsearch.results import CollectionSchema, SchemaField, SearchResult
from ticketsearch.retrieval.first_stage import Candidates, FirstStage, fuse_candidates
from ticketsearch.retrieval.lexical import CorpusStats, tokenize
from ticketsearch.retrieval.ties import best_first
from ticketsearch.settings import Settings

from .copies import is_near_copy
from .engine import Prepared, prepare
from .replica import FollowerServer, ReplicatedShard
from .search import Query, SearchPipeline
from .shard import ShardAnswer, ShardQuery, ShardRows, ShardServer
from .shared_models import Loaded, SharedModels

log = logging.getLogger("ticketsearch.sharded")

TRAINING_NOT_BUILT = ("training and dedupe jobs on a sharded collection are not built yet: run them on one index "
                      "of the tickets, then split it ('ticketsearch split')")


STATS_TRIES = 3  # tries with guessed BM25 statistics before a search scores with the last ones it was given
EMPTY_STATS = CorpusStats(0, 0, {})  # sent with no guess: the shard answers with its statistics alone


class StatsGuess:
    """The front's guess of each shard's BM25 statistics (documents, their length, each term's document
    frequency), as the shards last gave them: a guess is checked by the shard before it scores with it, so a
    wrong one costs a second call, never a wrong score. At most `max_terms` terms per shard are kept."""

    def __init__(self, max_terms: int = 100_000) -> None:
        self.max_terms = max_terms
        self._shards: dict[int, tuple[int, int, dict[str, int]]] = {}
        self._lock = threading.Lock()

    def get(self, shard: int, terms: list[str]) -> CorpusStats | None:
        with self._lock:
            got = self._shards.get(shard)
            if got is None or any(t not in got[2] for t in terms):
                return None
            return CorpusStats(got[0], got[1], {t: got[2][t] for t in terms if got[2][t] > 0})

    def put(self, shard: int, terms: list[str], stats: CorpusStats) -> None:
        with self._lock:
            df = self._shards[shard][2] if shard in self._shards else {}
            if len(df) + len(terms) > self.max_terms:
                df = {}
            df.update((t, stats.df.get(t, 0)) for t in terms)
            self._shards[shard] = (stats.n, stats.total_len, df)


class Pending(Protocol):
    def result(self) -> Any: ...


class ShardClient(Protocol):
    """One shard as the front reaches it."""

    def call(self, method: str, *args: Any) -> Pending: ...


class LocalShards:
    """A sharded collection's shards in this process (each an `Engine`), called from a thread pool.
    `replicas` > 1: each shard's primary and replicas - 1 read replicas (`pipeline.replica`), each an engine
    over its own copy of the shard."""

    def __init__(self, layout: ShardLayout, settings: Settings, models: SharedModels | None = None,
                 replicas: int = 1, poll_s: float = 1.0) -> None:

        self.servers: list[ShardServer] = []
        self.clients: list[ShardClient] = []
        self.pool = ThreadPoolExecutor(max_workers=max(2, layout.shards * replicas), thread_name_prefix="shard")
        try:
            for i, d in enumerate(layout.dirs()):
                primary = ShardServer.open(d.root, settings, models)
                self.servers.append(primary)
                followers: list[ShardServer] = []
                for r in range(1, replicas):
                    where = layout.replica_dir(i, r)
                    primary.copy_to(str(where), where.name)
                    followers.append(FollowerServer.open_follower(
                        where, settings, partial(primary.changes, replica=where.name), models, poll_s))
                    self.servers.append(followers[-1])
                client = _Local(primary, self.pool, inline=layout.shards == 1 and replicas == 1)
                self.clients.append(ReplicatedShard(client, [_Local(f, self.pool) for f in followers])
                                    if followers else client)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        for s in reversed(self.servers):  # followers before their primary
            s.close()


class _Local:
    """A shard in this process; `inline`: its calls run in the caller's thread (a collection of one shard, where
    there is nothing to wait for in parallel)."""

    def __init__(self, server: ShardServer, pool: ThreadPoolExecutor, inline: bool = False) -> None:
        self.server, self.pool, self.inline = server, pool, inline

    def call(self, method: str, *args: Any) -> Pending:
        if not self.inline:
            return self.pool.submit(self.server.dispatch, method, *args)
        done: Future[Any] = Future()
        try:
            done.set_result(self.server.dispatch(method, *args))
        except BaseException as exc:  # noqa: BLE001 - raised where the result is read, as from the pool
            done.set_exception(exc)
        return done


def merge_lists(parts: Sequence[tuple[np.ndarray, np.ndarray]], depth: int, recency: bool = False,
                ) -> tuple[np.ndarray, np.ndarray]:
    """The top `depth` of the shards' lists of one method, as one index ranks them: by score, ties by row id;
    recency newest first (ties: the higher row id), scored by rank as the first stage scores it."""
    scores = np.concatenate([np.asarray(p[0]) for p in parts]) if parts else np.zeros(0)
    ids = np.concatenate([np.asarray(p[1], np.int64) for p in parts]) if parts else np.zeros(0, np.int64)
    if recency:
        order = np.lexsort((-ids, -scores))[:depth]
        return -np.arange(len(order), dtype=np.float64), ids[order]
    return best_first(scores, ids, depth)


class ShardedSearch(SearchPipeline):
    """`SearchPipeline` whose stages read the shards: the same query building, fusion and reranking code."""

    keeps_vectors = False

    def __init__(self, layout: ShardLayout, shards: Sequence[ShardClient], settings: Settings,
                 encoder: Any = None, query_encoder: Any = None) -> None:
        self.layout = layout
        self.shards = list(shards)
        self.dir = layout.shard_dir(0)  # the collection's model, encoder and fusion (every shard has the same)
        self.settings = settings
        self.manifest = load_manifest(self.dir)
        self._schema: Schema = self.shards[0].call("schema").result()
        self.first = FirstStage(self.manifest, None, None, settings.fusion_depth)  # type: ignore[arg-type]  # depth and fusion only: the lists come from the shards
        self._encoder = encoder
        self._query_encoder = query_encoder
        self._token_cache = None
        self.guess = StatsGuess()
        self.reranker, self.vectors, self.notes = self.load_reranker()

    @property
    def schema(self) -> Schema:
        return self._schema

    def close(self) -> None:
        pass

    def _all(self, method: str, *args: Any) -> list[Any]:
        pending = [s.call(method, *args) for s in self.shards]
        return [p.result() for p in pending]

    def _by_owner(self, cands: Candidates, row_ids: list[int]) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for r in row_ids:
            out.setdefault(cands.owners[r], []).append(r)
        return out

    # ---- stage 1, scattered and gathered ---------------------------------------------------------------
    def first_stage(self, q: Query, method: str, depth: int, rerank: bool = False) -> Candidates:
        """One call per shard (`ShardServer.search`): the lists, exact scores, and the rows (and, when `rerank`,
        the candidate vectors) of each shard's top, with BM25 scored with the collection's statistics summed from
        the front's guess of each shard's (`StatsGuess`); a guess a write has made wrong costs a second call."""
        t0 = time.perf_counter()
        wants = self._wants_vectors(rerank)
        base = ShardQuery(method, depth, q.vector, q.title_vector, q.bm25_text, None, q.filters, q.before, q.after,
                          q.exclude_ids, q.reference, rows=depth, vectors=wants, text=q.text, title=q.title)
        if len(self.shards) == 1:  # one shard: its statistics and its fusion are the collection's
            answers: list[ShardAnswer] = self._all("search", replace(base, only=True))
            cands = self._gather(answers, answers[0].fused, wants)
        else:
            answers = self._search_with_stats(base)
            d = self.first.depth(method, depth)
            merged = {name: merge_lists([a.lists[name] for a in answers if name in a.lists], d, name == "recency")
                      for name in answers[0].lists}
            cands = self._gather(answers, fuse_candidates(self.manifest, method, depth, merged), wants)
        cands.timings_ms["retrieve"] = (time.perf_counter() - t0) * 1000
        return cands

    def retrieve(self, req: SearchRequest, method: str, depth: int, tokens: bool,
                 rerank: bool) -> tuple[Query, Candidates]:
        """As one index; a search like a ticket of a one-shard collection in one call: the shard reads the ticket
        and builds the query of it (`ShardQuery.like`) in the call that searches."""
        if len(self.shards) > 1 or req.like is None or req.text or req.title:
            return super().retrieve(req, method, depth, tokens, rerank)
        t0 = time.perf_counter()
        o = self.query_options(req.fields, req.filters, req.created_before, req.created_after, method, tokens,
                               self.reads_cosines(rerank))
        wants = self._wants_vectors(rerank)
        ask = ShardQuery(method, depth, None, None, "", None, o.filters, o.before, o.after, rows=depth, vectors=wants,
                         only=True, like=req.like, options=o)
        answer: ShardAnswer = self.shards[0].call("search", ask).result()
        assert answer.query is not None
        cands = self._gather([answer], answer.fused, wants)
        cands.timings_ms = {"encode": 0.0, "retrieve": (time.perf_counter() - t0) * 1000}  # no query to encode
        return answer.query, cands

    def _wants_vectors(self, rerank: bool) -> bool:
        """Whether the shards send candidate vectors: the search reranks, with a model that has them."""
        return rerank and isinstance(self.reranker, Reranker)

    def _gather(self, answers: list[ShardAnswer], fused: Candidates | None, wants: bool) -> Candidates:
        """The collection's candidates (`fused`) with what the shards' answers brought: each row's shard, every
        method's exact scores, and the rows, candidate vectors and shared words of each shard's top."""
        cands = fused
        assert cands is not None
        if len(answers) == 1:
            cands.owners.update((r, 0) for r in cands.row_ids)
        for i, a in enumerate(answers):
            for _, ids in a.lists.values():
                for r in ids.tolist():
                    if cands.owners.setdefault(int(r), i) != i:  # row ids must be unique across the shards
                        raise TicketsearchError(f"{self.layout.root}: row id {r} is in shards "
                                                f"{cands.owners[int(r)]} and {i}")
            for name, scores in a.complete.items():
                cands.complete.setdefault(name, {}).update(scores)
            cands.rows.update((t.row_id, t) for t in a.rows)
            if a.vectors is not None:
                cands.vectors.update(zip((t.row_id for t in a.rows), a.vectors))
            if a.copies is not None:
                cands.shares.update(zip((t.row_id for t in a.rows), a.copies))
        cands.wants_vectors = wants
        return cands

    def _search_with_stats(self, base: ShardQuery) -> list[ShardAnswer]:
        """Every shard's answer with BM25 scored with the collection's statistics: the front's guesses of each
        shard's statistics first (a shard with no guess is asked for its statistics alone, the others wait
        for it), then as the shards give them when a guess was wrong; the last try has the shards score with
        the statistics sent even if one has changed again meanwhile (writes on every try)."""
        terms = sorted(set(tokenize([base.bm25_text])[0]))
        guesses = [self.guess.get(i, terms) for i in range(len(self.shards))]
        unknown = [i for i, g in enumerate(guesses) if g is None]
        if unknown:
            asked = [self.shards[i].call("search", replace(base, stats=EMPTY_STATS)) for i in unknown]
            for i, p in zip(unknown, asked):
                guesses[i] = self._learn(i, terms, p.result())
        for attempt in range(STATS_TRIES):
            known = [g for g in guesses if g is not None]
            total = CorpusStats.combine(known)
            pending = [s.call("search", replace(base, stats=total, own=g, force=attempt == STATS_TRIES - 1))
                       for s, g in zip(self.shards, guesses)]
            answers: list[ShardAnswer] = [p.result() for p in pending]
            guesses = [self._learn(i, terms, a) for i, a in enumerate(answers)]
            if not any(a.stale for a in answers):
                return answers
        log.warning("%s: a shard's BM25 statistics changed on each of %d tries (writes meanwhile): this search's "
                    "BM25 scores used the last statistics given", self.layout.root, STATS_TRIES)
        return answers

    def _learn(self, shard: int, terms: list[str], answer: ShardAnswer) -> CorpusStats | None:
        if answer.stats is None:
            return None
        self.guess.put(shard, terms, answer.stats)
        return answer.stats

    def complete(self, q: Query, cands: Candidates, upto: int) -> None:
        """As `FirstStage.complete_scores`, from the scores each shard computed for its own candidates."""
        for r in cands.row_ids[:upto]:
            for name, scores in cands.complete.items():
                have = cands.per_method.setdefault(name, {})
                if r not in have and r in scores:
                    have[r] = scores[r]

    # ---- what the stages read of candidates: from their owners -----------------------------------------
    def _fetch(self, cands: Candidates, row_ids: list[int], vectors: bool = False, tokens: bool = False,
               with_body: bool = False) -> tuple[dict[int, StoredTicket], dict[int, np.ndarray], dict[int, Tokens]]:
        groups = self._by_owner(cands, row_ids)
        pending = {i: self.shards[i].call("rows", ids, vectors, tokens, with_body) for i, ids in groups.items()}
        rows: dict[int, StoredTicket] = {}
        vecs: dict[int, np.ndarray] = {}
        toks: dict[int, Tokens] = {}
        for p in pending.values():
            got: ShardRows = p.result()
            ids = [t.row_id for t in got.rows]
            rows.update(zip(ids, got.rows))
            if got.vectors is not None:
                vecs.update(zip(ids, got.vectors))
            if got.tokens is not None:
                toks.update(zip(ids, got.tokens))
        return rows, vecs, toks

    def candidate_rows(self, cands: Candidates, row_ids: list[int], with_body: bool = False) -> list[StoredTicket]:
        """The rows, and (one trip) the reranker's candidate vectors of them, kept with the candidates: those
        the shards' answers did not bring are asked of their owners."""
        wants = cands.wants_vectors
        have: dict[int, StoredTicket] = {} if with_body else cands.rows
        missing = [r for r in row_ids if r not in have or (wants and r not in cands.vectors)]
        if missing:
            rows, vecs, _ = self._fetch(cands, missing, vectors=wants, with_body=with_body)
            cands.vectors.update(vecs)
            have = {**have, **rows}
        return [have[r] for r in row_ids if r in have]

    def near_copies(self, text: str, cands: Candidates, rows: list[StoredTicket]) -> list[bool]:
        """The rule (`copies.is_near_copy`) with the dense scores this front holds, as one index applies it, and
        the words shared as the shards counted them; rows no shard's answer brought are tested here."""
        rest = [t for t in rows if t.row_id not in cands.shares]
        tested = dict(zip([t.row_id for t in rest], super().near_copies(text, cands, rest))) if rest else {}
        return [tested[t.row_id] if t.row_id in tested
                else is_near_copy(cands.method_scores(t.row_id).get("dense"), cands.shares[t.row_id]) for t in rows]

    def target_vectors(self, row_ids: list[int], cands: Candidates | None = None) -> np.ndarray:
        assert cands is not None
        missing = [r for r in row_ids if r not in cands.vectors]
        if missing:
            cands.vectors.update(self._fetch(cands, missing, vectors=True)[1])
        return np.stack([cands.vectors[r] for r in row_ids]).astype(np.float32)

    def candidate_tokens(self, cands: Candidates, row_ids: list[int]) -> list[Tokens]:
        toks = self._fetch(cands, row_ids, tokens=True)[2]
        return [toks[r] for r in row_ids]

    def like_ticket(self, ticket_id: str, tokens: bool = False,
                    ) -> tuple[StoredTicket, tuple[np.ndarray, np.ndarray] | None, Tokens | None]:
        """The ticket, its vectors and (when `tokens`) token states: one call to its shard."""
        src, vecs, toks = self.shards[self.layout.owner(ticket_id)].call("ticket", ticket_id, tokens).result()
        return src, vecs, toks

    def bodies(self, ids: list[str]) -> dict[str, str]:
        groups: dict[int, list[str]] = {}
        for i in ids:
            groups.setdefault(self.layout.owner(i), []).append(i)
        pending = [self.shards[s].call("bodies", part) for s, part in groups.items()]
        out: dict[str, str] = {}
        for p in pending:
            out.update(p.result())
        return out


class StoreView:
    """What the routes read of an engine's store: the schema."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema


class ShardedEngine:
    """A sharded collection with the interface of `Engine` that the service's routes and `TicketIndex` use."""

    def __init__(self, index_dir: Path, settings: Settings, models: SharedModels,
                 connect: Callable[[ShardLayout, Settings, SharedModels], Any] | None = None) -> None:
        """`connect(layout, settings, models)` gives an object with `clients` (one `ShardClient` per shard) and
        `close()`; default: the shards in this process (`LocalShards`)."""
        self.index_dir = Path(index_dir)
        self.settings = settings
        self.models = models
        self.layout = ShardLayout.load(self.index_dir)
        self.connect = connect or LocalShards
        self.ready = False
        self.failure: Exception | None = None  # why start() failed, its type kept (as Engine's)
        self.searcher: ShardedSearch | None = None
        self.store: StoreView | None = None
        self._conn: Any = None
        self._loaded: Loaded | None = None
        self._row_floor: int | None = None

    @property
    def error(self) -> str | None:
        return None if self.failure is None else one_line(self.failure)

    def use_settings(self, settings: Settings) -> None:
        """Answer with these settings from now on (a collection's duplicate precision changed while open)."""
        self.settings = settings
        if self.searcher is not None:
            self.searcher.settings = settings

    def start(self) -> None:
        try:
            self._conn = self.connect(self.layout, self.settings, self.models)
            d = self.layout.shard_dir(0)
            self._loaded = self.models.acquire(d, load_manifest(d))
            self.searcher = ShardedSearch(self.layout, self._conn.clients, self.settings,
                                          encoder=self._loaded.batched, query_encoder=self._loaded.batched_query)
            self.store = StoreView(self.searcher.schema)
            self.ready = True
        except Exception as exc:  # noqa: BLE001 - reported like an engine's start-up error
            self.failure = exc
            log.exception("cannot serve the sharded collection %s", self.index_dir)

    def close(self, compact: bool = True) -> None:
        self.ready = False
        if self._loaded is not None:
            self.models.release(self._loaded)
            self._loaded = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def _clients(self) -> list[ShardClient]:
        assert self._conn is not None
        return list(self._conn.clients)

    def _owner(self, ticket_id: str) -> ShardClient:
        return self._clients[shard_of(ticket_id, self.layout.shards)]

    # ---- reads ----------------------------------------------------------------------------------------
    def search(self, text: str | None = None, **options: Any) -> SearchResult:
        return self.run(SearchRequest.of(text, **options))

    def run(self, req: SearchRequest) -> SearchResult:
        assert self.searcher is not None
        return self.searcher.run(req)

    def get(self, ticket_id: str) -> dict[str, Any]:
        return dict(self._owner(ticket_id).call("get", ticket_id).result())

    def write_blocked(self) -> str | None:
        """Not asked of the shards (each may be another process): a shard's full disk comes back as its write's
        DiskFullError (503), with nothing written."""
        return None

    def count(self) -> int:
        pending = [c.call("count") for c in self._clients]
        return sum(int(p.result()) for p in pending)

    def schema_info(self) -> CollectionSchema:
        """The schema with each field's known values from every shard (each shard's most frequent first,
        interleaved: a value frequent in one shard stays near the front)."""
        assert self.searcher is not None
        schema = self.searcher.schema
        pending = [c.call("schema_fields") for c in self._clients]
        per_shard: list[list[SchemaField]] = [p.result() for p in pending]
        fields = []
        for j, f in enumerate(schema.fields):
            seen: dict[str, None] = {}
            lists = [s[j].values for s in per_shard]
            for rank in range(max((len(v) for v in lists), default=0)):
                for v in lists:
                    if rank < len(v):
                        seen.setdefault(v[rank], None)
            fields.append(SchemaField(name=f.name, kind=f.kind, values=list(seen)[:100]))
        return CollectionSchema(name=schema.name, text_fields=list(schema.text_fields), fields=fields)

    # ---- writes: to the shard that owns the id ----------------------------------------------------------
    def upsert(self, tickets: list[Ticket]) -> UpsertResult:
        """Each ticket to its shard (in parallel); returns after every shard has committed and applied."""
        distinct, repeated = last_of_each(tickets)
        latest = {t.id: t for t in distinct}
        groups: dict[int, list[Ticket]] = {}
        for t in latest.values():
            groups.setdefault(shard_of(t.id, self.layout.shards), []).append(t)
        numbers = self._number_new(list(latest), groups)
        prepared = self._prepare(list(latest.values()))
        at = {t.id: n for n, t in enumerate(latest.values())}
        pending = {i: self._clients[i].call("write", prepared.part([at[t.id] for t in part]),
                                            {t.id: numbers[t.id] for t in part if t.id in numbers})
                   for i, part in groups.items()}
        results: dict[int, UpsertResult] = {i: p.result() for i, p in pending.items()}
        by_id: dict[str, int] = {}
        for r in results.values():
            by_id.update(zip(r.ids, r.row_ids))
        ids = [t for t in latest if t in by_id]
        refused = {t for r in results.values() for t in r.stale}
        return UpsertResult(inserted=sum(r.inserted for r in results.values()),
                            updated=sum(r.updated for r in results.values()),
                            change_seq=max((r.change_seq for r in results.values()), default=0), ids=ids,
                            row_ids=[by_id[t] for t in ids], stale=[t for t in latest if t in refused],
                            repeated=repeated)

    def _prepare(self, tickets: list[Ticket]) -> Prepared:
        """A write's vectors, computed here for every shard as one index computes them (`engine.prepare`: the
        same batches, and a text any shard has embedded keeps that vector), so that a sharded collection and an
        index given the same writes hold the same floats."""
        assert self.searcher is not None and self._loaded is not None
        rerank = self.searcher.reranker if isinstance(self.searcher.reranker, Reranker) else None

        def cached(key: str, hashes: list[str]) -> dict[str, np.ndarray]:
            out: dict[str, np.ndarray] = {}
            for p in [c.call("cached_embeddings", key, hashes) for c in self._clients]:
                out.update(p.result())
            return out

        return prepare(tickets, self.searcher.schema, self._loaded.batched, rerank, cached)

    def _number_new(self, ids: list[str], groups: dict[int, list[Ticket]]) -> dict[str, int]:
        """Row ids for the tickets no shard holds yet, handed out by shard 0 in the order they come, as one
        index numbers its new tickets: the same tickets get the same row ids (which break ties in every
        ranking) whether the collection is sharded or not."""
        asked = {i: self._clients[i].call("existing_row_ids", [t.id for t in part]) for i, part in groups.items()}
        have: dict[str, int] = {}
        for p in asked.values():
            have.update(p.result())
        new = [tid for tid in ids if tid not in have]
        if not new:
            return {}
        if self._row_floor is None:  # once per front: no row id below any a shard has given (older layouts)
            self._row_floor = max(int(p.result()) for p in [c.call("next_row_id") for c in self._clients])
        start = int(self._clients[0].call("allocate_rows", len(new), self._row_floor).result())
        return {tid: start + j for j, tid in enumerate(new)}

    def delete(self, ticket_id: str) -> int:
        return int(self._owner(ticket_id).call("delete", ticket_id).result())

    def record_feedback(self, ticket_id: str, candidate_id: str, label: str, by: str | None = None) -> Any:
        """An agent's decision on a pair, kept in the shard of each of its two tickets, so that each ticket's
        shard lists every decision on it (the same checks and answer as one index)."""

        decision = feedback.decide(self.get, ticket_id, candidate_id, label, by)
        owners = {shard_of(t, self.layout.shards) for t in (ticket_id, candidate_id)}
        for p in [self._clients[i].call("store_decision", decision) for i in sorted(owners)]:
            p.result()
        return decision

    def feedback_for(self, ticket_id: str) -> list[Any]:
        return list(self._owner(ticket_id).call("feedback_for", ticket_id).result())

    def delivery_answer(self, source: str, delivery_id: str) -> dict[str, Any] | None:
        answer: dict[str, Any] | None = self._owner(delivery_id).call("delivery_answer", source, delivery_id).result()
        return answer

    def remember_delivery(self, source: str, delivery_id: str, response: dict[str, Any]) -> None:
        self._owner(delivery_id).call("remember_delivery", source, delivery_id, response).result()

    def checkpoint(self, compact: bool = False) -> int:
        pending = [c.call("checkpoint") for c in self._clients]
        return max(int(p.result()) for p in pending)
