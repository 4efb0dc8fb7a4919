"""The query path's encoder without torch: the int8 ONNX transformer, the model's own `tokenizers` tokenizer,
and mean pooling in numpy.

A search needs only this (with FAISS, DuckDB, BM25 and the reranker's ONNX parts): torch, transformers and
sentence-transformers load for ingest, training and explanations, not for a query. The ONNX files are
exported by `retrieval.quantized` (at ingest and when a model is installed) into a folder per encoder
identity; this module only reads them. It serves models laid out as Transformer -> mean Pooling ->
(Normalize), with a `tokenizer.json`, as all-MiniLM-L6-v2 and its tuned copies are (`lite_supported`);
anything else goes through the fp32 encoder.

The tokenizer is the fast tokenizer's own backend (the `tokenizers` package that transformers wraps), truncated
at the index's `max_seq_length` and padded to the longest text like `Encoder.tokenize`: the same token ids
(tests/retrieval/test_onnx_query.py compares them), the same vectors within 1e-5.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ticketsearch.errors import TicketsearchError
from ticketsearch.settings import Settings

from .encoder import ModelIdentity, resolve_device
from .onnx_runtime import cpu_session

ONNX_FP32 = "model.onnx"
ONNX_INT8 = "model.int8.onnx"
ONNX_META = "meta.json"
ONNX_FORMAT = 1  # bump when the exported graph or the quantisation recipe changes
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_SERVED_MODULES = {"sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling",
                   "sentence_transformers.models.Normalize"}


def onnx_available() -> bool:
    try:
        import onnxruntime  # noqa: F401  # deferred: ONNX Runtime
    except ImportError:
        return False
    return True


def onnx_query_dir_for(key: str, settings: Settings) -> Path:
    """The folder of the ONNX query encoder of the encoder with identity `key` on this machine."""
    return Path(settings.cache_dir).expanduser() / "onnx" / hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


def onnx_files_current(key: str, model_dir: Path) -> bool:
    """True if `model_dir` holds both ONNX files exported from the encoder with identity `key` by this recipe."""
    meta_path = Path(model_dir) / ONNX_META
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(meta, dict) and meta.get("format") == ONNX_FORMAT and meta.get("encoder_key") == key
            and all((Path(model_dir) / f).is_file() for f in (ONNX_FP32, ONNX_INT8)))


def lite_supported(model_dir: Path) -> bool:
    """True for a Transformer -> mean Pooling -> (Normalize) model with a `tokenizer.json`: what this module
    computes exactly. Other layouts (a Dense layer, CLS pooling) need the model's own pipeline."""
    try:
        modules = json.loads((model_dir / "modules.json").read_text("utf-8"))
        types = {str(m["type"]) for m in modules}
        pooling = next(m for m in modules if m["type"].endswith(".Pooling"))
        pool = json.loads((model_dir / str(pooling["path"]) / "config.json").read_text("utf-8"))
    except (OSError, ValueError, KeyError, TypeError, StopIteration):
        return False
    modes = {k for k, v in pool.items() if k.startswith("pooling_mode") and v}
    return (types <= _SERVED_MODULES and modes == {"pooling_mode_mean_tokens"}
            and (model_dir / "tokenizer.json").is_file())


def pooled_unit_np(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of the real tokens' states, L2-normalised (`encoder.pooled_unit`, in numpy): float32 [B, D]."""
    m = mask[..., None].astype(np.float32)
    pooled = (hidden.astype(np.float32) * m).sum(1) / np.maximum(m.sum(1), 1.0)
    return (pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-6)).astype(np.float32)


@dataclass
class TokenArrays:
    """One forward pass in numpy: pooled embeddings and token states, with the mask and ids that align them
    (`encoder.TokenBatch`'s fields, as arrays)."""

    pooled: np.ndarray  # [B, D] float32, L2-normalised
    tokens: np.ndarray  # [B, T, D] float32
    attention_mask: np.ndarray  # [B, T] int64
    input_ids: np.ndarray  # [B, T] int64


