"""Search that always reranks: first stage (hybrid by default), then the trained pair model over the top
candidates, using per-candidate vectors computed once at index time and tagged with the model's checksum.

Without a trained reranker (or with candidate vectors from another model) it falls back to first-stage
order and says so in the result's notes.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from ticketsearch.settings import Settings, get_settings
from ticketsearch.errors import QueryError, TicketsearchError
from ticketsearch.index_dir import IndexDir
from ticketsearch.index_data.records import coerce_value, parse_datetime, text_hash, ticket_text
from ticketsearch.index_data.store import TicketStore
from ticketsearch.rerank.explain import attended_words
from ticketsearch.rerank.pair_features import title_in_query, words
from ticketsearch.rerank.runtime import Reranker
from ticketsearch.rerank.token_cache import TokenCache, Tokens, pad_batch
from ticketsearch.retrieval.encoder import Encoder
from ticketsearch.retrieval.live import RowVectors
from ticketsearch.retrieval.search import SearchResult, Searcher

from .rerank_vectors import load_rerank_vectors, token_cache_for, token_states

RERANK_DEPTH = 100

class RerankingSearcher:
    def __init__(
        self, index_dir: Path, settings: Settings | None = None, encoder: Encoder | None = None,
        store: TicketStore | None = None, query_encoder: Any = None,
    ) -> None:
        self.index_dir = Path(index_dir)
        self.settings = settings or get_settings()
        self.base = Searcher(self.index_dir, settings=self.settings, encoder=encoder, store=store,
                             query_encoder=query_encoder)
        self.store = self.base.store
        self.reranker: Reranker | None = None
        self.notes: list[str] = []
        self.vectors: RowVectors | None = None
        self._token_cache: TokenCache | None = None
        d = IndexDir(self.index_dir)
        if not d.has_reranker():
            self.notes.append("no trained reranker in this index: results are in first-stage order")
            return
        try:
            self.reranker = d.open_reranker(self.settings)
        except TicketsearchError as exc:
            self.notes.append(f"the installed reranker cannot be used ({exc}): results are in first-stage order")
            return
        try:
            self.vectors = load_rerank_vectors(d, self.reranker)
        except TicketsearchError:
            self.notes.append("candidate vectors are missing or from another reranker (run 'ticketsearch train' "
                              "or 'ticketsearch ingest'): results are in first-stage order")
            self.reranker = None

    @property
    def encoder(self) -> Encoder:
        return self.base.encoder

    @property
    def query_encoder(self) -> Encoder:
        return self.base.query_encoder

    def close(self) -> None:
        self.base.close()

    def _query_values(self, fields: dict[str, Any] | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in (fields or {}).items():
            try:
                out[name] = coerce_value(self.store.schema.field(name), value)
            except ValueError as exc:
                raise QueryError(str(exc)) from None
        return out

    def _tokens_for(self, row_ids: list[int]) -> list[Tokens]:
        if self._token_cache is None:  # opened once: it reads every shard's index
            self._token_cache = token_cache_for(IndexDir(self.index_dir), self.encoder)
        cache = self._token_cache
        rows = {t.row_id: t for t in self.store.get_rows(row_ids)}
        out = []
        for r in row_ids:
            text = ticket_text(self.store.schema, rows[r].title, rows[r].body)
            h = text_hash(text)
            out.append(cache.get(h) if h in cache else token_states(self.encoder, [text])[0])
        return out

    def target_vectors(self, row_ids: list[int]) -> np.ndarray:
        """Candidate vectors: cached at index time; computed now for any row the cache lacks."""
        assert self.reranker is not None and self.vectors is not None
        missing = [r for r in row_ids if r not in self.vectors]
        if missing:
            rows = {t.row_id: t for t in self.store.get_rows(missing)}
            vecs = self.reranker.vectors_from_cache(self._tokens_for(missing), [rows[r].values for r in missing],
                                                    "target")
            self.vectors.upsert(missing, vecs)
        return self.vectors.get(row_ids)

    def search(
        self, text: str | None = None, *, title: str | None = None, like: str | None = None,
        fields: dict[str, Any] | None = None, filters: dict[str, list[Any]] | None = None,
        before: str | datetime | None = None, after: str | datetime | None = None, k: int = 10,
        method: str | None = None, rerank: bool = True, explain: bool = False,
    ) -> SearchResult:
        self.base.validate_fields(fields)
        if not rerank or self.reranker is None:
            res = self.base.search(text, title=title, like=like, fields=fields, filters=filters, before=before,
                                   after=after, k=k, method=method)
            res.notes = list(self.notes) if rerank else ["reranking switched off: first-stage order"]
            return res
        reranker = self.reranker
        t0 = time.perf_counter()
        q_tokens: Tokens
        qvecs = None
        if like is None:
            head, body = (title or "").strip(), (text or "").strip()
            if not head and not body:
                raise QueryError("query text is empty")
            full = ticket_text(self.store.schema, head, body) if head else body
            q_text = full
            # one pass: the retrieval embedding and the token states the reranker attends over
            tb = self.query_encoder.encode_with_tokens([full])
            n = int(tb.attention_mask[0].sum())
            q_tokens = Tokens(tb.tokens[0, :n].float().cpu().numpy(), tb.input_ids[0, :n].cpu().numpy())
            tvec = self.query_encoder.encode([head]) if head and body else None
            qvecs = (tb.pooled[:1].float().cpu().numpy(), tvec)
            q_values = self._query_values(fields)
            # The time gap is a pair input. A query with a date (`before`: a new ticket's creation time) is
            # measured from it; a query without one has no place in time, so each candidate is taken as
            # contemporary (gap 0) and the model ranks on text, fields and first-stage scores alone.
            q_created = parse_datetime(before) if isinstance(before, str) else before
        else:
            src = self.store.get(like)
            q_text = ticket_text(self.store.schema, src.title, src.body)
            q_tokens = self._tokens_for([src.row_id])[0]
            q_values = {**src.values, **self._query_values(fields)}
            q_created = src.created
            try:
                qvecs = (self.base.vindex.reconstruct(src.row_id)[None, :], self.base.tindex.reconstruct(src.row_id)[None, :])
            except KeyError:
                qvecs = None
        encode_ms = (time.perf_counter() - t0) * 1000
        first = self.base.search(text, title=title, like=like, fields=fields, filters=filters, before=before,
                                 after=after, k=max(k, RERANK_DEPTH), method=method,
                                 query_vectors=qvecs if like is None else None)
        t1 = time.perf_counter()
        hits = first.hits[:RERANK_DEPTH]
        if hits and qvecs is not None:
            self._fill_cosines(hits, qvecs[0][0], qvecs[0][0] if qvecs[1] is None else qvecs[1][0])
        if hits:
            toks, mask = pad_batch([q_tokens])
            src_vec, q_attn = reranker.item_vectors(toks, mask, [q_values], "source")
            targets = self.target_vectors([h.row_id for h in hits])
            bm_max = max([h.scores.get("bm25", 0.0) for h in hits] + [1e-9])
            q_words = words(q_text)
            fs = [{"dense": h.scores.get("dense", 0.0), "title": h.scores.get("title", 0.0),
                   "bm25": h.scores.get("bm25", 0.0) / bm_max, "fused_rank": float(i + 1),
                   "title_in_query": title_in_query(q_words, words(h.title))} for i, h in enumerate(hits)]
            c_vals = [self._hit_values(h) for h in hits]
            pair = reranker.pair_matrix(q_values, q_created, [v for v, _ in c_vals], [c for _, c in c_vals], fs)
            logits = reranker.score(src_vec[0], targets, pair)
            probs = reranker.probability(logits)
            order = np.argsort(-logits, kind="stable")[:k]
            out = []
            for i in order:
                h = hits[int(i)]
                h.retrieval_score, h.rerank_score, h.probability = h.score, float(logits[i]), float(probs[i])
                h.score = float(logits[i])
                out.append(h)
            if explain:
                tok = self.encoder.tokenizer
                first.notes.append("query attended: " + ", ".join(
                    w for w, _ in attended_words(q_tokens.ids, q_attn[0], tok)) if q_attn is not None else
                    "this reranker has no attention to explain")
                if q_attn is not None:
                    cand_tokens = self._tokens_for([h.row_id for h in out])
                    t, m = pad_batch(cand_tokens)
                    _, c_attn = reranker.item_vectors(t, m, [self._hit_values(h)[0] for h in out], "target")
                    for h, ct, a in zip(out, cand_tokens, c_attn):
                        h.attended = attended_words(ct.ids, a[: len(ct.ids)], tok)
            first.hits = out
        first.timings_ms["encode"] = encode_ms
        first.timings_ms["rerank"] = (time.perf_counter() - t1) * 1000
        first.notes.append(f"reranked the top {len(hits)} with {reranker.name}")
        return first

    def _fill_cosines(self, hits: list, qvec: np.ndarray, tvec: np.ndarray) -> None:
        """Dense and title cosines for candidates that reached the pool through another list.

        Training saw both cosines for every candidate; a candidate that came in through BM25 or recency has
        no first-stage dense score, and 0 would be an input the model never saw.
        """
        for h in hits:
            for name, index, q in (("dense", self.base.vindex, qvec), ("title", self.base.tindex, tvec)):
                if name not in h.scores:
                    try:
                        h.scores[name] = float(np.dot(index.reconstruct(h.row_id), q))
                    except KeyError:
                        pass

    @staticmethod
    def _hit_values(h) -> tuple[dict[str, Any], datetime]:  # noqa: ANN001
        """A hit's typed field values and creation time (search keeps them from the store's row)."""
        assert h.values is not None and h.created_at is not None
        return h.values, h.created_at
