from __future__ import annotations

import numpy as np
import pytest

from ticketsearch.errors import TicketsearchError
from ticketsearch.retrieval.encoder import resolve_model_dir


def test_packaged_minilm_loads_offline(encoder) -> None:
    assert encoder.dim == 384 and encoder.name == "all-MiniLM-L6-v2"
    assert "seq256" in encoder.key


def test_embeddings_are_normalised_and_meaningful(encoder) -> None:
    v = encoder.encode(["The server is down", "Server outage, nothing responds", "Recipe for banana bread"])
    assert v.shape == (3, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2


def test_one_pass_gives_pooled_and_token_states(encoder) -> None:
    texts = ["short", "a somewhat longer ticket text about login failures"]
    b = encoder.encode_with_tokens(texts)
    assert b.pooled.shape == (2, 384)
    assert b.tokens.shape[:2] == b.attention_mask.shape == b.input_ids.shape
    assert b.tokens.shape[2] == 384
    assert int(b.attention_mask[0].sum()) == 3  # [CLS] short [SEP]
    # pooled equals the masked mean of the token states, normalised (the model's own pooling)
    m = b.attention_mask.unsqueeze(-1).float()
    mean = (b.tokens * m).sum(1) / m.sum(1)
    mean = mean / mean.norm(dim=1, keepdim=True)
    assert np.allclose(mean.numpy(), b.pooled.numpy(), atol=1e-5)
    # and matches the batched path, whatever the batch composition
    assert np.allclose(encoder.encode(texts), b.pooled.numpy(), atol=1e-5)


def test_bad_model_path() -> None:
    with pytest.raises(TicketsearchError, match="not 'minilm'"):
        resolve_model_dir("/nonexistent/model")


def test_a_weights_hash_is_kept_per_machine_and_follows_every_rewrite(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """The weights' content hash (the model's identity) is read once per machine: a fresh process takes it from
    the cache; a rewrite of the file, even one that restores its size and mtime, is hashed again."""
    import os

    from ticketsearch.retrieval import encoder as enc

    weights, cache = tmp_path / "model.safetensors", tmp_path / "cache"
    weights.write_bytes(b"a" * 5000)
    first = enc.file_hash(weights, cache)
    assert len(list((cache / "hashes").iterdir())) == 1
    enc._CONTENT_HASHES.clear()  # a fresh process: the hash comes from the cache, the file is not read

    def no_read(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("read the weights again")

    monkeypatch.setattr(enc, "open", no_read, raising=False)
    assert enc.file_hash(weights, cache) == first
    monkeypatch.undo()
    st = weights.stat()
    weights.write_bytes(b"b" * 5000)  # the same size, the old mtime put back: ctime still moves
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    enc._CONTENT_HASHES.clear()
    second = enc.file_hash(weights, cache)
    assert second != first and second == enc.file_hash(weights)  # as hashed without a cache
    blocker = tmp_path / "a-file"  # a cache that cannot be read or written costs a read, nothing else
    blocker.write_text("not a folder")
    enc._CONTENT_HASHES.clear()
    assert enc.file_hash(weights, blocker) == second
