from __future__ import annotations

from pathlib import Path

import numpy as np

from ticketsearch.rerank.explain import attended_words, plot_attention


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
