"""Feature vectors from structured fields, with vocabularies and statistics learned from the indexed data.

Layout per field (in schema order):
- categorical: one-hot of size 1 + vocab; slot 0 is the out-of-vocabulary bucket; a missing value is all zeros.
- multi: multi-hot of size 1 + vocab, OOV bucket at slot 0.
- numeric: [z-score, missing flag]; z uses mean/std learned from data (after log1p when declared).
- date: [sin/cos hour of day, sin/cos day of week, missing flag].
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from .schema import FieldSpec, Schema


@dataclass
class FieldStats:
    vocab: list[str] | None = None  # categorical / multi
    mean: float = 0.0  # numeric
    std: float = 1.0


def _width(spec: FieldSpec, stats: FieldStats) -> int:
    if spec.kind in ("categorical", "multi"):
        return 1 + len(stats.vocab or [])
    if spec.kind == "numeric":
        return 2
    return 5


class FeatureSpace:
    """Maps a ticket's typed field values to a fixed-width float32 vector."""

    def __init__(self, schema: Schema, stats: dict[str, FieldStats]) -> None:
        self.schema = schema
        self.stats = stats
        self._index: dict[str, dict[str, int]] = {
            name: {v: i + 1 for i, v in enumerate(st.vocab)} for name, st in stats.items() if st.vocab is not None
        }
        self.offsets: dict[str, int] = {}
        off = 0
        for spec in schema.fields:
            self.offsets[spec.name] = off
            off += _width(spec, stats[spec.name])
        self.dim = off

    # ---- learning -------------------------------------------------------------------------------
    @classmethod
    def fit(cls, schema: Schema, rows: Iterable[Mapping[str, Any]]) -> FeatureSpace:
        counters: dict[str, Counter[str]] = {
            f.name: Counter() for f in schema.fields if f.kind in ("categorical", "multi")
        }
        sums: dict[str, list[float]] = {f.name: [0.0, 0.0, 0.0] for f in schema.fields if f.kind == "numeric"}
        for row in rows:
            for spec in schema.fields:
                v = row.get(spec.name)
                if v is None:
                    continue
                if spec.kind == "categorical":
                    counters[spec.name][str(v)] += 1
                elif spec.kind == "multi":
                    counters[spec.name].update(str(x) for x in v)
                elif spec.kind == "numeric":
                    x = _num(spec, v)
                    s = sums[spec.name]
                    s[0] += 1
                    s[1] += x
                    s[2] += x * x
        stats: dict[str, FieldStats] = {}
        for spec in schema.fields:
            if spec.kind in ("categorical", "multi"):
                ranked = sorted(counters[spec.name].items(), key=lambda kv: (-kv[1], kv[0]))
                stats[spec.name] = FieldStats(vocab=[k for k, _ in ranked[: spec.max_vocab]])
            elif spec.kind == "numeric":
                n, s1, s2 = sums[spec.name]
                mean = s1 / n if n else 0.0
                var = max(s2 / n - mean * mean, 0.0) if n else 1.0
                std = math.sqrt(var) if var > 1e-12 else 1.0
                stats[spec.name] = FieldStats(mean=mean, std=std)
            else:
                stats[spec.name] = FieldStats()
        return cls(schema, stats)

    # ---- vectors --------------------------------------------------------------------------------
    def vector(self, values: Mapping[str, Any]) -> np.ndarray:
        out = np.zeros(self.dim, dtype=np.float32)
        self.fill(out, values)
        return out

    def matrix(self, rows: Iterable[Mapping[str, Any]]) -> np.ndarray:
        rows = list(rows)
        out = np.zeros((len(rows), self.dim), dtype=np.float32)
        for i, row in enumerate(rows):
            self.fill(out[i], row)
        return out

    def fill(self, out: np.ndarray, values: Mapping[str, Any]) -> None:
        for spec in self.schema.fields:
            off = self.offsets[spec.name]
            v = values.get(spec.name)
            if spec.kind == "categorical":
                if v is not None:
                    out[off + self._index[spec.name].get(str(v), 0)] = 1.0
            elif spec.kind == "multi":
                for x in v or ():
                    out[off + self._index[spec.name].get(str(x), 0)] = 1.0
            elif spec.kind == "numeric":
                if v is None:
                    out[off + 1] = 1.0
                else:
                    st = self.stats[spec.name]
                    out[off] = float(np.clip((_num(spec, v) - st.mean) / st.std, -10.0, 10.0))
            else:
                if v is None:
                    out[off + 4] = 1.0
                else:
                    dt = v if isinstance(v, datetime) else datetime.fromisoformat(str(v))
                    hour = (dt.hour + dt.minute / 60.0) / 24.0 * 2 * math.pi
                    dow = dt.weekday() / 7.0 * 2 * math.pi
                    out[off : off + 4] = (math.sin(hour), math.cos(hour), math.sin(dow), math.cos(dow))

    def is_oov(self, name: str, value: str) -> bool:
        return str(value) not in self._index.get(name, {})

    # ---- persistence ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema.to_dict(),
            "dim": self.dim,
            "stats": {
                name: {"vocab": st.vocab, "mean": st.mean, "std": st.std} for name, st in self.stats.items()
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpace:
        schema = Schema.from_dict(data["schema"])
        stats = {name: FieldStats(vocab=s["vocab"], mean=s["mean"], std=s["std"]) for name, s in data["stats"].items()}
        return cls(schema, stats)


def _num(spec: FieldSpec, v: Any) -> float:
    x = float(v)
    return math.log1p(max(x, 0.0)) if spec.transform == "log1p" else x
