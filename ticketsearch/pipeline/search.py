"""The search pipeline, in named stages: a `Query` is built once, then `first_stage(query) -> Candidates`,
then `rerank(query, candidates) -> hits` with the index's own model or the shipped general one (or first-stage
order where training found neither better, which it says).

No stage recomputes what an earlier one made: the query's one encoder pass gives its retrieval vector and the
token states the reranker attends over; the first stage's scores become the reranker's pair inputs through
`pipeline.pairs`, the same function training uses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ticketsearch.errors import QueryError, RequestError, TicketsearchError
from ticketsearch.index_data.records import coerce_value, text_hash, ticket_text
from ticketsearch.index_data.schema import Schema
from ticketsearch.index_data.store import StoredTicket, TicketStore
from ticketsearch.index_dir import IndexDir
from ticketsearch.pipeline.copies import near_copies, word_shares
from ticketsearch.pipeline.parts import index_settings, load_manifest, open_encoder, open_reranker, open_store
from ticketsearch.requests import SearchRequest, as_datetime, as_filters, checked_fields, iso_utc, now
from ticketsearch.rerank.explain import attended_words, content_words, matched_words
from ticketsearch.rerank.general import GeneralReranker, LinearReranker
from ticketsearch.rerank.runtime import Reranker
from ticketsearch.rerank.token_cache import TokenCache, Tokens, pad_arrays
from ticketsearch.results import AttendedWord, Hit, MatchedWord, RerankerKind, SearchResult
from ticketsearch.retrieval.encoder import ModelIdentity, as_array, model_identity
from ticketsearch.retrieval.first_stage import Candidates, FirstStage, FirstStageIndexes, fusion_weights
from ticketsearch.retrieval.lexical import BM25Index, bm25_text, title_query
from ticketsearch.retrieval.live import LiveBM25, LiveVectors, RowVectors
from ticketsearch.retrieval.onnx_query import lite_query_encoder
from ticketsearch.retrieval.query_kinds import is_short_query
from ticketsearch.retrieval.ties import tie_keys
from ticketsearch.retrieval.vector_index import VectorIndex
from ticketsearch.settings import Settings

from .pairs import CODE_TERMS, RERANK_DEPTH, ListScores, TextScores, bm25_scale, pair_inputs
from .rerank_vectors import load_rerank_vectors, token_cache_for, token_states
from .snippets import highlights, query_stems, snippet

LOGIT_DECIMALS = 4  # reranker logits equal to this many decimals are ties (kept in first-stage order)

if TYPE_CHECKING:
    from ticketsearch.retrieval.encoder import Encoder


@dataclass
class Query:
    """Everything every stage needs, computed once."""

    text: str  # the text the encoder and the reranker see (the schema's text fields joined)
    title: str  # "" for a free-text query without a separate title
    bm25_text: str
    values: dict[str, Any]  # typed field values of the query ticket
    created: datetime  # the query's place in time for the pair inputs: its date (`before`, a `like` ticket's
    # own), or the time of the request when it has none (`requests.now`)
    vector: np.ndarray | None = None  # [D] retrieval embedding
    title_vector: np.ndarray | None = None  # [D] title embedding (the full one when there is no title)
    tokens: Tokens | None = None  # token states for the reranker
    filters: dict[str, list[Any]] | None = None
    before: datetime | None = None
    after: datetime | None = None
    exclude_ids: list[str] = field(default_factory=list)
    reference: datetime | None = None  # "now" for the recency list
    short: bool = False  # a few words of free text (`query_kinds.is_short_query`), not a whole ticket


@dataclass
class QueryOptions:
    """A query's options, checked and typed (`SearchPipeline.query_options`)."""

    values: dict[str, Any]  # the query ticket's own typed fields
    filters: dict[str, list[Any]] | None
    before: datetime | None
    after: datetime | None
    need_vec: bool  # the fusion (or the reranker) uses the query's vectors
    tokens: bool  # the reranker attends over the query's token states


def jsonable(v: Any) -> Any:
    return iso_utc(v) if isinstance(v, datetime) else v


