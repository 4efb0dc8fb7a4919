"""The reranker's pair inputs for one query and its first-stage candidate list: one implementation, called by
serving (`pipeline.search.rerank`) and by training (`pipeline.training`) on the same candidate list.

First-stage part, per candidate: the dense and title cosines, BM25 divided by the best BM25 score of the
query's reranked list (the top `rerank_depth` in first-stage order), the fused rank (1-based), and the share
of the candidate's title words found in the query text. The rest (time gap, per-field agreement) comes from
`rerank.pair_features.pair_matrix`; a model trained with code terms (`RerankConfig.code`) has the agreement of the
two texts' stack frames, exception classes and error codes last (`pair_features.code_agreement`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from ticketsearch.index_data.schema import Schema
from ticketsearch.rerank.pair_features import (
    CODE_COLUMNS,
    TEXT_COLUMNS,
    by_query_kind,
    code_agreement,
    code_terms,
    pair_matrix,
    title_in_query,
    words,
)

RERANK_DEPTH = 100  # the reranked list's length when training; a model stores the depth it was trained for


def bm25_scale(reranked_list_bm25: Sequence[float] | np.ndarray) -> float:
    """What BM25 is divided by: the best BM25 score in the query's reranked list (at least 1e-9)."""
    arr = np.asarray(reranked_list_bm25, np.float64)
    return max(float(arr.max()) if len(arr) else 0.0, 1e-9)


@dataclass
class ListScores:
    """First-stage scores of candidates of one query, aligned. `fused_rank` is 1-based in the fused order."""

    dense: np.ndarray
    title: np.ndarray
    bm25: np.ndarray
    fused_rank: np.ndarray


@dataclass
class TextScores:
    """The text columns' exact scores of one query's candidates, aligned (`pair_features.TEXT_SCORES`), and what
    BM25 of the query's title is divided by: its best score in the query's reranked list (`bm25_scale`)."""

    dense_title: np.ndarray  # the query's whole vector against the candidate's title vector
    title_dense: np.ndarray  # the query's title vector (its whole one without a title) against the candidate's
    bm25_title: np.ndarray  # BM25 of the query's title (its BM25 text without one)
    scale: float

    def columns(self) -> np.ndarray:
        """[N, TEXT_COLUMNS]"""
        return np.stack([self.dense_title, self.title_dense, np.asarray(self.bm25_title, np.float64) / self.scale],
                        axis=1).astype(np.float32)


def first_stage_inputs(scores: ListScores, scale: float, query_words: frozenset[str],
                       candidate_titles: Sequence[str]) -> list[dict[str, float]]:
    """The first-stage pair inputs of each candidate."""
    return [
        {"dense": float(scores.dense[i]), "title": float(scores.title[i]), "bm25": float(scores.bm25[i]) / scale,
         "fused_rank": float(scores.fused_rank[i]), "title_in_query": title_in_query(query_words, words(t))}
        for i, t in enumerate(candidate_titles)
    ]


def pair_inputs(
    schema: Schema, query_text: str, q_values: dict[str, Any], q_created: datetime,
    scores: ListScores, scale: float, candidate_titles: Sequence[str], c_values: Sequence[dict[str, Any]],
    c_created: Sequence[datetime], short: bool | None = None,
    candidate_code: Sequence[frozenset[str]] | None = None, text: TextScores | None = None,
) -> np.ndarray:
    """[N, pair_dim] pair inputs of one query against N candidates; laid out by query kind (`short` or not)
    for a model trained on short queries too (`RerankConfig.query_kinds`), as one layout without (None); with
    `text` (for a model trained with the text columns) those next; with `candidate_code` (the candidates'
    `code_terms`, for a model trained with them) the code agreement columns last."""
    first = first_stage_inputs(scores, scale, words(query_text), candidate_titles)
    mat = pair_matrix(schema, q_values, list(c_values), q_created, list(c_created), first)
    parts = [mat if short is None else by_query_kind(mat, short)]
    if text is not None:
        parts.append(text.columns())
    if candidate_code is not None:
        parts.append(code_agreement(code_terms(query_text), candidate_code))
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1).astype(np.float32)


def select_columns(pair: np.ndarray, built_text: bool, built_code: bool, text: bool, code: bool) -> np.ndarray:
    """Pair inputs built with the text and code columns (`built_*`) as a model with or without them reads them."""
    end = pair.shape[-1]
    main = end - (TEXT_COLUMNS if built_text else 0) - (CODE_COLUMNS if built_code else 0)
    keep = [pair[..., :main]]
    if text:
        if not built_text:
            raise ValueError("these pair inputs were built without the text columns")
        keep.append(pair[..., main:main + TEXT_COLUMNS])
    if code:
        if not built_code:
            raise ValueError("these pair inputs were built without the code columns")
        keep.append(pair[..., end - CODE_COLUMNS:])
    return keep[0] if len(keep) == 1 else np.concatenate(keep, axis=-1)


class CodeTerms:
    """`code_terms` of tickets by their text hash (a function of the text alone, so one cache serves every
    index and shard of a process), at most `limit` of them (emptied when full)."""

    def __init__(self, limit: int = 200_000) -> None:
        self.limit = limit
        self._terms: dict[str, frozenset[str]] = {}

    def of(self, hashes: Sequence[str], texts: Callable[[list[int]], list[str]]) -> list[frozenset[str]]:
        """The code terms of the texts with these hashes; `texts(positions)` reads the ones not cached."""
        found = [self._terms.get(h) for h in hashes]
        missing = [i for i, t in enumerate(found) if t is None]
        if missing:
            if len(self._terms) + len(missing) > self.limit:
                self._terms = {}
            for i, text in zip(missing, texts(missing)):
                found[i] = self._terms[hashes[i]] = code_terms(text)
        return [t if t is not None else frozenset() for t in found]

    def clear(self) -> None:
        self._terms = {}


CODE_TERMS = CodeTerms()
