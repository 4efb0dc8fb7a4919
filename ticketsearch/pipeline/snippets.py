"""What a reader sees of a hit: a short passage of its body around the first word it shares with the query, and
the words of its title and passage that match the query, for highlighting (the agent page marks them).

A word matches when it has the stem of one of the query's content words: BM25's stemmer (`retrieval.lexical`)
and the explanations' stopwords (`rerank.explain.is_content_word`), so what is highlighted is what the lexical
stage and the explanations count as the same word.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ticketsearch.rerank.explain import is_content_word
from ticketsearch.retrieval.lexical import stems

WORD = re.compile(r"\w+")
SNIPPET_CHARS = 240  # about two lines of a result list
LEAD_CHARS = 60  # context kept before the first matching word
CHUNK = 256  # words stemmed at a time while looking for the first match (a long body is not stemmed whole)


def query_stems(text: str) -> frozenset[str]:
    """The stems of the query's content words."""
    words = [w for w in WORD.findall(text) if is_content_word(w)]
    return frozenset(stems(words)) if words else frozenset()


def matching_words(text: str, qstems: frozenset[str]) -> list[str]:
    """The distinct words of `text` (lower case, first seen first) whose stem is one of `qstems`."""
    if not qstems:
        return []
    words = list(dict.fromkeys(w.lower() for w in WORD.findall(text) if is_content_word(w)))
    return [w for w, s in zip(words, stems(words)) if s in qstems]


def first_match(text: str, qstems: frozenset[str]) -> int | None:
    """The position of the first word of `text` that matches the query (None: none does). Words are stemmed a
    chunk at a time, so a long body is read only as far as its first match."""
    if not qstems:
        return None
    words = (m for m in WORD.finditer(text) if is_content_word(m.group(0)))
    while chunk := [m for _, m in zip(range(CHUNK), words)]:
        for m, s in zip(chunk, stems([m.group(0) for m in chunk])):
            if s in qstems:
                return m.start()
    return None


def snippet(body: str, qstems: frozenset[str], width: int = SNIPPET_CHARS) -> str:
    """Up to `width` characters of `body` (whitespace collapsed), starting a little before its first word that
    matches the query, cut at word boundaries, with an ellipsis where text was left out."""
    text = " ".join(body.split())
    if len(text) <= width:
        return text
    at = first_match(text, qstems)
    start = 0 if at is None else max(0, at - LEAD_CHARS)
    if start > 0:  # begin on a word
        space = text.find(" ", start)
        start = space + 1 if 0 <= space < start + 20 else start
    start = min(start, max(0, len(text) - width))
    end = start + width
    if end < len(text):
        space = text.rfind(" ", start, end)
        end = space if space > start + width // 2 else end
    return ("…" if start > 0 else "") + text[start:end].strip() + ("…" if end < len(text) else "")


def highlights(texts: Iterable[str], qstems: frozenset[str]) -> list[str]:
    """The words to mark in these texts (a hit's title and snippet)."""
    return matching_words(" ".join(texts), qstems)
