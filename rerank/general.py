"""The general reranker: for a collection with too few duplicate links to train its own.

A logistic regression on the pair inputs every schema has (the first-stage scores and the time gap:
`pair_features.KIND_COLUMNS`, computed under `GENERAL_SCHEMA`, which has no fields), trained on the shared
JIRA data and shipped with the package (`general_model/`: config.json + model.safetensors). On hadoop and hive
this linear part carries the trained reranker's gain (docs/RESULTS.md); it needs no token states and no
candidate vectors, so it reranks any index as it stands.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from ticketsearch.atomic import atomic_write_json, atomic_write_with
from ticketsearch.errors import TicketsearchError
from ticketsearch.index_data.schema import Schema

from .calibration import platt, stored_threshold

GENERAL_SCHEMA = Schema(name="general", text_fields=("title", "body"), fields=())
SHIPPED = Path(__file__).parent / "general_model"
CONFIG, WEIGHTS = "config.json", "model.safetensors"


@dataclass
class LinearPairModel:
    weights: np.ndarray  # [pair_dim(GENERAL_SCHEMA)]
    bias: float

    def logits(self, pair: np.ndarray) -> np.ndarray:
        return np.asarray(pair, np.float64) @ self.weights.astype(np.float64) + self.bias


def save_general(directory: Path, model: LinearPairModel, meta: dict[str, Any]) -> str:
    """Weights (safetensors, float32), then the config naming their checksum. Returns the checksum."""

    directory = Path(directory)
    tensors = {"weights": model.weights.astype(np.float32), "bias": np.array([model.bias], np.float32)}
    atomic_write_with(directory / WEIGHTS, lambda p: save_file(tensors, str(p)))
    checksum = hashlib.blake2b((directory / WEIGHTS).read_bytes(), digest_size=12).hexdigest()
    atomic_write_json(directory / CONFIG, {"kind": "general-linear", "checksum": checksum, **meta})
    return checksum


def load_general(directory: Path = SHIPPED) -> tuple[LinearPairModel, dict[str, Any]]:

    directory = Path(directory)
    if not (directory / CONFIG).is_file() or not (directory / WEIGHTS).is_file():
        raise TicketsearchError(f"{directory}: no general reranker here ({CONFIG} + {WEIGHTS})")
    meta = json.loads((directory / CONFIG).read_text("utf-8"))
    if hashlib.blake2b((directory / WEIGHTS).read_bytes(), digest_size=12).hexdigest() != meta.get("checksum"):
        raise TicketsearchError(f"{directory}: {WEIGHTS} does not match {CONFIG} (checksum)")
    t = load_file(str(directory / WEIGHTS))
    return LinearPairModel(t["weights"].astype(np.float64), float(t["bias"][0])), meta


class GeneralReranker:
    """The general model at search time, with the parts of `Reranker` that search and duplicates use."""

    uses_pair = True
    code = False  # no code-term columns (`pair_features.code_agreement`)
    needs_tokens = False  # scores from the pair inputs alone: no token states, no candidate vectors

    def __init__(self, directory: Path = SHIPPED) -> None:
        self.directory = Path(directory)
        self.model, self.meta = load_general(self.directory)
        self.schema = GENERAL_SCHEMA
        self.query_kinds = bool(self.meta.get("query_kinds", False))
        self.checksum: str = self.meta["checksum"]
        cal = self.meta.get("calibration", {"a": 1.0, "b": 0.0})
        self.cal_a, self.cal_b = float(cal["a"]), float(cal["b"])

    @property
    def name(self) -> str:
        return str(self.meta.get("name", "general"))

    def score_pairs(self, pair: np.ndarray) -> np.ndarray:
        return self.model.logits(pair)

    def probability(self, logits: np.ndarray) -> np.ndarray:
        return platt(logits, self.cal_a, self.cal_b)

    def duplicate_threshold(self, precision: float | None = None) -> float | None:
        return stored_threshold(self.meta, precision)
