from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ticketsearch.errors import TicketsearchError
from ticketsearch.rerank.model import PairModel, RerankConfig
from ticketsearch.rerank.persist import load_reranker, save_reranker


def test_save_load_identical_scores(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = PairModel(RerankConfig(feat_dim=6, pair_dim=2)).eval()
    checksum = save_reranker(tmp_path, model, {"name": "x", "calibration": {"a": 1.0, "b": 0.0}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded, meta = load_reranker(tmp_path)
    assert meta["checksum"] == checksum and meta["model"]["pair_dim"] == 2
    g = torch.Generator().manual_seed(1)
    args = (torch.randn(3, 5, 384, generator=g), torch.ones(3, 5, dtype=torch.long), torch.rand(3, 6, generator=g))
    pair = torch.rand(3, 2, generator=g)
    with torch.no_grad():
        assert torch.equal(model(*args, *args, pair), loaded(*args, *args, pair))


def test_tampered_weights_are_refused(tmp_path: Path) -> None:
    save_reranker(tmp_path, PairModel(RerankConfig(feat_dim=3)), {"name": "x"})
    data = bytearray((tmp_path / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(TicketsearchError, match="checksum"):
        load_reranker(tmp_path)
    with pytest.raises(TicketsearchError, match="no trained reranker"):
        load_reranker(tmp_path / "missing")
