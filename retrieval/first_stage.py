"""The first stage: dense, title, BM25 and recency lists over an index directory, fused into candidates.

It takes a query's vectors and text as already computed (`pipeline.search.Query`); it never encodes. Filters,
`before` and `after` restrict every list before its top is cut, so a filtered search still fills k.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import numpy as np

from ticketsearch.errors import QueryError
from ticketsearch.index_data.store import TicketStore

from .fusion import fuse_lists
from .lexical import CorpusStats
from .manifest import Manifest

METHODS = ("dense", "bm25", "title", "hybrid")
# scores a reranker's text columns read (`rerank.pair_features.TEXT_COLUMNS`), computed with the methods' exact
# scores (`FirstStage.complete_scores`); not methods: no hit lists them among its scores
TEXT_SCORES = ("dense_title", "title_dense", "bm25_title")


class VectorSearch(Protocol):
    """What the first stage needs of a vector index (a `VectorIndex`, or a live one that takes writes)."""

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...
    def reconstruct(self, row_id: int) -> np.ndarray: ...
    def reconstruct_many(self, row_ids: Sequence[int]) -> dict[int, np.ndarray]: ...
    def ids(self) -> np.ndarray: ...


class LexicalSearch(Protocol):
    """What the first stage needs of BM25 (a `BM25Index`, or a live one)."""

    def search(self, query: str, k: int, allowed: np.ndarray | None = None,
               stats: CorpusStats | None = None) -> tuple[np.ndarray, np.ndarray]: ...
    def score_rows(self, query: str, row_ids: list[int], stats: CorpusStats | None = None) -> np.ndarray: ...


@dataclass
class FirstStageIndexes:
    """The first stage's three indexes; the service's engine passes live ones that take writes."""

    vindex: Any  # VectorSearch
    tindex: Any  # VectorSearch
    bm25: Any  # LexicalSearch


@dataclass
class Candidates:
    """A query's candidates in first-stage order, with every method's score for each of them."""

    method: str
    row_ids: list[int]
    scores: list[float]  # the first-stage score (fused for hybrid)
    per_method: dict[str, dict[int, float]] = field(default_factory=dict)  # method -> row id -> score
    timings_ms: dict[str, float] = field(default_factory=dict)
    # a sharded collection's candidates: each row's shard, the shards' exact scores of their candidates, and
    # the rows (no body), reranker's candidate vectors and near-copy tests the shards' answers brought
    owners: dict[int, int] = field(default_factory=dict)
    complete: dict[str, dict[int, float]] = field(default_factory=dict)
    vectors: dict[int, np.ndarray] = field(default_factory=dict)
    rows: dict[int, Any] = field(default_factory=dict)
    shares: dict[int, float | None] = field(default_factory=dict)  # the words each shares with the query
    wants_vectors: bool = False  # the search reranks with a model that has candidate vectors: fetch them too

    def __len__(self) -> int:
        return len(self.row_ids)

    def method_scores(self, row_id: int) -> dict[str, float]:
        return {n: v[row_id] for n, v in self.per_method.items() if row_id in v and n not in TEXT_SCORES}


def fusion_weights(manifest: Manifest, method: str) -> dict[str, float]:
    if method not in METHODS:
        raise QueryError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    weights = manifest.fusion["weights"] if method == "hybrid" else {method: 1.0}
    return {n: float(w) for n, w in weights.items() if w}


class FirstStage:
    def __init__(self, manifest: Manifest, store: TicketStore, indexes: FirstStageIndexes, fusion_depth: int) -> None:
        self.manifest = manifest
        self.store = store
        self.indexes = indexes
        self.fusion_depth = fusion_depth

    def run(
        self, method: str, k: int, vector: np.ndarray | None, title_vector: np.ndarray | None, bm25_query: str,
        filters: dict[str, list[Any]] | None, before: datetime | None, after: datetime | None,
        exclude_ids: list[str], reference: datetime | None,
    ) -> Candidates:
        """The top k candidates (each method's top `fusion_depth` fused, for hybrid)."""
        t0 = time.perf_counter()
        lists = self.lists(method, k, vector, title_vector, bm25_query, filters, before, after, exclude_ids,
                           reference)
        cands = fuse_candidates(self.manifest, method, k, lists)
        cands.timings_ms["retrieve"] = (time.perf_counter() - t0) * 1000
        return cands

    def depth(self, method: str, k: int) -> int:
        """How deep each method's list goes for a top k."""
        return k if method != "hybrid" else max(k, self.fusion_depth)

    def lists(
        self, method: str, k: int, vector: np.ndarray | None, title_vector: np.ndarray | None, bm25_query: str,
        filters: dict[str, list[Any]] | None, before: datetime | None, after: datetime | None,
        exclude_ids: list[str], reference: datetime | None, bm25_stats: CorpusStats | None = None,
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Each method's top list (scores, row ids), best first. `bm25_stats`: a sharded collection's whole
        statistics (a shard's BM25 then scores as one index of every shard's tickets would)."""
        weights = fusion_weights(self.manifest, method)
        ix = self.indexes
        allowed = self.store.filter_row_ids(filters, before, after, exclude_ids=exclude_ids)
        depth = self.depth(method, k)
        lists: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if "dense" in weights:
            assert vector is not None
            lists["dense"] = _valid(ix.vindex.search(vector[None, :], depth, allowed))
        if "title" in weights:
            assert title_vector is not None
            lists["title"] = _valid(ix.tindex.search(title_vector[None, :], depth, allowed))
        if "bm25" in weights:
            lists["bm25"] = ix.bm25.search(bm25_query, depth, allowed, bm25_stats)
        if "recency" in weights:
            rec = self.store.recent_row_ids(depth, filters, reference, after, exclude_ids=exclude_ids)
            lists["recency"] = (-np.arange(len(rec), dtype=np.float64), rec)
        return lists

    def complete_scores(self, cands: Candidates, upto: int, vector: np.ndarray | None,
                        title_vector: np.ndarray | None, bm25_query: str,
                        bm25_stats: CorpusStats | None = None, title_query: str | None = None) -> None:
        """Give the first `upto` candidates every method's exact score, also those that reached the list
        through another method (the reranker's pair inputs need all three for each; training has them).
        With `title_query` (`lexical.title_query`: a reranker that reads the text columns), the text columns'
        scores too (`pair_features.TEXT_SCORES`: each vector against the other index's vectors, and BM25 of
        the title; its terms are among `bm25_query`'s, so `bm25_stats` holds theirs)."""
        rows = cands.row_ids[:upto]
        ix = self.indexes
        text = title_query is not None
        for name, index, q, cross, other in (("dense", ix.vindex, vector, "title_dense", title_vector),
                                             ("title", ix.tindex, title_vector, "dense_title", vector)):
            have = cands.per_method.setdefault(name, {})
            missing = [r for r in rows if r not in have] if q is not None else []
            crossed = cands.per_method.setdefault(cross, {}) if text and other is not None else None
            wanted = rows if crossed is not None else missing
            vecs = index.reconstruct_many(wanted) if wanted else {}  # one pass (a row the index lacks: no score)
            if q is not None:
                have.update((r, float(np.dot(vecs[r], q))) for r in missing if r in vecs)
            if crossed is not None and other is not None:
                crossed.update((r, float(np.dot(vecs[r], other))) for r in rows if r in vecs)
        have = cands.per_method.setdefault("bm25", {})
        missing = [r for r in rows if r not in have]
        if missing:
            for r, s in zip(missing, ix.bm25.score_rows(bm25_query, missing, bm25_stats).tolist()):
                have[r] = float(s)
        if title_query is not None and rows:
            titled = cands.per_method.setdefault("bm25_title", {})
            titled.update(zip(rows, ix.bm25.score_rows(title_query, rows, bm25_stats).tolist()))


def fuse_candidates(manifest: Manifest, method: str, k: int,
                    lists: dict[str, tuple[np.ndarray, np.ndarray]]) -> Candidates:
    """The top k of the methods' lists: fused for hybrid (one index's lists, or a sharded collection's merged)."""
    weights = fusion_weights(manifest, method)
    if method == "hybrid":
        fusion = manifest.fusion
        names = list(lists)
        fused_s, fused_i = fuse_lists([lists[n] for n in names], [weights[n] for n in names],
                                      method=fusion.get("method", "rrf"), k=float(fusion.get("k", 60.0)))
        ids, scores = fused_i[:k].tolist(), fused_s[:k].tolist()
    else:
        sc, ids_arr = lists[method]
        ids, scores = ids_arr[:k].tolist(), sc[:k].tolist()
    per_method = {n: dict(zip(i.tolist(), s.tolist())) for n, (s, i) in lists.items() if n != "recency"}
    return Candidates(method, [int(i) for i in ids], [float(s) for s in scores], per_method)


def _valid(res: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    scores, ids = res
    keep = ids[0] >= 0
    return scores[0][keep], ids[0][keep]
