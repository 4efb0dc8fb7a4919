"""Explanations: which words an item's features attended to, with word pieces merged and special tokens,
padding and punctuation left out; and a PNG bar chart like the article's `visualize_attention`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ticketsearch.atomic import atomic_write_with


def attended_words(
    input_ids: Sequence[int] | np.ndarray,
    weights: Sequence[float] | np.ndarray,
    tokenizer,  # noqa: ANN001
    top_n: int = 8,
) -> list[tuple[str, float]]:
    """(word, attention) pairs, best first. Position i of `weights` belongs to token i of `input_ids`
    ([CLS] at 0), so special tokens and padding are dropped by id, never by an offset."""
    tokens = tokenizer.convert_ids_to_tokens([int(i) for i in input_ids])
    special = set(tokenizer.all_special_ids)
    words: list[list] = []  # [word, weight]
    for tid, tok, w in zip(input_ids, tokens, weights):
        if int(tid) in special:
            continue
        if tok.startswith("##") and words:
            words[-1][0] += tok[2:]
            words[-1][1] += float(w)
        else:
            words.append([tok, float(w)])
    merged: dict[str, float] = {}
    for word, w in words:
        if any(ch.isalnum() for ch in word):
            merged[word] = merged.get(word, 0.0) + w
    return sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))[:top_n]


def plot_attention(words: Sequence[tuple[str, float]], title: str, out: Path) -> None:
    """A horizontal bar chart of attended words, written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [w for w, _ in words][::-1]
    vals = np.array([v for _, v in words][::-1])
    fig, ax = plt.subplots(figsize=(6, 0.4 * max(len(words), 3) + 1))
    ax.barh(labels, vals, color="#3b7dd8")
    ax.set_xlabel("attention from the feature embedding")
    ax.set_title(title[:80], fontsize=10)
    fig.tight_layout()
    atomic_write_with(Path(out), lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)
