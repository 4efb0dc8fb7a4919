"""Search an index directory: dense retrieval with filters applied before the top k is cut."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from ticketsearch.settings import Settings, get_settings
from ticketsearch.errors import QueryError, TicketsearchError
from ticketsearch.index_data.records import parse_datetime, ticket_text
from ticketsearch.index_data.store import StoredTicket, TicketStore

from .encoder import Encoder
from .fusion import fuse_lists
from .lexical import BM25Index, bm25_text
from ticketsearch.index_dir import IndexDir

from .manifest import Manifest
from .vector_index import VectorIndex

METHODS = ("dense", "bm25", "title", "hybrid")

MAX_K = 1000


@dataclass
class Hit:
    id: str
    title: str
    score: float
    created: str
    fields: dict[str, Any]
    row_id: int
    scores: dict[str, float] = field(default_factory=dict)  # per first-stage method
    retrieval_score: float | None = None  # first-stage score when `score` is the rerank score
    rerank_score: float | None = None
    probability: float | None = None  # calibrated duplicate probability (reranker)
    attended: list[tuple[str, float]] | None = None  # explanation: words the features attended to
    # the stored typed values and creation time, for the reranker's pair inputs (not part of the response)
    values: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    created_at: datetime | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "title": self.title, "score": round(self.score, 6), "created": self.created,
            "fields": self.fields, "scores": {k: round(v, 6) for k, v in self.scores.items()},
        }
        if self.rerank_score is not None:
            out.update(retrieval_score=self.retrieval_score, rerank_score=round(self.rerank_score, 6),
                       probability=None if self.probability is None else round(self.probability, 6))
        if self.attended is not None:
            out["attended"] = [[w, round(v, 4)] for w, v in self.attended]
        return out


@dataclass
class SearchResult:
    hits: list[Hit]
    query_text: str
    method: str = "dense"
    timings_ms: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _jsonable(v: Any) -> Any:
    return v.isoformat() if isinstance(v, datetime) else v


def to_hit(t: StoredTicket, score: float) -> Hit:
    return Hit(
        id=t.id, title=t.title, score=float(score), created=t.created.isoformat(),
        fields={k: _jsonable(v) for k, v in t.values.items()}, row_id=t.row_id, values=t.values, created_at=t.created,
    )


def _as_datetime(value: str | datetime | None, name: str) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    try:
        return parse_datetime(value)
    except ValueError as exc:
        raise QueryError(f"{name}: {exc}") from None


class Searcher:
    """Opens an index directory read-only and answers queries."""

    def __init__(
        self, index_dir: Path, settings: Settings | None = None, encoder: Encoder | None = None,
        store: TicketStore | None = None, query_encoder: Any = None,
    ) -> None:
        self.index_dir = Path(index_dir)
        self.settings = settings or get_settings()
        self.manifest = Manifest.load(self.index_dir)
        d = IndexDir(self.index_dir)
        self.store = store or d.open_store(read_only=True)
        self.vindex = VectorIndex.load(d.vectors_path("text"), self.manifest.index_kind, self.settings)
        self.tindex = VectorIndex.load(d.vectors_path("title"), self.manifest.index_kind, self.settings)
        self.bm25 = BM25Index.load(d.bm25_path)
        self._encoder = encoder
        self._query_encoder = query_encoder

    @property
    def query_encoder(self) -> Encoder:
        """What query texts go through (`settings.query_encoder`); indexed tickets use `encoder` (fp32)."""
        if self._query_encoder is None:
            from .quantized import query_encoder_for

            self._query_encoder = query_encoder_for(self.encoder)
        return self._query_encoder

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            settings = self.settings.model_copy(update={"max_seq_length": self.manifest.max_seq_length})
            self._encoder = Encoder(self.manifest.model, settings=settings)
            if self._encoder.key != self.manifest.model_key:
                raise TicketsearchError(
                    f"{self.index_dir} was built with model {self.manifest.model_key}; "
                    f"the loaded model is {self._encoder.key}"
                )
        return self._encoder

    def close(self) -> None:
        self.store.close()

    def validate_fields(self, fields: dict[str, Any] | None) -> dict[str, Any]:
        """Check the query ticket's own structured fields against the schema (values may be unseen)."""
        fields = fields or {}
        allowed = self.store.schema.field_names
        unknown = sorted(set(fields) - set(allowed))
        if unknown:
            raise QueryError(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(allowed) or '(none)'}")
        return fields

    def search(
        self,
        text: str | None = None,
        *,
        title: str | None = None,
        like: str | None = None,
        fields: dict[str, Any] | None = None,
        filters: dict[str, list[Any]] | None = None,
        before: str | datetime | None = None,
        after: str | datetime | None = None,
        k: int = 10,
        method: str | None = None,
        query_vectors: tuple[np.ndarray, np.ndarray | None] | None = None,
    ) -> SearchResult:
        """Top-k tickets for a query text (optionally with a separate title), or for an indexed ticket (`like`).

        Filters, `before` and `after` restrict the candidates before the top k is cut. `query_vectors`
        (full-text and title embeddings) lets a caller that already ran the encoder skip a second pass.
        """
        method = method or self.settings.search_method
        if method not in METHODS:
            raise QueryError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        if not 1 <= k <= MAX_K:
            raise QueryError(f"k must be between 1 and {MAX_K}, got {k}")
        self.validate_fields(fields)
        before_dt, after_dt = _as_datetime(before, "before"), _as_datetime(after, "after")
        weights = self.manifest.fusion["weights"] if method == "hybrid" else {method: 1.0}
        use = {n for n, w in weights.items() if w}
        need_vec = bool(use & {"dense", "title"})
        encoder = self.query_encoder if like is None and need_vec and query_vectors is None else None
        timings: dict[str, float] = {}
        exclude: list[str] = []
        reference = before_dt
        t0 = time.perf_counter()
        qvec = tvec = None
        if like is not None:
            if text or title:
                raise QueryError("give either a query text or --like ID, not both")
            src = self.store.get(like)
            query_text = ticket_text(self.store.schema, src.title, src.body)
            bm25_query = bm25_text(src.title, src.body)
            exclude = [like]
            reference = min(reference, src.created) if reference else src.created
            if need_vec:
                try:
                    qvec = self.vindex.reconstruct(src.row_id)[None, :]
                    tvec = self.tindex.reconstruct(src.row_id)[None, :] if "title" in use else None
                except KeyError:
                    qvec = self.encoder.encode([query_text])
                    tvec = self.encoder.encode([src.title]) if "title" in use else None
        else:
            body = (text or "").strip()
            head = (title or "").strip()
            if not body and not head:
                raise QueryError("query text is empty")
            query_text = ticket_text(self.store.schema, head, body) if head else body
            bm25_query = bm25_text(head, body) if head else body
            if query_vectors is not None:
                qvec, tvec = query_vectors
                tvec = qvec if tvec is None else tvec
            elif encoder is not None:
                qvec = encoder.encode([query_text])
                if "title" in use:
                    tvec = encoder.encode([head]) if head and body else qvec
        timings["encode"] = (time.perf_counter() - t0) * 1000
        t1 = time.perf_counter()
        allowed = self.store.filter_row_ids(filters, before_dt, after_dt, exclude_ids=exclude)
        depth = k if method != "hybrid" else max(k, self.settings.fusion_depth)
        lists: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if "dense" in use:
            lists["dense"] = _valid(self.vindex.search(qvec, depth, allowed))
        if "title" in use:
            lists["title"] = _valid(self.tindex.search(tvec, depth, allowed))
        if "bm25" in use:
            lists["bm25"] = self.bm25.search(bm25_query, depth, allowed)
        if "recency" in use:
            rec = self.store.recent_row_ids(depth, filters, reference, after_dt, exclude_ids=exclude)
            lists["recency"] = (-np.arange(len(rec), dtype=np.float64), rec)
        if method == "hybrid":
            fusion = self.manifest.fusion
            names = list(lists)
            fused_s, fused_i = fuse_lists(
                [lists[n] for n in names], [float(weights[n]) for n in names],
                method=fusion.get("method", "rrf"), k=float(fusion.get("k", 60.0)),
            )
            ranked = list(zip(fused_i[:k].tolist(), fused_s[:k].tolist()))
        else:
            sc, ids = lists[method]
            ranked = list(zip(ids[:k].tolist(), sc[:k].tolist()))
        timings["retrieve"] = (time.perf_counter() - t1) * 1000
        t2 = time.perf_counter()
        rows = self.store.get_rows([i for i, _ in ranked], with_body=False)
        score_of = dict(ranked)
        per_method = {n: dict(zip(ids.tolist(), sc.tolist())) for n, (sc, ids) in lists.items() if n != "recency"}
        hits = []
        for t in rows:
            h = to_hit(t, score_of[t.row_id])
            h.scores = {n: v[t.row_id] for n, v in per_method.items() if t.row_id in v}
            hits.append(h)
        timings["fetch"] = (time.perf_counter() - t2) * 1000
        return SearchResult(hits=hits, query_text=query_text, method=method, timings_ms=timings)


def _valid(res: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    scores, ids = res
    keep = ids[0] >= 0
    return scores[0][keep], ids[0][keep]
