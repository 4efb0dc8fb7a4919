"""Linear rerankers: a logistic regression on a pair's inputs (`pair_features`), nothing else.

- The general reranker, for a collection with too few duplicate links to train its own: the pair inputs every
  schema has (the first-stage scores and the time gap: `pair_features.KIND_COLUMNS`, computed under
  `GENERAL_SCHEMA`, which has no fields), trained on the shared JIRA data and shipped with the package
  (`general_model/`: config.json + model.safetensors).
- An index's own linear variant (`rerank-linear`): the same regression on its schema's pair inputs (field
  agreement and, with `code`, the code terms' agreement too), trained on its own links in seconds.

On hadoop and hive this linear part carries the trained fusion model's gain (docs/RESULTS.md); it needs no token
states and no candidate vectors, so it reranks any index as it stands.
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
from .pair_features import check_pair_width

GENERAL_SCHEMA = Schema(name="general", text_fields=("title", "body"), fields=())
SHIPPED = Path(__file__).parent / "general_model"
CONFIG, WEIGHTS = "config.json", "model.safetensors"
GENERAL_KIND, LINEAR_KIND = "general-linear", "linear"  # config kinds: the shipped model, an index's own
LINEAR_KINDS = (GENERAL_KIND, LINEAR_KIND)


@dataclass
class LinearPairModel:
    weights: np.ndarray  # [pair_dim(GENERAL_SCHEMA)]
    bias: float

    def logits(self, pair: np.ndarray) -> np.ndarray:
        return np.asarray(pair, np.float64) @ self.weights.astype(np.float64) + self.bias


def save_general(directory: Path, model: LinearPairModel, meta: dict[str, Any], kind: str = GENERAL_KIND) -> str:
    """Weights (safetensors, float32), then the config naming their checksum and `kind` (`LINEAR_KINDS`).
    Returns the checksum."""

    directory = Path(directory)
    tensors = {"weights": model.weights.astype(np.float32), "bias": np.array([model.bias], np.float32)}
    atomic_write_with(directory / WEIGHTS, lambda p: save_file(tensors, str(p)))
    checksum = hashlib.blake2b((directory / WEIGHTS).read_bytes(), digest_size=12).hexdigest()
    atomic_write_json(directory / CONFIG, {"kind": kind, "checksum": checksum, **meta})
    return checksum


def is_linear(directory: Path) -> bool:
    """Whether the reranker saved in `directory` is a linear one (`LINEAR_KINDS`), from its config alone."""
    try:
        return json.loads((Path(directory) / CONFIG).read_text("utf-8")).get("kind") in LINEAR_KINDS
    except (OSError, ValueError):
        return False


def load_general(directory: Path = SHIPPED) -> tuple[LinearPairModel, dict[str, Any]]:
    """A linear reranker's weights and config (the shipped general model by default)."""

    directory = Path(directory)
    if not (directory / CONFIG).is_file() or not (directory / WEIGHTS).is_file():
        raise TicketsearchError(f"{directory}: no linear reranker here ({CONFIG} + {WEIGHTS})")
    meta = json.loads((directory / CONFIG).read_text("utf-8"))
    if meta.get("kind") not in LINEAR_KINDS:
        raise TicketsearchError(f"{directory}: not a linear reranker (kind {meta.get('kind')!r})")
    if hashlib.blake2b((directory / WEIGHTS).read_bytes(), digest_size=12).hexdigest() != meta.get("checksum"):
        raise TicketsearchError(f"{directory}: {WEIGHTS} does not match {CONFIG} (checksum)")
    t = load_file(str(directory / WEIGHTS))
    return LinearPairModel(t["weights"].astype(np.float64), float(t["bias"][0])), meta


class LinearReranker:
    """A linear reranker at search time, with the parts of `Reranker` that search and duplicates use: its pair
    inputs laid out by its config (schema, query kinds, code columns; the general model's: `GENERAL_SCHEMA`)."""

    uses_pair = True
    needs_tokens = False  # scores from the pair inputs alone: no token states, no candidate vectors

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.model, self.meta = load_general(self.directory)
        self.schema = (Schema.from_dict(self.meta["schema"], str(self.directory / CONFIG)) if "schema" in self.meta
                       else GENERAL_SCHEMA)
        self.query_kinds = bool(self.meta.get("query_kinds", False))
        self.code = bool(self.meta.get("code", False))  # pair inputs end with the code terms' agreement
        self.text = bool(self.meta.get("text", False))  # and have the text columns before it
        check_pair_width(self.directory, len(self.model.weights), self.schema, self.query_kinds, self.code,
                         self.text)
        self.checksum: str = self.meta["checksum"]
        cal = self.meta.get("calibration", {"a": 1.0, "b": 0.0})
        self.cal_a, self.cal_b = float(cal["a"]), float(cal["b"])

    @property
    def name(self) -> str:
        return str(self.meta.get("name", "general"))

    def score_pairs(self, pair: np.ndarray) -> np.ndarray:
        """Logits of a query's candidates from their pair inputs [N, pair_dim]."""
        return self.model.logits(pair)

    def probability(self, logits: np.ndarray) -> np.ndarray:
        return platt(logits, self.cal_a, self.cal_b)

    def duplicate_threshold(self, precision: float | None = None) -> float | None:
        return stored_threshold(self.meta, precision)


class GeneralReranker(LinearReranker):
    """The shipped general model (or another general model's directory)."""

    def __init__(self, directory: Path = SHIPPED) -> None:
        super().__init__(directory)
