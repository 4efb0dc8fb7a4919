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
