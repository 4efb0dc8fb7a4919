"""Ticket schemas: which text fields are encoded and which structured fields become features.

A schema is a TOML file. Built-in schemas live in `index_data/schemas/` and are selected by name;
any other value is read as a path.

    name = "jira"
    [text]
    fields = ["title", "body"]
    [[fields]]
    name = "components"        # name used in filters, the API and the store
    kind = "multi"             # categorical | multi | numeric | date
    source = "components"      # key in the ticket's `fields` object or flat column (default: name)
    ...
    keep = ["status", ...]     # (top level) other input columns, kept verbatim with each ticket, never features;
                               # a column that is neither a field nor kept is refused, naming the row
    max_vocab = 500            # categorical/multi: vocabulary cap (rest go to the OOV bucket)
    transform = "log1p"        # numeric only: none | log1p
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import asdict, dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from ticketsearch.errors import SchemaError
from ticketsearch.names import MAX_FIELD_NAME, MAX_FIELDS, is_field_name

# One rule for a schema, from a TOML file (the CLI) or inline (the API's `InlineSchema` states the same limits):
SCHEMA_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
MAX_VOCAB = 100_000  # categories a field's embedding keeps (the rest share the out-of-vocabulary bucket)

FieldKind = Literal["categorical", "multi", "numeric", "date"]
KINDS: tuple[str, ...] = ("categorical", "multi", "numeric", "date")

# Fields of the shared JIRA/Bugzilla data that record what happened after filing: they leak the answer.
LEAKY_FIELDS: frozenset[str] = frozenset(
    {
        "status", "resolution", "resolutiondate", "resolved", "updated", "fixversions",
        "target_versions", "hadoop_flags", "flags", "patch_info", "votes", "watchcount", "links",
        "duplicate_of",
    }
)
CORE_COLUMNS: frozenset[str] = frozenset(
    {"id", "title", "body", "created", "updated", "duplicate_of", "fields", "links"})


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: FieldKind
    source: str
    max_vocab: int = 1000
    transform: Literal["none", "log1p"] = "none"

    @property
    def column(self) -> str:
        """Column name in the DuckDB store (prefixed so it never collides with core columns)."""
        return f"f_{self.name}"


@dataclass(frozen=True)
class Schema:
    name: str
    text_fields: tuple[str, ...]
    fields: tuple[FieldSpec, ...] = field(default_factory=tuple)
    keep: tuple[str, ...] = ()  # input columns kept verbatim with each ticket, never features (a tracker's own)

    @cached_property
    def input_names(self) -> tuple[str, ...]:
        """What a ticket's fields may hold: each field's name (and source column, where another), then the kept
        columns (computed once: every row read asks)."""
        names = [f.name for f in self.fields]
        return tuple(names + [f.source for f in self.fields if f.source not in names]
                     + [k for k in self.keep if k not in names])

    @cached_property
    def input_set(self) -> frozenset[str]:
        return frozenset(self.input_names)

    def field(self, name: str) -> FieldSpec:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "text": {"fields": list(self.text_fields)},
            "fields": [asdict(f) for f in self.fields],
            **({"keep": list(self.keep)} if self.keep else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str = "<dict>") -> Schema:
        return _parse(data, origin)


def builtin_schema_names() -> list[str]:
    folder = resources.files("ticketsearch.index_data") / "schemas"
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


def load_schema(name_or_path: str | Path) -> Schema:
    """Load a built-in schema by name, or a TOML schema file by path."""
    text: str
    origin = str(name_or_path)
    if isinstance(name_or_path, str) and name_or_path in builtin_schema_names():
        text = (resources.files("ticketsearch.index_data") / "schemas" / f"{name_or_path}.toml").read_text("utf-8")
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise SchemaError(
                f"schema {origin!r} is neither a built-in schema ({', '.join(builtin_schema_names())}) nor a file"
            )
        text = path.read_text("utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SchemaError(f"schema {origin}: invalid TOML: {exc}") from exc
    return _parse(data, origin)


def _parse(data: dict[str, Any], origin: str) -> Schema:
    name = data.get("name")
    if not isinstance(name, str) or not re.fullmatch(SCHEMA_NAME_PATTERN, name):
        raise SchemaError(f"schema {origin}: 'name' must be 1-63 characters of A-Z, a-z, 0-9, '_', '.' and '-', "
                          "starting with a letter or digit")
    text = data.get("text", {}).get("fields", ["title", "body"])
    if not isinstance(text, list) or not text or not all(t in ("title", "body") for t in text):
        raise SchemaError(f"schema {origin}: text.fields must be a non-empty list drawn from 'title' and 'body'")
    allow_leaky = bool(data.get("allow_leaky_fields", False))
    specs: list[FieldSpec] = []
    seen: set[str] = set()
    given = data.get("fields", [])
    if not isinstance(given, list) or len(given) > MAX_FIELDS:
        raise SchemaError(f"schema {origin}: fields must be a list of at most {MAX_FIELDS} tables")
    for i, raw in enumerate(given):
        where = f"schema {origin}: fields[{i}]"
        if not isinstance(raw, dict):
            raise SchemaError(f"{where}: must be a table")
        unknown = set(raw) - {"name", "kind", "source", "max_vocab", "transform"}
        if unknown:
            raise SchemaError(f"{where}: unknown keys {sorted(unknown)}")
        fname = raw.get("name")
        if not isinstance(fname, str) or not is_field_name(fname):
            raise SchemaError(f"{where}: name must match [a-z][a-z0-9_]*, got {fname!r}")
        if fname in seen:
            raise SchemaError(f"{where}: duplicate field name {fname!r}")
        seen.add(fname)
        kind = raw.get("kind")
        if kind not in KINDS:
            raise SchemaError(f"{where} ({fname}): kind must be one of {', '.join(KINDS)}, got {kind!r}")
        source = raw.get("source", fname)
        if not isinstance(source, str) or not source or len(source) > MAX_FIELD_NAME:
            raise SchemaError(f"{where} ({fname}): source must be a string of 1-{MAX_FIELD_NAME} characters "
                              "(a ticket's fields are named so at every door)")
        if not allow_leaky and (source.lower() in LEAKY_FIELDS or fname.lower() in LEAKY_FIELDS):
            raise SchemaError(
                f"{where}: {source!r} is recorded after filing and leaks the answer; "
                "set allow_leaky_fields = true to use it anyway"
            )
        max_vocab = raw.get("max_vocab", 1000)
        if isinstance(max_vocab, bool) or not isinstance(max_vocab, int) or not 1 <= max_vocab <= MAX_VOCAB:
            raise SchemaError(f"{where} ({fname}): max_vocab must be an integer from 1 to {MAX_VOCAB:,}")
        transform = raw.get("transform", "none")
        if transform not in ("none", "log1p") or (transform != "none" and kind != "numeric"):
            raise SchemaError(f"{where} ({fname}): transform must be 'none' or 'log1p' (numeric fields only)")
        specs.append(FieldSpec(name=fname, kind=kind, source=source, max_vocab=max_vocab, transform=transform))
    keep = data.get("keep", [])
    if (not isinstance(keep, list) or len(keep) > MAX_FIELDS
            or not all(isinstance(k, str) and 0 < len(k) <= MAX_FIELD_NAME for k in keep)):
        raise SchemaError(f"schema {origin}: keep must be a list of at most {MAX_FIELDS} column names of "
                          f"1-{MAX_FIELD_NAME} characters")
    return Schema(name=name, text_fields=tuple(text), fields=tuple(specs), keep=tuple(keep))
