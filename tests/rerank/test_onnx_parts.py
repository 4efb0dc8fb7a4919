"""The reranker's per-query parts in ONNX Runtime give the torch model's numbers (within 1e-5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime  # noqa: F401,E402  # a required dependency (pyproject): missing fails the module, never skips
import pytest
import torch

from ticketsearch.rerank.model import PairModel, RerankConfig


@pytest.mark.parametrize("arch,pair_dim,prior", [("cross", 6, True), ("cross", 0, False), ("concat", 6, True)])
def test_onnx_parts_equal_the_torch_model(tmp_path: Path, arch: str, pair_dim: int, prior: bool) -> None:
    from ticketsearch.rerank.onnx_export import exported_parts
    from ticketsearch.rerank.onnx_parts import HEAD

    torch.manual_seed(5)
    model = PairModel(RerankConfig(feat_dim=12, arch=arch, pair_dim=pair_dim, cosine_prior=prior)).eval()
    for p in model.parameters():  # no zero-initialised layer: every term counts
        torch.nn.init.normal_(p, std=0.05)
    parts = exported_parts(model, "abc123", tmp_path)
    g = torch.Generator().manual_seed(0)
    targets = torch.randn(30, 384, generator=g)
    pair = torch.rand(30, pair_dim, generator=g) if pair_dim else None
    for length in (1, 9, 300):  # any query length (the graph has a dynamic sequence axis)
        tokens = torch.randn(1, length, 384, generator=g)
        mask = torch.ones(1, length, dtype=torch.long)
        feats = torch.rand(1, 12, generator=g)
        with torch.inference_mode():
            v, attn = model.item_vectors(tokens, mask, feats, "source")
            logits = model.score(v, targets, pair)
        if parts.has_source:
            v_o, a_o = parts.source_vector(tokens.numpy(), mask.numpy(), feats.numpy())
            np.testing.assert_allclose(v_o, v.numpy(), atol=1e-5, rtol=1e-5)
            np.testing.assert_allclose(a_o, attn.numpy(), atol=1e-6)
        l_o = parts.score(v.numpy()[0], targets.numpy(), None if pair is None else pair.numpy())
        assert np.abs(logits.numpy()).max() > 1e-3
        np.testing.assert_allclose(l_o, logits.numpy(), atol=1e-5, rtol=1e-5)
    # a second load reuses the machine's export
    head = tmp_path / "onnx" / "rerank-abc123" / HEAD
    mtime = head.stat().st_mtime_ns
    exported_parts(model, "abc123", tmp_path)
    assert head.stat().st_mtime_ns == mtime
