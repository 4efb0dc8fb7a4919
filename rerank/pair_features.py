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

from ticketsearch.errors import TicketsearchError
from ticketsearch.index_data.schema import Schema
from ticketsearch.retrieval.first_stage import TEXT_SCORES

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
CODE_COLUMNS = 2  # code_agreement: the share of the smaller set of code terms in the other, both have some
# The text columns (`pipeline.pairs.TextScores`), before the code columns: the query's whole vector against the
# candidate's title vector and its title vector against the candidate's whole one, and BM25 of the query's title
# alone divided by the best in the reranked list. Measured for the linear model (docs/RESULTS.md).
TEXT_COLUMNS = len(TEXT_SCORES)  # from the first stage's exact scores of those names

# What bug tickets' bodies are full of, and prose is not: the top frames of each stack trace (where it was
# thrown, not the JVM's own frames nor the entry points every trace of a product shares), exception and error
# classes (the simple name: tickets write them with and without the package), error codes in capitals with an
# underscore (QUOTA_EXCEEDED) and numbered errors ("Error 10004", "error code: 2").
_FRAME = re.compile(r"\s*at\s+((?:[A-Za-z_$][\w$]*\.){2,}[\w$<>]+)\s*\(")
_JVM = ("java.", "javax.", "sun.", "jdk.", "com.sun.")
TOP_FRAMES = 3  # frames kept from the top of each trace
_EXCEPTION = re.compile(r"\b([A-Z][A-Za-z0-9]*(?:Exception|Error|Failure|Fault))\b")
_CAPS_CODE = re.compile(r"\b([A-Z][A-Z0-9]*_[A-Z0-9_]*[A-Z0-9])\b")
_NUMBERED_AT = r"\b(?:error|code|errno|status)\s*(?:code)?\s*[:#=]?\s*\[?(\d{3,6})\b"
_NUMBERED = re.compile(_NUMBERED_AT, re.IGNORECASE)
_NUMBERED_LOWER = re.compile(_NUMBERED_AT)  # on an ASCII text lower-cased: the same matches, faster
_EXCEPTION_ENDS = ("Exception", "Error", "Failure", "Fault")  # a text without any has no exception class
CODE_SCAN_CHARS = 20_000  # code terms are read from the first this many characters of a ticket's text


def top_frames(text: str) -> set[str]:
    """The first TOP_FRAMES frames outside the JVM of each trace (a run of "at pkg.Class.method(" lines)."""
    out: set[str] = set()
    kept = 0
    for line in text.split("\n"):
        m = _FRAME.match(line)
        if m is None:
            kept = 0  # a line that is not a frame ends the trace ("Caused by: ...", "... 12 more")
        elif not m.group(1).startswith(_JVM) and kept < TOP_FRAMES:
            out.add(m.group(1))
            kept += 1
    return out


def code_terms(text: str) -> frozenset[str]:
    """The code terms of a ticket's text (top frames, exception classes, error codes), each kind prefixed so
    that equal strings of two kinds stay apart."""
    t = (text or "")[:CODE_SCAN_CHARS]
    # each pattern only where the text has what it needs (a frame's "at ", an exception's ending, a code's "_")
    frames = {"at:" + f for f in top_frames(t)} if "at " in t else set()
    exceptions = {"x:" + e for e in _EXCEPTION.findall(t)} if any(w in t for w in _EXCEPTION_ENDS) else set()
    codes = {"c:" + c for c in _CAPS_CODE.findall(t)} if "_" in t else set()
    numbered = _NUMBERED_LOWER.findall(t.lower()) if t.isascii() else _NUMBERED.findall(t)
    return frozenset(frames | exceptions | codes | {"e:" + n for n in numbered})


def code_agreement(query_terms: frozenset[str], candidate_terms: Sequence[frozenset[str]]) -> np.ndarray:
    """[N, CODE_COLUMNS]: the share of the smaller of the two sets of code terms found in the other (0 when
    either has none), and whether both have any. Columns that a ticket without code leaves at zero."""
    out = np.zeros((len(candidate_terms), CODE_COLUMNS), np.float32)
    if not query_terms:
        return out
    for i, ct in enumerate(candidate_terms):
        if ct:
            out[i, 0] = len(query_terms & ct) / min(len(query_terms), len(ct))
            out[i, 1] = 1.0
    return out


def pair_dim(schema: Schema, query_kinds: bool = False, code: bool = False, text: bool = False) -> int:
    """Pair inputs per candidate; `query_kinds` adds a short query's own copy of the first KIND_COLUMNS, `text`
    the TEXT_COLUMNS, `code` the CODE_COLUMNS of code_agreement (last)."""
    per_field = {"categorical": 2, "multi": 3, "numeric": 2, "date": 0}
    return (KIND_COLUMNS + sum(per_field[f.kind] for f in schema.fields) + (KIND_COLUMNS if query_kinds else 0)
            + (TEXT_COLUMNS if text else 0) + (CODE_COLUMNS if code else 0))


def check_pair_width(where: object, width: int, schema: Schema, query_kinds: bool, code: bool,
                     text: bool = False) -> None:
    """TicketsearchError when a saved model's pair inputs (`width`) are not what this version computes for its
    layout: it must be retrained (a fusion model and a linear one alike)."""
    expected = pair_dim(schema, query_kinds, code, text)
    if width != expected:
        raise TicketsearchError(f"{where}: this reranker was trained with {width} pair inputs and this version "
                                f"computes {expected}: retrain it ('ticketsearch train')")


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
