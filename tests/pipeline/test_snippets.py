"""Snippets and highlights: the passage around the first matching word, and the words that match by stem."""

from __future__ import annotations

from ticketsearch.pipeline.snippets import SNIPPET_CHARS, highlights, matching_words, query_stems, snippet


def test_words_match_by_stem_and_stopwords_never_match() -> None:
    q = query_stems("The app crashes when uploading photos")
    assert matching_words("Crashed while I uploaded a photo, the app froze", q) == ["crashed", "uploaded", "photo",
                                                                                    "app"]
    assert matching_words("the when and", query_stems("the when")) == []
    assert highlights(["Payment failed", "charged twice"], query_stems("failing payments")) == ["payment", "failed"]


def test_a_short_body_is_kept_whole_and_whitespace_collapsed() -> None:
    assert snippet("  Line one.\n\nLine   two. ", query_stems("two")) == "Line one. Line two."


def test_the_passage_starts_near_the_first_matching_word() -> None:
    filler = " ".join(f"word{i}" for i in range(200))
    body = f"{filler} the invoice was charged twice this month {filler}"
    s = snippet(body, query_stems("charged twice"))
    assert "charged twice" in s and s.startswith("…") and s.endswith("…")
    assert len(s) <= SNIPPET_CHARS + 2
    assert s.index("charged") < 80  # a little context before the match, not the body's start


def test_without_a_match_the_passage_is_the_start() -> None:
    body = "Alpha beta gamma. " * 40
    s = snippet(body, query_stems("zebra"))
    assert s.startswith("Alpha beta") and s.endswith("…") and not s.endswith(" …")
