"""First-stage methods scored over an index directory, for the evaluation harness.

Every query's candidate pool is scored exhaustively: dense cosine from the cached embeddings, BM25 from the
persisted BM25 index, and fusions of the two over each method's top `depth` (as search does).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ticketsearch.index_data.store import TicketStore
from ticketsearch.index_dir import IndexDir

from .builder import embed_store, embed_texts, title_key
from .encoder import Encoder
from .evaluation import EvalSet, QueryPool, build_pools
from .fusion import list_contributions
from .lexical import BM25Index, bm25_text, lexical_matches, title_query
from .manifest import Manifest
from .query_kinds import QueryKind

ScoreFn = Callable[[QueryPool], np.ndarray]


@dataclass
class EvalInputs:
    ev: EvalSet
    dense: np.ndarray  # [n, d] embeddings in EvalSet order
    title: np.ndarray  # [n, d] title-only embeddings in EvalSet order
    bm25: BM25Index
    bm25_pos: np.ndarray  # EvalSet index -> position in bm25.row_ids
    manifest: Manifest


def load_eval_inputs(index_dir: Path, store: TicketStore, encoder: Encoder,
                     extra_links: Sequence[tuple[str, str]] = ()) -> EvalInputs:
    """`extra_links`: duplicate pairs beside the stored `duplicate_of` links (agents' confirmed decisions)."""
    manifest = Manifest.load(index_dir)
    ev = EvalSet.from_records(store.eval_rows(), extra_links)
    ids, vecs, _, _ = embed_store(store, encoder, progress=True)
    pos = {int(r): i for i, r in enumerate(ids)}
    dense = vecs[[pos[int(r)] for r in ev.row_ids]]
    title, _, _ = embed_texts(store, encoder, title_key(encoder), ev.titles, progress=True, desc="titles")
    bm25 = BM25Index.load(IndexDir(index_dir).bm25_path)
    if set(bm25.row_ids.tolist()) != set(ev.row_ids.tolist()):
        # the saved base misses a running service's live changes (they are in its overlay): BM25 of the very
        # rows read here instead, so that every list is scored over one snapshot
        bm25 = BM25Index.build(ev.row_ids, [bm25_text(t, b) for t, b in zip(ev.titles, ev.bodies)])
    bpos = {int(r): i for i, r in enumerate(bm25.row_ids)}
    return EvalInputs(ev, dense, title, bm25, np.array([bpos[int(r)] for r in ev.row_ids]), manifest)


@dataclass
class QueryViews:
    """Short queries cut from labelled tickets (`QueryKind`): per ticket index, the free text and its vector
    (one vector for the dense and the title lists, as search does for a free text)."""

    kind: QueryKind
    text: dict[int, str]
    vector: dict[int, np.ndarray]

    def queries(self, queries: np.ndarray) -> np.ndarray:
        """The queries that have a short form (a ticket with an empty title has no title query)."""
        return np.array([q for q in queries if int(q) in self.text], dtype=np.int64)


def query_views(
    inp: EvalInputs, store: TicketStore, encoder: Encoder, kind: QueryKind, queries: np.ndarray,
    progress: bool = True,
) -> QueryViews:
    """The `kind` form (a short kind) of each query, encoded through the store's embedding cache under the
    encoder's own key (a free text embeds as any text does); a title query is its title's own vector (the title
    index's cached one: the same model and text, so float noise of another batch cannot reorder ties)."""
    ev = inp.ev
    texts = {int(q): kind.text(ev.titles[q], ev.bodies[q]) for q in queries}
    texts = {q: t for q, t in texts.items() if t}
    key = title_key(encoder) if kind.name == "title" else encoder.key
    vecs, _, _ = embed_texts(store, encoder, key, list(texts.values()), progress, f"{kind.label} queries")
    return QueryViews(kind, texts, {q: vecs[i] for i, q in enumerate(texts)})


def scorers(inp: EvalInputs, views: QueryViews | None = None,
            text: bool = False) -> dict[str, Callable[[int, np.ndarray], np.ndarray]]:
    """Each method's scores of a query over its pool; with `views`, the query is its short form; `text`: the
    text columns' scores too (`pair_features.TEXT_SCORES`: the reranker's pair inputs, not methods to fuse), as
    search computes them (`FirstStage.complete_scores`; BM25 of `lexical.title_query`)."""
    ev = inp.ev

    def dense(q: int, pool: np.ndarray) -> np.ndarray:
        return inp.dense[pool] @ (inp.dense[q] if views is None else views.vector[q])

    def bm25(q: int, pool: np.ndarray) -> np.ndarray:
        text = bm25_text(ev.titles[q], ev.bodies[q]) if views is None else views.text[q]
        return inp.bm25.scores(text)[inp.bm25_pos[pool]]

    def title(q: int, pool: np.ndarray) -> np.ndarray:
        return inp.title[pool] @ (inp.title[q] if views is None else views.vector[q])

    days = (ev.created - ev.created.min()).astype("timedelta64[s]").astype(np.float64) / 86400.0

    def recency(q: int, pool: np.ndarray) -> np.ndarray:
        # newest first; the pool is in time order, so later positions win ties as search does (row id desc)
        return days[pool] + np.arange(len(pool)) * 1e-9

    methods: dict[str, Callable[[int, np.ndarray], np.ndarray]] = {"dense": dense, "bm25": bm25, "title": title,
                                                                    "recency": recency}
    if not text:
        return methods

    def dense_title(q: int, pool: np.ndarray) -> np.ndarray:
        return inp.title[pool] @ (inp.dense[q] if views is None else views.vector[q])

    def title_dense(q: int, pool: np.ndarray) -> np.ndarray:
        return inp.dense[pool] @ (inp.title[q] if views is None else views.vector[q])

    def bm25_title(q: int, pool: np.ndarray) -> np.ndarray:
        text = title_query(ev.titles[q], bm25_text(ev.titles[q], ev.bodies[q])) if views is None else views.text[q]
        return inp.bm25.scores(text)[inp.bm25_pos[pool]]

    return {**methods, "dense_title": dense_title, "title_dense": title_dense, "bm25_title": bm25_title}


def kind_pools(inp: EvalInputs, store: TicketStore, encoder: Encoder | None, kind: QueryKind, queries: np.ndarray,
               progress: bool = False, text: bool = False,
               **pool_args: Any) -> tuple[list[QueryPool], QueryViews | None]:
    """Scored pools of `queries` as `kind` cuts them, and the views that cut them (None for full queries);
    `text`: with the text columns' scores (`scorers`)."""
    views = None
    if kind.short:
        if encoder is None:
            raise ValueError("short queries need the encoder")
        views = query_views(inp, store, encoder, kind, queries, progress)
        queries = views.queries(queries)
    return build_pools(inp.ev, queries, scorers(inp, views, text), **pool_args), views


def fusion_fn(fusion: Mapping[str, Any], depth: int) -> ScoreFn:
    """Fused scores over a pool from each method's top `depth` (what `fuse_lists` does at search time)."""
    weights = {n: float(w) for n, w in fusion["weights"].items() if w}
    method = fusion.get("method", "rrf")
    k = float(fusion.get("k", 60.0))

    def fn(p: QueryPool) -> np.ndarray:
        out = np.zeros(len(p.pool), dtype=np.float64)
        for name, w in weights.items():
            idx = p.top(name, depth)
            if name == "bm25":  # as search: only documents that share a query term are in BM25's list
                idx = idx[lexical_matches(p.scores[name][idx])]
            out[idx] += w * list_contributions(method, p.scores[name][idx], k)
        return out

    return fn


PLAIN_RRF = {"method": "rrf", "k": 60.0, "weights": {"dense": 1.0, "bm25": 1.0}}


def first_stage_methods(fusion: Mapping[str, Any], depth: int) -> dict[str, ScoreFn]:
    """The methods every evaluation reports: each single method, plain RRF, and the index's own fusion."""
    return {
        "bm25": lambda p: p.scores["bm25"],
        "dense": lambda p: p.scores["dense"],
        "title-dense": lambda p: p.scores["title"],
        "hybrid-rrf-plain": fusion_fn(PLAIN_RRF, depth),
        "hybrid": fusion_fn(fusion, depth),
    }
