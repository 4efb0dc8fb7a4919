from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ticketsearch.rerank.token_cache import TokenCache, pad_batch


def fake_encode(texts: list[str]):
    """Deterministic token states: one token per character (plus [CLS]/[SEP]), value = character code."""
    t = max(len(x) for x in texts) + 2
    states = torch.zeros(len(texts), t, 4)
    mask = torch.zeros(len(texts), t, dtype=torch.long)
    ids = torch.zeros(len(texts), t, dtype=torch.long)
    for i, x in enumerate(texts):
        codes = [101] + [ord(c) for c in x] + [102]
        mask[i, : len(codes)] = 1
        ids[i, : len(codes)] = torch.tensor(codes)
        states[i, : len(codes)] = torch.tensor(codes, dtype=torch.float32).unsqueeze(1) / 100
    return states, mask, ids


def test_round_trip_shards_and_reopen(tmp_path: Path) -> None:
    cache = TokenCache(tmp_path)
    texts = [f"text number {i}" + "x" * i for i in range(10)]
    hashes = [f"h{i}" for i in range(10)]
    assert cache.ensure(hashes, texts, fake_encode, batch_size=3, shard_size=4, progress=False) == 10
    assert len(list(tmp_path.glob("shard-*.hashes.npy"))) == 3
    assert cache.ensure(hashes, texts, fake_encode, progress=False) == 0  # all cached
    again = TokenCache(tmp_path)
    for h, t in zip(hashes, texts):
        tok = again.get(h)
        assert tok.states.dtype == np.float16 and len(tok.states) == len(t) + 2
        assert tok.ids[0] == 101 and tok.ids[-1] == 102
        assert np.allclose(tok.states[1:-1, 0], [ord(c) / 100 for c in t], atol=1e-2)


def test_interrupted_shard_is_ignored(tmp_path: Path) -> None:
    cache = TokenCache(tmp_path)
    cache.ensure(["a"], ["abc"], fake_encode, progress=False)
    (tmp_path / "shard-00000.hashes.npy").unlink()  # as if the write stopped before its last file
    assert "a" not in TokenCache(tmp_path)


def test_pad_batch() -> None:
    from ticketsearch.rerank.token_cache import Tokens

    items = [Tokens(np.ones((3, 4), np.float16), np.arange(3)), Tokens(np.ones((5, 4), np.float16), np.arange(5))]
    x, m = pad_batch(items)
    assert x.shape == (2, 5, 4) and m.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert x[0, 3:].abs().sum() == 0
