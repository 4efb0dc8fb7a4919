"""Save and load a trained reranker as a directory: config.json + model.safetensors (never pickle)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ticketsearch.atomic import atomic_write_json, atomic_write_with
from ticketsearch.errors import TicketsearchError
from ticketsearch.retrieval.encoder import resolve_device

from .model import PairModel, RerankConfig

CONFIG = "config.json"
WEIGHTS = "model.safetensors"


def save_reranker(directory: Path, model: PairModel, meta: dict[str, Any]) -> str:
    """Write weights then config (the config names the weights' checksum). Returns the checksum."""
    directory = Path(directory)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_with(directory / WEIGHTS, lambda p: save_file(state, str(p)))
    checksum = hashlib.blake2b((directory / WEIGHTS).read_bytes(), digest_size=12).hexdigest()
    atomic_write_json(directory / CONFIG, {"model": model.cfg.to_dict(), "checksum": checksum, **meta})
    return checksum


def reranker_meta(directory: Path) -> dict[str, Any]:
    """A saved reranker's config (name, checksum, thresholds, ...), without loading its weights."""
    directory = Path(directory)
    if not (directory / CONFIG).is_file() or not (directory / WEIGHTS).is_file():
        raise TicketsearchError(f"{directory}: no trained reranker here ({CONFIG} + {WEIGHTS})")
    return dict(json.loads((directory / CONFIG).read_text("utf-8")))


def load_reranker(directory: Path, device: str = "cpu") -> tuple[PairModel, dict[str, Any]]:
    directory = Path(directory)
    meta = reranker_meta(directory)
    checksum = hashlib.blake2b((directory / WEIGHTS).read_bytes(), digest_size=12).hexdigest()
    if checksum != meta.get("checksum"):
        raise TicketsearchError(f"{directory}: {WEIGHTS} does not match {CONFIG} (checksum); retrain or restore")
    with torch.device("meta"):  # no random initialisation of weights that are loaded next
        model = PairModel(RerankConfig(**meta["model"]))
    model.load_state_dict(load_file(str(directory / WEIGHTS), device=device), assign=True)
    return model.to(device).eval(), meta


def torch_device(setting: str) -> torch.device:
    """The device for a setting (auto, cpu, cuda), by the encoder's one rule."""

    return torch.device(resolve_device(setting))
