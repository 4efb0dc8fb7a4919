"""Exporting the reranker's per-query parts to ONNX (`onnx_parts` runs them): torch's side of it.

Exported from the trained model itself, once per machine and model checksum, into
`<cache_dir>/onnx/rerank-<checksum>/` (written whole, then renamed); training and `ingest` do it, so that no
search pays for it. The graphs must agree with the torch model within 1e-5 (tests/rerank/test_onnx_parts.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ticketsearch.atomic import atomic_write_dir
from ticketsearch.retrieval.onnx_runtime import quiet_export

from .model import PairModel
from .onnx_parts import FORMAT, HEAD, META, SOURCE, OnnxRerankParts, parts_current, parts_dir


class _Source(nn.Module):
    def __init__(self, model: PairModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, tokens: torch.Tensor, mask: torch.Tensor, feats: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        v, attn = self.model.item_vectors(tokens, mask, feats, "source")
        return v, attn  # type: ignore[return-value]  # onnxruntime returns untyped lists of arrays


class _Head(nn.Module):
    """`PairModel.score` for one source against N targets (the folded first layer), traced without caches."""

    def __init__(self, model: PairModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, src: torch.Tensor, t: torch.Tensor, pair: torch.Tensor) -> torch.Tensor:
        return self.model._score_one_source(src, t, pair if self.model.cfg.pair_dim else None, cache=False)


def ensure_exported(model: PairModel, checksum: str, directory: Path) -> Path:
    """Export `model`'s parts into `directory` unless a current export of this checksum is there."""
    if parts_current(directory, checksum):
        return directory

    def write(tmp: Path) -> None:
        tmp.chmod(0o755)
        export(model, tmp)
        (tmp / META).write_text(json.dumps({"format": FORMAT, "checksum": checksum, "torch": torch.__version__}) + "\n")

    atomic_write_dir(directory, write)
    return directory


def export(model: PairModel, out: Path) -> None:
    """Write source.onnx (cross-attention models) and head.onnx for `model` into `out`."""
    model = model.eval()
    d, p = model.cfg.text_dim, max(model.cfg.pair_dim, 1)
    with quiet_export(), torch.no_grad():
        if model.cfg.arch == "cross":
            seq = torch.export.Dim("seq", min=1, max=4096)
            torch.onnx.export(
                _Source(model),
                (torch.randn(1, 7, d), torch.ones(1, 7, dtype=torch.long), torch.rand(1, model.cfg.feat_dim)),
                str(out / SOURCE), input_names=["tokens", "mask", "feats"], output_names=["vector", "attention"],
                dynamic_shapes={"tokens": {1: seq}, "mask": {1: seq}, "feats": None},
                dynamo=True, external_data=False, verbose=False,
            )
        n = torch.export.Dim("n", min=1, max=100_000)
        torch.onnx.export(
            _Head(model), (torch.randn(d), torch.randn(5, d), torch.rand(5, p)), str(out / HEAD),
            input_names=["src", "t", "pair"], output_names=["logits"],
            dynamic_shapes={"src": None, "t": {0: n}, "pair": {0: n}},
            dynamo=True, external_data=False, verbose=False,
        )


def exported_parts(model: PairModel, checksum: str, cache_dir: Path, threads: int = 1) -> OnnxRerankParts:
    """The model's ONNX parts on this machine, exported first where they are not yet."""
    directory = ensure_exported(model, checksum, parts_dir(cache_dir, checksum))
    return OnnxRerankParts(directory, model.cfg.to_dict(), threads)
