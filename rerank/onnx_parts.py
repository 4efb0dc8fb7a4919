"""The reranker's per-query work run by ONNX Runtime: the query's own item vector and the head over the
candidates.

A search computes one source vector (feature MLP, folded attention, feed-forward) and scores 100 cached
candidate vectors: a few dozen small tensor operations whose per-operation overhead in eager torch costs
more than their arithmetic (about 1.7 + 1.5 ms inside a search). The same two computations exported to ONNX
Runtime run as two fused graphs, and need no torch at all: `onnx_export` writes them (at training and
ingest), this module only reads them. Candidate vectors, training and the GPU path stay in torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ticketsearch.retrieval.onnx_runtime import cpu_session

FORMAT = 2  # bump when the exported graphs change
SOURCE, HEAD, META = "source.onnx", "head.onnx", "meta.json"


def parts_dir(cache_dir: Path, checksum: str) -> Path:
    """Where a reranker's exported parts live on this machine (one folder per model checksum)."""
    return Path(cache_dir).expanduser() / "onnx" / f"rerank-{checksum}"


def parts_current(directory: Path, checksum: str) -> bool:
    """True if `directory` holds this recipe's export of the reranker with `checksum`."""
    try:
        meta = json.loads((Path(directory) / META).read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT and meta.get("checksum") == checksum


class OnnxRerankParts:
    """ONNX Runtime sessions for `source_vector` (cross-attention models) and `score`, from an exported folder
    (`onnx_export.ensure_exported`). `cfg` is the model's config (`RerankConfig.to_dict()`)."""

    def __init__(self, directory: Path, cfg: dict[str, Any], threads: int = 1) -> None:
        self.dir = Path(directory)
        self.arch = str(cfg.get("arch", "cross"))
        self.source = cpu_session(self.dir / SOURCE, threads) if self.has_source else None
        self.head = cpu_session(self.dir / HEAD, threads)

    @property
    def has_source(self) -> bool:
        return self.arch == "cross"

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
