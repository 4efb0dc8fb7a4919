"""Near copies: a ticket whose words are nearly the query's own is ranked first and called a duplicate, whatever
the model says and whatever the dates (issue 29: a model that weighs the time gap must not bury an identical
ticket filed a year later).

A candidate is a near copy when its text (title and body, as the index joins them) shares at least MIN_SHARED of
its distinct words with the query's (|A & B| / |A | B|: a 40-word ticket with three words changed shares about
.86), among the candidates whose dense cosine with the query is at least MIN_COSINE (the cheap test that picks
which bodies to read). A query without a dense score (method bm25) finds none."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ticketsearch.rerank.pair_features import words

MIN_COSINE = 0.8
MIN_SHARED = 0.8


def shared_words(a: str, b: str) -> float:
    """|A & B| / |A | B| of the two texts' distinct words (0 when either has none)."""
    wa, wb = words(a), words(b)
    if not wa or not wb:
        return 0.0
    return len(wa & wb) / len(wa | wb)


def word_shares(query_text: str, cosines: Sequence[float | None], texts: Callable[[list[int]], list[str]],
                floor: float = MIN_COSINE) -> list[float | None]:
    """Each candidate's `shared_words` with the query where its dense cosine is at least `floor` (None for the
    others). `cosines`: each candidate's dense cosine (None: unknown); `texts(positions)`: the full texts of the
    candidates at those positions (read only for the few that pass)."""
    close = [i for i, c in enumerate(cosines) if c is not None and c >= floor]
    out: list[float | None] = [None] * len(cosines)
    if close:
        for i, text in zip(close, texts(close)):
            out[i] = shared_words(query_text, text)
    return out


def is_near_copy(cosine: float | None, share: float | None) -> bool:
    """The rule: a dense cosine of at least MIN_COSINE and at least MIN_SHARED of the words."""
    return cosine is not None and cosine >= MIN_COSINE and share is not None and share >= MIN_SHARED


def near_copies(query_text: str, cosines: Sequence[float | None],
                texts: Callable[[list[int]], list[str]]) -> list[bool]:
    """Which candidates are near copies of the query (`word_shares`, `is_near_copy`)."""
    return [is_near_copy(c, sh) for c, sh in zip(cosines, word_shares(query_text, cosines, texts))]
