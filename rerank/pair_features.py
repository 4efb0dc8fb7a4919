"""Pair-level inputs for the head: first-stage scores, the time gap and per-field agreement.

Per-field agreement (same project, shared components, shared versions, ...) is computed on raw values, so
it transfers to products whose vocabularies the model never saw, which per-item one-hots cannot do.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from ticketsearch.index_data.schema import Schema

FIRST_STAGE = ("dense", "title", "bm25", "fused_rank", "title_in_query")
_WORD = re.compile(r"[a-z0-9][a-z0-9_.]*[a-z0-9]|[a-z0-9]")


def words(text: str) -> frozenset[str]:
    """Lower-cased word tokens (identifiers such as org.apache.Foo or HDFS-123 stay whole)."""
    return frozenset(_WORD.findall((text or "").lower()))


def title_in_query(query_words: frozenset[str], candidate_title_words: frozenset[str]) -> float:
    """The share of the candidate title's words that occur anywhere in the query's text (title and body).

    Duplicates are often filed with the master's wording; defined for any query, titled or not.
    """
    if not candidate_title_words:
        return 0.0
    return len(candidate_title_words & query_words) / len(candidate_title_words)


KIND_COLUMNS = len(FIRST_STAGE) + 1  # the first-stage inputs and the time gap: what a query's kind changes


def pair_dim(schema: Schema, query_kinds: bool = False) -> int:
    """Pair inputs per candidate; `query_kinds` adds a short query's own copy of the first KIND_COLUMNS."""
    per_field = {"categorical": 2, "multi": 3, "numeric": 2, "date": 0}
    return KIND_COLUMNS + sum(per_field[f.kind] for f in schema.fields) + (KIND_COLUMNS if query_kinds else 0)


def by_query_kind(mat: np.ndarray, short: bool) -> np.ndarray:
    """The pair inputs laid out by query kind: a whole ticket's first-stage inputs and time gap in the first
    KIND_COLUMNS (zeros after the field columns), a short free-text query's in the last KIND_COLUMNS (zeros in
    the first). One model then weighs BM25, the cosines, the rank and the gap separately for each kind."""
    head, rest = mat[:, :KIND_COLUMNS], mat[:, KIND_COLUMNS:]
    zeros = np.zeros_like(head)
    return np.concatenate([zeros if short else head, rest, head if short else zeros], axis=1).astype(np.float32)


def _relative_gap(a: float, b: float) -> float:
    """tanh(|a - b| / (|a| + |b| + 1)), in [0, 1); 1 when the values are too large to compare."""
    gap, scale = abs(a - b), abs(a) + abs(b) + 1.0
    return math.tanh(gap / scale) if math.isfinite(gap) and math.isfinite(scale) else 1.0


def pair_matrix(
    schema: Schema,
    q_values: Mapping[str, Any],
    c_values: Sequence[Mapping[str, Any]],
    q_created: datetime,
    c_created: Sequence[datetime],
    first_stage: Sequence[Mapping[str, float]],
) -> np.ndarray:
    """The pair inputs of one query against many candidates, a column at a time (equal to a row-by-row
    reference; tested). `q_created`: when the query was asked (a query without a date is asked now: the caller
    says so; no gap is zero by omission)."""
    n = len(c_values)
    cols: list[np.ndarray] = [
        np.array([float(fs.get(k, 0.0)) for fs in first_stage], np.float64) for k in ("dense", "title", "bm25")
    ]
    ranks = np.array([float(fs.get("fused_rank", 1000.0)) for fs in first_stage], np.float64)
    cols.append(1.0 / np.log2(1.0 + ranks))
    cols.append(np.array([float(fs.get("title_in_query", 0.0)) for fs in first_stage], np.float64))
    gaps = np.array([abs((q_created - c).total_seconds()) for c in c_created], np.float64)
    cols.append(np.log1p(gaps / 86400.0) / math.log1p(3650.0))
    for f in schema.fields:
        a = q_values.get(f.name)
        bs = [c.get(f.name) for c in c_values]
        if f.kind == "categorical":
            sa = None if a is None else str(a)
            cols.append(np.array([float(sa is not None and b is not None and str(b) == sa) for b in bs]))
            cols.append(np.array([float(a is not None and b is not None) for b in bs]))
        elif f.kind == "multi":
            qa = set(a or ())
            jac, over, both = np.zeros(n), np.zeros(n), np.zeros(n)
            if qa:
                for i, b in enumerate(bs):
                    sb = set(b or ())
                    if sb:
                        inter = len(qa & sb)
                        jac[i], over[i], both[i] = inter / len(qa | sb), float(inter > 0), 1.0
            cols += [jac, over, both]
        elif f.kind == "numeric":
            gap, both = np.zeros(n), np.zeros(n)
            if a is not None:
                for i, b in enumerate(bs):
                    if b is not None:
                        gap[i], both[i] = _relative_gap(float(a), float(b)), 1.0
            cols += [gap, both]
    return np.stack(cols, axis=1).astype(np.float32)
