"""The reranker's per-query work run by ONNX Runtime: the query's own item vector and the head over the
candidates.

A search computes one source vector (feature MLP, folded attention, feed-forward) and scores 100 cached
candidate vectors: a few dozen small tensor operations whose per-operation overhead in eager torch costs
more than their arithmetic (about 1.7 + 1.5 ms inside a search). The same two computations exported to ONNX
Runtime run as two fused graphs. They are exported from the trained model itself, once per machine and
model checksum, into `<cache_dir>/onnx/rerank-<checksum>/` (written whole, then renamed), and must agree
with the torch model within 1e-5 (tests/rerank/test_onnx_parts.py). Candidate vectors, training and the
GPU path stay in torch.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ticketsearch.atomic import atomic_write_dir
from ticketsearch.retrieval.onnx_runtime import cpu_session, quiet_export

from .model import PairModel

FORMAT = 2  # bump when the exported graphs change
SOURCE, HEAD, META = "source.onnx", "head.onnx", "meta.json"
log = logging.getLogger(__name__)


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


class OnnxRerankParts:
    """ONNX Runtime sessions for `source_vector` (cross-attention models) and `score`."""

    def __init__(self, model: PairModel, checksum: str, cache_dir: Path, threads: int = 1) -> None:
        self.cfg = model.cfg
        self.dir = ensure_exported(model, checksum, Path(cache_dir).expanduser() / "onnx" / f"rerank-{checksum}")
        self.source = cpu_session(self.dir / SOURCE, threads) if self.has_source else None
        self.head = cpu_session(self.dir / HEAD, threads)

    @property
    def has_source(self) -> bool:
        return self.cfg.arch == "cross"

    def source_vector(self, tokens: np.ndarray, mask: np.ndarray, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """tokens [1, T, D] float32, mask [1, T], feats [1, F] -> vector [1, D], attention [1, T]."""
        assert self.source is not None
        v, attn = self.source.run(None, {"tokens": tokens.astype(np.float32, copy=False),
                                         "mask": mask.astype(np.int64, copy=False),
                                         "feats": feats.astype(np.float32, copy=False)})
        return v, attn

    def score(self, source: np.ndarray, targets: np.ndarray, pair: np.ndarray | None) -> np.ndarray:
        n = len(targets)
        if pair is None:
            pair = np.zeros((n, 1), np.float32)  # an input the graph ignores (no pair inputs)
        (logits,) = self.head.run(None, {"src": np.asarray(source, np.float32).reshape(-1),
                                         "t": np.asarray(targets, np.float32), "pair": np.asarray(pair, np.float32)})
        return logits


def ensure_exported(model: PairModel, checksum: str, directory: Path) -> Path:
    meta_path = directory / META
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text("utf-8"))
            if meta.get("format") == FORMAT and meta.get("checksum") == checksum:
                return directory
        except (OSError, ValueError):
            pass

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