class LiteQueryEncoder:
    """Query texts -> vectors (and token states) through the int8 ONNX transformer, without torch.

    The same interface as `Encoder` for what search uses: `dim`, `key`, `name`, `encode`, `encode_with_tokens`.
    """

    kind = "onnx-int8"

    def __init__(self, identity: ModelIdentity, onnx_dir: Path, settings: Settings, threads: int = 1) -> None:
        from tokenizers import Tokenizer  # deferred: the tokenizer's own package (no transformers)

        if not onnx_files_current(identity.key, onnx_dir):
            raise TicketsearchError(f"{onnx_dir}: no current ONNX export of {identity.name}")
        self.identity = identity
        self.name = identity.name
        self.max_seq_length = identity.max_seq_length
        self.device = "cpu"
        self.settings = settings
        self.batch_size = settings.encode_batch_size
        self.key = f"{identity.key}|query-{self.kind}"  # never the fp32 key (the embedding cache holds those)
        self._tok = Tokenizer.from_file(str(identity.model_dir / "tokenizer.json"))
        self._tok.enable_truncation(max_length=identity.max_seq_length)
        self._tok.no_padding()
        pad = self._tok.token_to_id("[PAD]")
        self._pad_id = 0 if pad is None else int(pad)
        self.model_dir = Path(onnx_dir)
        self.session = cpu_session(self.model_dir / ONNX_INT8, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.dim = int(self.session.get_outputs()[0].shape[-1])

    def tokenize(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Token ids, attention mask and token types [B, T] int64, padded to the longest text."""
        encs = self._tok.encode_batch(list(texts))
        width = max((len(e.ids) for e in encs), default=0)
        ids = np.full((len(encs), width), self._pad_id, np.int64)
        mask = np.zeros((len(encs), width), np.int64)
        types = np.zeros((len(encs), width), np.int64)
        for i, e in enumerate(encs):
            n = len(e.ids)
            ids[i, :n], mask[i, :n], types[i, :n] = e.ids, e.attention_mask, e.type_ids
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}

    def _hidden(self, feats: dict[str, np.ndarray]) -> np.ndarray:
        inputs: dict[str, Any] = {n: feats[n] for n in self.input_names}
        return np.asarray(self.session.run(None, inputs)[0], dtype=np.float32)

    def encode_with_tokens(self, texts: list[str]) -> TokenArrays:
        feats = self.tokenize(texts)
        hidden = self._hidden(feats)
        mask = feats["attention_mask"]
        return TokenArrays(pooled_unit_np(hidden, mask), hidden, mask, feats["input_ids"])

    def encode(self, texts: list[str], progress: bool = False, desc: str = "encode") -> np.ndarray:
        """L2-normalised float32 embeddings [len(texts), dim], length-sorted batches like `Encoder.encode`."""
        del progress, desc  # queries are few: no progress bar
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        for i in range(0, len(texts), self.batch_size):
            idx = order[i : i + self.batch_size]
            out[idx] = self.encode_with_tokens([texts[j] for j in idx]).pooled
        return out


def lite_query_encoder(identity: ModelIdentity, settings: Settings) -> LiteQueryEncoder | None:
    """The torch-free query encoder of `identity` where the settings ask for the int8 ONNX path on a CPU and
    its export is current; None where queries must go through the fp32 model (or its export is still to do).
    The one choice of the query path for a search pipeline and for a service's shared models."""
    if settings.query_encoder != "onnx-int8" or resolve_device(settings.device) != "cpu" or not onnx_available():
        return None
    onnx_dir = onnx_query_dir_for(identity.key, settings)
    if not lite_supported(identity.model_dir) or not onnx_files_current(identity.key, onnx_dir):
        return None
    return LiteQueryEncoder(identity, onnx_dir, settings, threads=query_threads(settings))


def query_threads(settings: Settings) -> int:
    """ONNX Runtime's threads for a query pass: `query_threads`, else the compute threads the settings give
    (`threads`), else the cores this process may use (torch's own default), found without importing torch."""
    if settings.query_threads or settings.threads:
        return int(settings.query_threads or settings.threads)
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
