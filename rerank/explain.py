"""Explanations: which of the query's words a candidate matches, exactly or nearly (from the encoder's token
states), with stopwords, punctuation and bare numbers left out; which words an item's features attended to
(the article's attention, word pieces merged, special tokens, padding and punctuation left out); and a PNG bar
chart like the article's `visualize_attention`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from ticketsearch.atomic import atomic_write_with

# Two words in two tickets match "nearly" when the cosine of their contextual token states (MiniLM's last
# layer, word pieces averaged) is at least this. Chosen by eye on demo searches, not fitted: wrong~incorrect
# scored .84-.87, wrong~disagree .70-.72, startup~launch .60-.62 (lost), shows~reports .64-.67 and
# shows~incorrect .64 (kept out), immediately~did .52-.55; the same word in two tickets .75-.96.
NEAR_MATCH = 0.7
MATCHED_TOP_N = 8


@cache
def stopwords() -> frozenset[str]:
    """English function words for explanations: scikit-learn's list (318 words) with BM25's (Lucene's 33)."""
    from bm25s.stopwords import STOPWORDS_EN  # deferred: bm25s, SciPy
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS  # deferred: scikit-learn, pyarrow

    return frozenset(ENGLISH_STOP_WORDS) | frozenset(STOPWORDS_EN)


def is_content_word(word: str) -> bool:
    """A word worth showing: it has a letter, more than one character, and is no stopword (bare numbers,
    punctuation and words like "the", "not", "when" are left out)."""
    w = word.lower()
    return len(w) > 1 and any(ch.isalpha() for ch in w) and w not in stopwords()


def word_pieces(input_ids: Sequence[int] | np.ndarray, tokenizer) -> list[tuple[str, list[int]]]:  # noqa: ANN001
    """Whole words and the positions of their pieces in `input_ids` (special tokens and padding dropped by
    id, so positions stay aligned with the token states)."""
    tokens = tokenizer.convert_ids_to_tokens([int(i) for i in input_ids])
    special = set(tokenizer.all_special_ids)
    words: list[tuple[str, list[int]]] = []
    for pos, (tid, tok) in enumerate(zip(input_ids, tokens)):
        if int(tid) in special:
            continue
        if tok.startswith("##") and words:
            words[-1] = (words[-1][0] + tok[2:], [*words[-1][1], pos])
        else:
            words.append((tok, [pos]))
    return words


@dataclass(frozen=True)
class WordMatch:
    word: str  # the query's word
    match: str  # the candidate's word it matches
    kind: str  # "exact" (the same word or stem) or "near" (close token states)
    similarity: float  # cosine of the two words' token states


@dataclass(frozen=True)
class ContentWords:
    """An item's content words, their stems and their unit vectors (token states averaged over the pieces)."""

    words: list[str]
    stems: np.ndarray  # object array of str
    vectors: np.ndarray  # [W, D] float32, unit rows


def content_words(states: np.ndarray, ids: np.ndarray, tokenizer) -> ContentWords:  # noqa: ANN001
    from ticketsearch.retrieval.lexical import stems  # deferred: bm25s, SciPy

    pieces = word_pieces(ids, tokenizer)
    keep = [i for i, (w, _) in enumerate(pieces) if is_content_word(w)]
    if not keep:
        return ContentWords([], np.zeros(0, dtype=object), np.zeros((0, states.shape[1]), np.float32))
    # a word's pieces are contiguous: sum each word's run of positions at once
    starts = np.array([p[0] for _, p in pieces])
    lengths = np.array([len(p) for _, p in pieces])
    s = np.asarray(states, np.float32)[: starts[-1] + lengths[-1]]
    vecs = np.add.reduceat(s, starts, axis=0)[keep] / lengths[keep, None]
    vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    words = [pieces[i][0] for i in keep]
    return ContentWords(words, np.array(stems(words), dtype=object), vecs)


def matched_words(query: ContentWords, cand: ContentWords, near: float = NEAR_MATCH,
                  top_n: int = MATCHED_TOP_N) -> list[WordMatch]:
    """The query's content words that the candidate holds exactly (same word or Snowball stem) or nearly
    (cosine of contextual token states >= `near`), best first, one entry per query word."""
    if not query.words or not cand.words:
        return []
    sims = query.vectors @ cand.vectors.T
    best: dict[str, WordMatch] = {}
    for i, w in enumerate(query.words):
        same = np.flatnonzero(cand.stems == query.stems[i])
        if len(same):
            j = int(same[np.argmax(sims[i, same])])
            m = WordMatch(w, cand.words[j], "exact", round(float(sims[i, j]), 4))
        else:
            j = int(np.argmax(sims[i]))
            if sims[i, j] < near:
                continue
            m = WordMatch(w, cand.words[j], "near", round(float(sims[i, j]), 4))
        old = best.get(w.lower())
        if old is None or (m.kind == "exact", m.similarity) > (old.kind == "exact", old.similarity):
            best[w.lower()] = m
    return sorted(best.values(), key=lambda m: (m.kind != "exact", -m.similarity, m.word))[:top_n]


def attended_words(
    input_ids: Sequence[int] | np.ndarray,
    weights: Sequence[float] | np.ndarray,
    tokenizer,  # noqa: ANN001
    top_n: int = 8,
) -> list[tuple[str, float]]:
    """(word, attention) pairs, best first. Position i of `weights` belongs to token i of `input_ids`
    ([CLS] at 0), so special tokens and padding are dropped by id, never by an offset. A word's weight is the
    sum over its pieces and its occurrences; words without a letter or digit are left out."""
    merged: dict[str, float] = {}
    for word, positions in word_pieces(input_ids, tokenizer):
        if any(ch.isalnum() for ch in word):
            merged[word] = merged.get(word, 0.0) + float(sum(float(weights[p]) for p in positions))
    return sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))[:top_n]


def plot_attention(words: Sequence[tuple[str, float]], title: str, out: Path) -> None:
    """A horizontal bar chart of attended words, written atomically as PNG."""
    import matplotlib  # deferred: matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: matplotlib

    labels = [w for w, _ in words][::-1]
    vals = np.array([v for _, v in words][::-1])
    fig, ax = plt.subplots(figsize=(6, 0.4 * max(len(words), 3) + 1))
    ax.barh(labels, vals, color="#3b7dd8")
    ax.set_xlabel("attention from the feature embedding")
    ax.set_title(title[:80], fontsize=10)
    fig.tight_layout()
    atomic_write_with(Path(out), lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)
