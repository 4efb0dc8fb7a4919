"""Save and load a trained reranker as a directory: config.json + model.safetensors (never pickle).

Reading a reranker's config and checking its weights' checksum need no torch (a search through the ONNX parts
uses only these); loading or saving the weights imports it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ticketsearch.atomic import atomic_write_json, atomic_write_with
from ticketsearch.errors import TicketsearchError
from ticketsearch.retrieval.encoder import resolve_device

if TYPE_CHECKING:
    import torch

    from .model import PairModel

CONFIG = "config.json"
WEIGHTS = "model.safetensors"


def weights_checksum(directory: Path) -> str:
    """The checksum a reranker's config names for its weights file."""
    return hashlib.blake2b((Path(directory) / WEIGHTS).read_bytes(), digest_size=12).hexdigest()


def save_reranker(directory: Path, model: PairModel, meta: dict[str, Any]) -> str:
    """Write weights then config (the config names the weights' checksum). Returns the checksum."""
    from safetensors.torch import save_file  # deferred: torch

    directory = Path(directory)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_with(directory / WEIGHTS, lambda p: save_file(state, str(p)))
    checksum = weights_checksum(directory)
    atomic_write_json(directory / CONFIG, {"model": model.cfg.to_dict(), "checksum": checksum, **meta})
    return checksum


def reranker_meta(directory: Path) -> dict[str, Any]:
    """A saved reranker's config (name, checksum, thresholds, ...), without loading its weights."""
    directory = Path(directory)
    if not (directory / CONFIG).is_file() or not (directory / WEIGHTS).is_file():
        raise TicketsearchError(f"{directory}: no trained reranker here ({CONFIG} + {WEIGHTS})")
    return dict(json.loads((directory / CONFIG).read_text("utf-8")))


def checked_meta(directory: Path) -> dict[str, Any]:
    """`reranker_meta`, after checking that the weights are the ones the config names (TicketsearchError if not)."""
    meta = reranker_meta(directory)
    if weights_checksum(directory) != meta.get("checksum"):
        raise TicketsearchError(f"{directory}: {WEIGHTS} does not match {CONFIG} (checksum); retrain or restore")
    return meta


def load_reranker(directory: Path, device: str = "cpu") -> tuple[PairModel, dict[str, Any]]:
    import torch  # deferred: the model's weights
    from safetensors.torch import load_file

    from .model import PairModel, RerankConfig  # deferred: torch

    directory = Path(directory)
    meta = checked_meta(directory)
    with torch.device("meta"):  # no random initialisation of weights that are loaded next
        model = PairModel(RerankConfig(**meta["model"]))
    model.load_state_dict(load_file(str(directory / WEIGHTS), device=device), assign=True)
    return model.to(device).eval(), meta


def torch_device(setting: str) -> torch.device:
    """The device for a setting (auto, cpu, cuda), by the encoder's one rule."""
    import torch  # deferred: torch

    return torch.device(resolve_device(setting))
