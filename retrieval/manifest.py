"""The index manifest: what an index directory holds and how it was built. Written atomically."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ticketsearch.atomic import atomic_write_json
from ticketsearch.errors import TicketsearchError
from ticketsearch.index_dir import IndexDir

FORMAT_VERSION = 1
# `model` of an index whose encoder was tuned on its own links (`ticketsearch tune-encoder`): the
# sentence-transformers directory inside the index (`IndexDir.encoder_path`), wherever the index is moved.
# A loaded manifest holds that directory's path, so that every caller opens it as any local model.
TUNED_MODEL = "index:encoder"


def default_fusion() -> dict[str, Any]:
    """Reciprocal rank fusion of dense, BM25, title-dense and recency rankings.

    The weights were chosen on the validation period (2015) of the shared Hadoop file
    (`scripts/ablate_first_stage.py`); `ticketsearch experiment` re-tunes them on each labelled file.
    """
    return {"method": "rrf", "k": 10.0, "weights": {"dense": 1.0, "bm25": 1.0, "title": 0.75, "recency": 0.3}}


@dataclass
class Manifest:
    model: str  # 'minilm' or a model directory path, as given
    model_name: str
    model_key: str
    dim: int
    max_seq_length: int
    schema: str
    index_kind: str
    counts: dict[str, int]
    change_seq: int
    built_at: str
    format_version: int = FORMAT_VERSION
    fusion: dict[str, Any] = field(default_factory=default_fusion)
    extra: dict[str, Any] = field(default_factory=dict)

    def save(self, index_dir: Path) -> None:
        data = asdict(self)
        if self.model == str(IndexDir(index_dir).encoder_path):
            data["model"] = TUNED_MODEL
        atomic_write_json(IndexDir(index_dir).manifest_path, data)

    @property
    def tuned(self) -> bool:
        """The index searches with an encoder tuned on its own links."""
        return "tuned_from" in self.extra

    @classmethod
    def load(cls, index_dir: Path) -> Manifest:
        path = IndexDir(index_dir).manifest_path
        if not path.is_file():
            raise TicketsearchError(f"{index_dir}: not an index directory (no {path.relative_to(index_dir)})")
        try:
            data = json.loads(path.read_text("utf-8"))
        except json.JSONDecodeError as exc:
            raise TicketsearchError(f"{path}: corrupt manifest ({exc.msg})") from None
        if data.get("format_version") != FORMAT_VERSION:
            raise TicketsearchError(
                f"{path}: format version {data.get('format_version')} is not supported (expected {FORMAT_VERSION})"
            )
        known = set(cls.__dataclass_fields__)
        if data.get("model") == TUNED_MODEL:
            data["model"] = str(IndexDir(index_dir).encoder_path)
        return cls(**{k: v for k, v in data.items() if k in known})
