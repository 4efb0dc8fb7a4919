"""Pair-level inputs for the head: first-stage scores, the time gap and per-field agreement.

Per-field agreement (same project, shared components, shared versions, ...) is computed on raw values, so
it transfers to products whose vocabularies the model never saw, which per-item one-hots cannot do.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
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


def pair_dim(schema: Schema) -> int:
    per_field = {"categorical": 2, "multi": 3, "numeric": 2, "date": 0}
    return len(FIRST_STAGE) + 1 + sum(per_field[f.kind] for f in schema.fields)


def pair_vector(
    schema: Schema,
    q_values: Mapping[str, Any],
    c_values: Mapping[str, Any],
    q_created: datetime,
    c_created: datetime,
    first_stage: Mapping[str, float],
) -> np.ndarray:
    """first_stage: dense and title cosines, bm25 normalised by the query's best, fused rank (1-based), and
    `title_in_query` (see there)."""
    out = [
        float(first_stage.get("dense", 0.0)),
        float(first_stage.get("title", 0.0)),
        float(first_stage.get("bm25", 0.0)),
        1.0 / math.log2(1.0 + float(first_stage.get("fused_rank", 1000.0))),
        float(first_stage.get("title_in_query", 0.0)),
        math.log1p(abs((q_created - c_created).total_seconds()) / 86400.0) / math.log1p(3650.0),
    ]
    for f in schema.fields:
        a, b = q_values.get(f.name), c_values.get(f.name)
        if f.kind == "categorical":
            both = a is not None and b is not None
            out += [float(both and str(a) == str(b)), float(both)]
        elif f.kind == "multi":
            sa, sb = set(a or ()), set(b or ())
            both = bool(sa) and bool(sb)
            inter = len(sa & sb)
            out += [inter / len(sa | sb) if both else 0.0, float(inter > 0), float(both)]
        elif f.kind == "numeric":
            both = a is not None and b is not None
            out += [_relative_gap(float(a), float(b)) if both else 0.0, float(both)]
    return np.asarray(out, dtype=np.float32)


def _relative_gap(a: float, b: float) -> float:
    """tanh(|a - b| / (|a| + |b| + 1)), in [0, 1); 1 when the values are too large to compare."""
    gap, scale = abs(a - b), abs(a) + abs(b) + 1.0
    return math.tanh(gap / scale) if math.isfinite(gap) and math.isfinite(scale) else 1.0


def pair_matrix(
    schema: Schema,
    q_values: Mapping[str, Any],
    c_values: list[Mapping[str, Any]],
    q_created: datetime | None,
    c_created: list[datetime],
    first_stage: list[Mapping[str, float]],
) -> np.ndarray:
    """`pair_vector` for one query against many candidates, a column at a time (the same numbers; tested).
    `q_created` None measures each gap as zero (a query with no date)."""
    n = len(c_values)
    cols: list[np.ndarray] = [
        np.array([float(fs.get(k, 0.0)) for fs in first_stage], np.float64) for k in ("dense", "title", "bm25")
    ]
    ranks = np.array([float(fs.get("fused_rank", 1000.0)) for fs in first_stage], np.float64)
    cols.append(1.0 / np.log2(1.0 + ranks))
    cols.append(np.array([float(fs.get("title_in_query", 0.0)) for fs in first_stage], np.float64))
    if q_created is None:
        cols.append(np.zeros(n))
    else:
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