def make_hit(t: StoredTicket, retrieval_score: float, scores: dict[str, float], rerank_score: float | None = None,
             probability: float | None = None, near_copy: bool = False) -> Hit:
    final = retrieval_score if rerank_score is None else rerank_score
    return Hit(id=t.id, title=t.title, created=iso_utc(t.created),
               fields={k: jsonable(v) for k, v in t.values.items()}, score=round(final, 6),
               retrieval_score=round(retrieval_score, 6),
               rerank_score=None if rerank_score is None else round(rerank_score, 6),
               probability=None if probability is None else round(probability, 6),
               scores={k: round(v, 6) for k, v in scores.items()}, near_copy=near_copy)


def model_id(reranker: Reranker | LinearReranker) -> str:
    """A reranker's identity as results and training jobs name it: `NAME@CHECKSUM` (the first 12 digits)."""
    return f"{reranker.name}@{reranker.checksum[:12]}"


def reranker_kind(d: IndexDir, settings: Settings) -> RerankerKind:
    """Which reranker an index directory's search uses: "trained" (its own), "general" (the shipped model: never
    trained, or training chose it) or "none" (first-stage order)."""
    if d.has_reranker():
        return "trained"
    decision = d.load_rerank_decision()
    if (decision is None or decision.get("use") == "general") and settings.general_reranker:
        return "general"
    return "none"


def load_first_stage(d: IndexDir, kind: str, settings: Settings, seq: int) -> FirstStageIndexes:
    """The first stage's indexes as the last checkpoint left them: each base with its saved overlay of live
    changes (a service's writes since the last compaction), read-only."""
    text, title = (LiveVectors(VectorIndex.load(d.vectors_path(w), kind, settings)) for w in ("text", "title"))
    bm25 = LiveBM25(BM25Index.load(d.bm25_path))
    text.load_overlay(d.overlay_path("text"), seq)
    title.load_overlay(d.overlay_path("title"), seq)
    bm25.load_overlay(d.bm25_overlay_path, seq)
    return FirstStageIndexes(text, title, bm25)


