from __future__ import annotations

from pathlib import Path

import numpy as np

from ticketsearch.pipeline.rerank_vectors import token_states
from ticketsearch.rerank.explain import attended_words, content_words, is_content_word, matched_words, plot_attention
from ticketsearch.retrieval.lexical import stems


def test_words_come_from_the_text_with_pieces_merged(encoder) -> None:
    text = "Kerberos authentication fails on NameNode"
    b = encoder.encode_with_tokens([text, text + " with a much longer tail so the first one is padded"])
    ids = b.input_ids[0].tolist()
    n = int(b.attention_mask[0].sum())
    weights = np.zeros(len(ids))
    weights[:n] = 1.0 / n  # uniform over real tokens, [CLS] and [SEP] included
    weights[0] = 0.5  # a lot of attention on [CLS] must not leak to a word
    words = attended_words(ids, weights, encoder.tokenizer, top_n=20)
    got = {w for w, _ in words}
    assert got <= set(text.lower().replace(",", "").split())  # every word is a word of the text
    assert {"kerberos", "namenode", "authentication"} <= got  # word pieces merged back
    assert not any(w.startswith("##") or w in ("[CLS]", "[SEP]", "[PAD]") for w in got)
    # a multi-piece word gets the sum of its pieces' weights
    pieces = len(encoder.tokenizer.tokenize("kerberos"))
    kerberos = dict(words)["kerberos"]
    assert kerberos == np.float64(pieces / n).round(12) or abs(kerberos - pieces / n) < 1e-9


def test_plot_writes_a_png(tmp_path: Path) -> None:
    out = tmp_path / "a.png"
    plot_attention([("disk", 0.4), ("full", 0.2)], "T-1: disk full", out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_content_words_leave_out_stopwords_numbers_and_punctuation() -> None:
    for word in ("the", "not", "when", "it", "26158", "14.2", ",", "-", "a"):
        assert not is_content_word(word), word
    for word in ("crashes", "NameNode", "v2", "hdfs", "oom"):
        assert is_content_word(word), word


def test_matched_words_are_content_words_of_both_texts(encoder) -> None:
    query = "The app crashes when I open it on Android 14, error 26158"
    cand = "Mobile app crash at startup on the Android version 14.2 (error code 26158)"
    q, c = token_states(encoder, [query, cand])
    tok = encoder.tokenizer
    got = matched_words(content_words(q.states, q.ids, tok), content_words(c.states, c.ids, tok))
    words = {m.word for m in got}
    assert {"app", "crashes", "android", "error"} <= words  # exact, "crashes" through its stem
    assert not words & {"the", "when", "it", "on", "14", "26158"}  # no stopword, no bare number
    cand_words = set(cand.lower().replace(",", " ").replace("(", " ").replace(")", " ").split())
    for m in got:
        assert is_content_word(m.word) and m.word in query.lower()
        assert m.match in cand_words
        if m.kind == "exact":
            assert stems([m.word]) == stems([m.match])
        else:
            assert stems([m.word]) != stems([m.match]) and m.similarity >= 0.7
    # the same word in two contexts is close in the token states; a strict threshold leaves exact ones only
    assert all(m.similarity > 0.5 for m in got if m.kind == "exact")
    strict = matched_words(content_words(q.states, q.ids, tok), content_words(c.states, c.ids, tok), near=1.01)
    assert strict and all(m.kind == "exact" for m in strict)
    # a candidate with nothing in common matches nothing
    other = token_states(encoder, ["Invoice PDF shows the wrong currency symbol"])[0]
    assert matched_words(content_words(q.states, q.ids, tok), content_words(other.states, other.ids, tok),
                         near=0.9) == []