class SearchPipeline:
    """One index directory's search: read-only by default; the service's engine passes live indexes."""

    keeps_vectors = True  # holds the reranker's candidate vectors (a sharded front asks the shards for them)

    def __init__(
        self, index_dir: Path | IndexDir, settings: Settings, encoder: Encoder | None = None,
        store: TicketStore | None = None, query_encoder: Any = None, indexes: FirstStageIndexes | None = None,
    ) -> None:
        self.dir = index_dir if isinstance(index_dir, IndexDir) else IndexDir(index_dir)
        self.settings = settings
        self.manifest = load_manifest(self.dir)
        self.store = store or open_store(self.dir, read_only=True)
        self.indexes = indexes or load_first_stage(self.dir, self.manifest.index_kind, self.settings,
                                                   self.manifest.change_seq)
        self.first = FirstStage(self.manifest, self.store, self.indexes, self.settings.fusion_depth)
        self._encoder = encoder
        self._query_encoder = query_encoder
        self._identity: ModelIdentity | None = None
        self.reranker: Reranker | LinearReranker | None
        self.vectors: RowVectors | None
        self.notes: list[str]
        self._token_cache: TokenCache | None = None
        self.reranker, self.vectors, self.notes = self.load_reranker()

    def load_reranker(self) -> tuple[Reranker | LinearReranker | None, RowVectors | None, list[str]]:
        """The reranker the index directory has now, its candidate vectors and the notes that say why (what
        `__init__` installs, and what a live engine swaps in after training)."""
        notes: list[str] = []
        kind = reranker_kind(self.dir, self.settings)
        if kind != "trained":
            decision = self.dir.load_rerank_decision()
            if kind == "general":
                try:
                    general_model = GeneralReranker()
                except TicketsearchError as exc:
                    notes.append(f"the general reranker cannot be used ({exc}): results are in first-stage order")
                    return None, None, notes
                notes.append("no trained reranker in this index: reranked with the general model (trained on "
                             "other projects' links)" if decision is None else
                             f"reranked with the general model: {decision.get('reason')}")
                return general_model, None, notes
            if decision and not decision.get("install"):
                notes.append(f"no reranker installed: {decision.get('reason')}")
            else:
                notes.append("no trained reranker in this index: results are in first-stage order")
            return None, None, notes
        try:
            reranker = open_reranker(self.dir, self.settings)
        except TicketsearchError as exc:
            notes.append(f"the installed reranker cannot be used ({exc}): results are in first-stage order")
            return None, None, notes
        if not self.keeps_vectors or isinstance(reranker, LinearReranker):  # a linear model has no vectors
            return reranker, None, notes
        try:
            vectors = load_rerank_vectors(self.dir, reranker)
        except TicketsearchError:
            notes.append("candidate vectors are missing or from another reranker (run 'ticketsearch train' "
                         "or 'ticketsearch ingest'): results are in first-stage order")
            return None, None, notes
        return reranker, vectors, notes

    def reset_token_cache(self) -> None:
        self._token_cache = None

    @property
    def index_dir(self) -> Path:
        return self.dir.root

    @property
    def encoder(self) -> Encoder:
        """The fp32 encoder the index was built with (indexed tickets)."""
        if self._encoder is None:
            self._encoder = open_encoder(self.dir, self.settings, self.manifest)
        return self._encoder

    @property
    def identity(self) -> ModelIdentity:
        """The index's encoder, found without loading it (checked against the manifest, as `open_encoder` does)."""
        if self._identity is None:
            if self._encoder is not None:
                self._identity = self._encoder.identity
            else:
                ident = model_identity(self.manifest.model, self.manifest.max_seq_length, self.settings.cache_dir)
                if ident.key != self.manifest.model_key:
                    raise TicketsearchError(f"{self.dir.root} was built with model {self.manifest.model_key}; the "
                                            f"model found is {ident.key}")
                self._identity = ident
        return self._identity

    @property
    def query_encoder(self) -> Any:
        """What query texts go through (`settings.query_encoder`); same interface as `Encoder`. On a CPU with the
        int8 ONNX export in place that is `onnx_query.LiteQueryEncoder`, and no torch is loaded; otherwise the
        fp32 encoder's own query path (`quantized.query_encoder_for`, which exports where needed)."""
        if self._query_encoder is None:
            settings = index_settings(self.manifest, self.settings)
            lite = None if self._encoder is not None else lite_query_encoder(self.identity, settings)
            if lite is not None:
                self._query_encoder = lite
            else:
                from ticketsearch.retrieval.quantized import query_encoder_for  # deferred: torch

                self._query_encoder = query_encoder_for(self.encoder)
        return self._query_encoder

    @property
    def rerank_depth(self) -> int:
        assert self.reranker is not None
        return int(self.reranker.meta.get("rerank_depth", RERANK_DEPTH))

    def close(self) -> None:
        self.store.close()

    # ---- stage 0: the query -------------------------------------------------------------------------
    def field_values(self, fields: dict[str, Any] | None) -> dict[str, Any]:
        """The query ticket's own fields, checked by the one rule (`requests.checked_fields`) and typed (unseen
        values are fine)."""
        schema = self.schema
        out: dict[str, Any] = {}
        for name, value in checked_fields(schema, fields or {}, "fields").items():
            try:
                out[name] = coerce_value(schema.field(name), value)
            except ValueError as exc:
                raise RequestError(str(exc), field=f"fields.{name}") from None
        return out

    def query(
        self, text: str | None = None, *, title: str | None = None, like: str | None = None,
        fields: dict[str, Any] | None = None, filters: dict[str, list[Any]] | None = None,
        before: str | datetime | None = None, after: str | datetime | None = None,
        method: str = "hybrid", tokens: bool = False, vectors: bool = False,
    ) -> Query:
        """Build the query once: its text, vectors (and token states when `tokens`), typed fields and time.
        `vectors`: encode the query whatever the method fuses (a reranker reads its cosines)."""
        o = self.query_options(fields, filters, before, after, method, tokens, vectors)
        if like is not None:
            if text or title:
                raise QueryError("give either a query text or --like ID, not both")
            return self.like_query(like, o)
        values, filters, before_dt, after_dt, need_vec = o.values, o.filters, o.before, o.after, o.need_vec
        head, body = (title or "").strip(), (text or "").strip()
        if not head and not body:
            raise QueryError("query text is empty")
        full = ticket_text(self.schema, head, body) if head else body
        # A query with a date (`before`: a new ticket's creation time) is measured from it; one without is
        # asked now: the time of the request (never a zero gap to every candidate).
        q = Query(text=full, title=head, bm25_text=bm25_text(head, body) if head else body, values=values,
                  created=before_dt or now(), filters=filters, before=before_dt, after=after_dt, reference=before_dt,
                  short=is_short_query(head, body, bool(values)))
        if tokens:  # one pass: the retrieval embedding and the token states the reranker attends over
            tb = self.query_encoder.encode_with_tokens([full])
            n = int(tb.attention_mask[0].sum())
            q.tokens = Tokens(as_array(tb.tokens[0, :n], np.float32), as_array(tb.input_ids[0, :n]))
            q.vector = as_array(tb.pooled[0], np.float32)
        elif need_vec:
            q.vector = self.query_encoder.encode([full])[0]
        if need_vec:
            q.title_vector = self.query_encoder.encode([head])[0] if head and body else q.vector
        return q

    def query_options(self, fields: dict[str, Any] | None, filters: dict[str, list[Any]] | None,
                      before: str | datetime | None, after: str | datetime | None, method: str,
                      tokens: bool, vectors: bool = False) -> QueryOptions:
        """A query's options checked and typed, before anything is read or encoded. The query is encoded where
        the method fuses a vector list, the reranker reads token states (`tokens`) or its pair inputs' cosines
        (`vectors`: training computed them for every query, so search never leaves them at zero)."""
        values = self.field_values(fields)
        checked = as_filters(checked_fields(self.schema, filters or {}, "filters", is_filter=True)) or None
        before_dt, after_dt = as_datetime(before, "before"), as_datetime(after, "after")
        use = fusion_weights(self.manifest, method)
        return QueryOptions(values, checked, before_dt, after_dt,
                            tokens or vectors or bool(use.keys() & {"dense", "title"}), tokens)

    def like_query(self, like: str, o: QueryOptions) -> Query:
        """The query of a search like the indexed ticket `like` (one read of it: `like_ticket`)."""
        src, vecs, toks = self.like_ticket(like, o.tokens)
        q = Query(text=ticket_text(self.schema, src.title, src.body), title=src.title,
                  bm25_text=bm25_text(src.title, src.body), values={**src.values, **o.values}, created=src.created,
                  filters=o.filters, before=o.before, after=o.after, exclude_ids=[like],
                  reference=min(o.before, src.created) if o.before else src.created)
        if o.need_vec:
            if vecs is not None:
                q.vector, q.title_vector = vecs
            else:
                q.vector = self.encoder.encode([q.text])[0]
                q.title_vector = self.encoder.encode([src.title])[0]
        q.tokens = toks
        return q

    # ---- stage 1: candidates ------------------------------------------------------------------------
    def reads_cosines(self, rerank: bool) -> bool:
        """Whether a search that reranks (`rerank`) needs the query's vectors for the reranker's pair inputs."""
        return rerank and self.reranker is not None and self.reranker.uses_pair

    def retrieve(self, req: SearchRequest, method: str, depth: int, tokens: bool,
                 rerank: bool) -> tuple[Query, Candidates]:
        """The query and its candidates (`first_stage`); "encode" in the candidates' timings."""
        t0 = time.perf_counter()
        q = self.query(req.text, title=req.title, like=req.like, fields=req.fields, filters=req.filters,
                       before=req.created_before, after=req.created_after, method=method, tokens=tokens,
                       vectors=self.reads_cosines(rerank))
        encode_ms = (time.perf_counter() - t0) * 1000
        cands = self.first_stage(q, method, depth, rerank)
        cands.timings_ms = {"encode": encode_ms, **cands.timings_ms}
        return q, cands

    def first_stage(self, q: Query, method: str, depth: int, rerank: bool = False) -> Candidates:
        """The candidates (`rerank`: the search reranks them, so a sharded front has their vectors fetched)."""
        return self.first.run(method, depth, q.vector, q.title_vector, q.bm25_text, q.filters, q.before, q.after,
                              q.exclude_ids, q.reference)

    # ---- stage 2: rerank ----------------------------------------------------------------------------
    def pair_inputs(self, q: Query, cands: Candidates, rows: list[StoredTicket]) -> np.ndarray | None:
        """The reranker's pair inputs for the first len(rows) candidates (`rows` in candidate order)."""
        reranker = self.reranker
        assert reranker is not None
        if not reranker.uses_pair:
            return None
        ids = [t.row_id for t in rows]
        pm = cands.per_method

        def col(name: str) -> np.ndarray:
            return np.array([pm.get(name, {}).get(r, 0.0) for r in ids], np.float64)

        scores = ListScores(col("dense"), col("title"), col("bm25"), np.arange(1, len(ids) + 1, dtype=np.float64))
        text = None
        if reranker.text:
            titled = col("bm25_title")
            text = TextScores(col("dense_title"), col("title_dense"), titled, bm25_scale(titled))
        return pair_inputs(reranker.schema, q.text, q.values, q.created, scores, bm25_scale(scores.bm25),
                           [t.title for t in rows], [t.values for t in rows], [t.created for t in rows],
                           short=q.short if reranker.query_kinds else None,
                           candidate_code=CODE_TERMS.of([t.text_hash for t in rows], self._texts(rows))
                           if reranker.code else None, text=text)

    def rerank(self, q: Query, cands: Candidates, k: int, explain: bool = False,
               timings: dict[str, float] | None = None) -> tuple[list[Hit], list[str]]:
        """The top k of the reranked top `rerank_depth`, and notes (the explanation of the query's side).
        `timings` gets "fetch" (the candidates' exact first-stage scores and their rows) and "rerank" (the rest)."""
        reranker = self.reranker
        assert reranker is not None and (q.tokens is not None or not reranker.needs_tokens)
        depth = self.rerank_depth
        t0 = time.perf_counter()
        self.complete(q, cands, depth)
        by_row = {t.row_id: t for t in self.candidate_rows(cands, cands.row_ids[:depth])}
        rows = [by_row[r] for r in cands.row_ids[:depth] if r in by_row]
        t1 = time.perf_counter()
        if timings is not None:
            timings["fetch"] = (t1 - t0) * 1000
        if not rows:
            return [], []
        pair = self.pair_inputs(q, cands, rows)
        q_attn: np.ndarray | None = None
        if isinstance(reranker, LinearReranker):  # the pair inputs alone
            assert pair is not None
            logits = reranker.score_pairs(pair)
        else:
            assert q.tokens is not None
            toks, mask = pad_arrays([q.tokens])
            src_vec, q_attn = reranker.item_vectors(toks, mask, [q.values], "source")
            targets = self.target_vectors([t.row_id for t in rows], cands)
            logits = reranker.score(src_vec[0], targets, pair)
        probs = reranker.probability(logits)
        fused = dict(zip(cands.row_ids, cands.scores))
        copies = np.array(self.near_copies(q.text, cands, rows), dtype=bool)
        # near copies first, each part by the model's score; scores equal to LOGIT_DECIMALS are ties and keep the
        # first-stage order (a candidate's logit differs in the last bits by the batch it was scored in)
        order = np.lexsort((-tie_keys(logits, LOGIT_DECIMALS), ~copies))[:k]
        hits = [make_hit(rows[i], fused[rows[i].row_id], cands.method_scores(rows[i].row_id), float(logits[i]),
                         float(probs[i]), near_copy=bool(copies[i])) for i in order.tolist()]
        notes: list[str] = []
        if explain:
            assert q.tokens is not None
            top = [rows[i] for i in order.tolist()]
            cand_tokens = self.candidate_tokens(cands, [t.row_id for t in top])
            tok = self.encoder.tokenizer
            q_words = content_words(q.tokens.states, q.tokens.ids, tok)
            for h, ct in zip(hits, cand_tokens):
                h.matched = [MatchedWord(word=m.word, match=m.match, kind=m.kind, similarity=m.similarity)
                             for m in matched_words(q_words, content_words(ct.states, ct.ids, tok))]
            if q_attn is None:
                notes.append("this reranker has no attention to explain")
            else:
                notes.append("query attended: " + ", ".join(w for w, _ in attended_words(q.tokens.ids, q_attn[0], tok)))
                assert isinstance(reranker, Reranker)
                t, m = pad_arrays(cand_tokens)
                _, c_attn = reranker.item_vectors(t, m, [r.values for r in top], "target")
                assert c_attn is not None
                for h, ct, a in zip(hits, cand_tokens, c_attn):
                    h.attended = [AttendedWord(word=w, weight=round(float(v), 4))
                                  for w, v in attended_words(ct.ids, a[: len(ct.ids)], tok)]
        if timings is not None:
            timings["rerank"] = (time.perf_counter() - t1) * 1000
        return hits, notes

    def _tokens_for(self, row_ids: list[int]) -> list[Tokens]:
        if self._token_cache is None:  # opened once: it reads every shard's index
            self._token_cache = token_cache_for(self.dir, self.identity.key)
        cache = self._token_cache
        rows = {t.row_id: t for t in self.store.get_rows(row_ids)}
        out = []
        for r in row_ids:
            text = ticket_text(self.schema, rows[r].title, rows[r].body)
            h = text_hash(text)
            out.append(cache.get(h) if h in cache else token_states(self.encoder, [text])[0])
        return out

    # ---- what the stages read of the index (a sharded collection's front asks its shards instead) --------
    @property
    def schema(self) -> Schema:
        return self.store.schema

    def like_ticket(self, ticket_id: str, tokens: bool = False,
                    ) -> tuple[StoredTicket, tuple[np.ndarray, np.ndarray] | None, Tokens | None]:
        """What a search `like` an indexed ticket reads of it (one read of its shard, sharded): the ticket
        (NotFoundError if none), its text and title vectors (None where the index lacks them) and, when
        `tokens`, its token states."""
        src = self.store.get(ticket_id)
        try:
            vecs: tuple[np.ndarray, np.ndarray] | None = (self.indexes.vindex.reconstruct(src.row_id),
                                                           self.indexes.tindex.reconstruct(src.row_id))
        except KeyError:
            vecs = None
        return src, vecs, self._tokens_for([src.row_id])[0] if tokens else None

    def complete(self, q: Query, cands: Candidates, upto: int) -> None:
        """Every method's exact score for the first `upto` candidates (`FirstStage.complete_scores`), and the
        text columns' scores for a reranker that reads them."""
        self.first.complete_scores(cands, upto, q.vector, q.title_vector, q.bm25_text,
                                   title_query=self.title_query(q.title, q.bm25_text))

    def title_query(self, title: str, bm25_query: str) -> str | None:
        """What BM25 of a query's title scores (`lexical.title_query`), where the reranker reads the text columns;
        None where it does not."""
        return title_query(title, bm25_query) if self.reranker is not None and self.reranker.text else None

    def candidate_rows(self, cands: Candidates, row_ids: list[int], with_body: bool = False) -> list[StoredTicket]:
        return self.store.get_rows(row_ids, with_body=with_body)

    def candidate_tokens(self, cands: Candidates, row_ids: list[int]) -> list[Tokens]:
        return self._tokens_for(row_ids)

    def bodies(self, ids: list[str]) -> dict[str, str]:
        return self.store.bodies(ids)

    def target_vectors(self, row_ids: list[int], cands: Candidates | None = None) -> np.ndarray:
        """Candidate vectors: cached at index time; computed now for any row the cache lacks."""
        assert isinstance(self.reranker, Reranker) and self.vectors is not None
        missing = [r for r in row_ids if r not in self.vectors]
        if missing:
            rows = {t.row_id: t for t in self.store.get_rows(missing)}
            vecs = self.reranker.vectors_from_cache(self._tokens_for(missing), [rows[r].values for r in missing],
                                                    "target")
            self.vectors.upsert(missing, vecs)
        return self.vectors.get(row_ids)

    def first_stage_hits(self, q: Query, cands: Candidates, k: int) -> list[Hit]:
        """The first k candidates in first-stage order, near copies first (as reranked answers have them)."""
        by_row = {t.row_id: t for t in self.candidate_rows(cands, cands.row_ids[:k])}
        found = [(by_row[r], s) for r, s in zip(cands.row_ids[:k], cands.scores) if r in by_row]
        copies = self.near_copies(q.text, cands, [t for t, _ in found])
        hits = [make_hit(t, s, cands.method_scores(t.row_id), near_copy=c) for (t, s), c in zip(found, copies)]
        return sorted(hits, key=lambda h: not h.near_copy)  # stable: each part keeps its order

    def near_copies(self, text: str, cands: Candidates, rows: list[StoredTicket]) -> list[bool]:
        """Which of `rows` are near copies of the query's `text` (`pipeline.copies`; bodies read for the few
        candidates whose dense cosine passes)."""
        return near_copies(text, [cands.method_scores(t.row_id).get("dense") for t in rows], self._texts(rows))

    def word_shares(self, text: str, cosines: list[float | None], rows: list[StoredTicket],
                    floor: float) -> list[float | None]:
        """`copies.word_shares` of `rows` (their dense `cosines` given) with the query's `text`."""
        return word_shares(text, cosines, self._texts(rows), floor)

    def _texts(self, rows: list[StoredTicket]) -> Callable[[list[int]], list[str]]:
        def texts(positions: list[int]) -> list[str]:
            bodies = self.bodies([rows[i].id for i in positions])
            return [ticket_text(self.schema, rows[i].title, bodies.get(rows[i].id, "")) for i in positions]
        return texts

    # ---- the whole search ---------------------------------------------------------------------------
    def search(self, text: str | None = None, **options: Any) -> SearchResult:
        """`run(SearchRequest.of(text, **options))`: the library's spelling of a search."""
        return self.run(SearchRequest.of(text, **options))

    def run(self, req: SearchRequest) -> SearchResult:
        """Top-k tickets for a query text (optionally with a separate title), or for an indexed ticket (`like`).

        Filters, `created_before` and `created_after` restrict the candidates before the top k is cut.
        `snippets`: each hit carries a passage of its body and the words that match the query (one more read of
        k bodies).
        """
        method, k = req.method or self.settings.search_method, req.k
        reranking = req.rerank and self.reranker is not None
        tokens = reranking and (req.explain or self.reranker is None or self.reranker.needs_tokens)
        q, cands = self.retrieve(req, method, max(k, self.rerank_depth) if reranking else k, tokens, reranking)
        timings = dict(cands.timings_ms)
        t1 = time.perf_counter()
        if reranking:
            hits, notes = self.rerank(q, cands, k, req.explain, timings)
            assert self.reranker is not None
            why = self.notes if isinstance(self.reranker, GeneralReranker) else []  # why the general model
            notes = [*notes, *why, f"reranked the top {min(len(cands), self.rerank_depth)} with {self.reranker.name}"]
        else:
            hits = self.first_stage_hits(q, cands, k)
            notes = list(self.notes) if req.rerank else ["reranking switched off: first-stage order"]
            timings["fetch"] = (time.perf_counter() - t1) * 1000
        if req.snippets:
            t2 = time.perf_counter()
            self.add_snippets(q.text, hits)
            timings["snippets"] = (time.perf_counter() - t2) * 1000
        model = self.reranker if reranking else None
        return SearchResult(query=q.text, method=method, reranked=reranking and bool(hits), hits=hits, notes=notes,
                            reranker=model_id(model) if model is not None else None,
                            threshold=self.threshold_of(model), timings_ms={n: round(v, 3) for n, v in timings.items()})

    def threshold_of(self, model: Reranker | LinearReranker | None) -> float | None:
        """The model's stored duplicate threshold for the service's target precision (None: no model, or none
        stored for that precision)."""
        if model is None:
            return None
        try:
            return model.duplicate_threshold(self.settings.duplicate_precision)
        except KeyError:
            return None

    def add_snippets(self, query_text: str, hits: list[Hit]) -> None:
        qstems = query_stems(query_text)
        bodies = self.bodies([h.id for h in hits])
        for h in hits:
            h.snippet = snippet(bodies.get(h.id, ""), qstems)
            h.highlight = highlights((h.title, h.snippet), qstems)
