"""Read ticket files (JSONL, optionally gzipped; CSV; Parquet) and validate rows against a schema.

Structured fields may be nested under `fields` (the shared data's format) or be flat columns.
Every malformed row becomes a RowError naming its line and the reason.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ticketsearch.errors import IngestError, RowError

from .schema import CORE_COLUMNS, FieldSpec, Schema

# The one rule for a ticket id, in files and over HTTP (service/schemas.py takes both from here): 1 to
# MAX_ID_LEN characters, none of them a control character (Unicode Cc: U+0000-U+001F, U+007F-U+009F), and no
# whitespace at either end (files strip it first). Anything else is fine: '/', '#', '?', '%', inner spaces,
# any script. CONTROL_CHARS reads the same in Python's re, Rust's regex (pydantic) and RE2 (Arrow).
MAX_ID_LEN = 256
CONTROL_CHARS = r"\x00-\x1f\x7f-\x9f"
ID_PATTERN = rf"^[^\s{CONTROL_CHARS}](?:[^{CONTROL_CHARS}]*[^\s{CONTROL_CHARS}])?$"
_ID = re.compile(ID_PATTERN)


SELF_DUPLICATE = "duplicate_of points at the ticket itself"


def id_problem(tid: str) -> str | None:
    """Why `tid` is not a ticket id (see ID_PATTERN), or None."""
    if not tid:
        return "empty id"
    if len(tid) > MAX_ID_LEN:
        return f"id longer than {MAX_ID_LEN} characters"
    if _ID.fullmatch(tid) is None:
        return "an id must not hold control characters or start or end with whitespace"
    return None


@dataclass
class Ticket:
    id: str
    title: str
    body: str
    created: datetime  # naive UTC
    duplicate_of: str | None = None
    values: dict[str, Any] = field(default_factory=dict)  # schema field name -> typed value (or None)
    raw_fields: dict[str, Any] = field(default_factory=dict)  # everything given, kept verbatim

    def text(self, schema: Schema) -> str:
        return ticket_text(schema, self.title, self.body)


def ticket_text(schema: Schema, title: str, body: str) -> str:
    """The text that the encoder and BM25 see: the schema's text fields joined by a newline."""
    if schema.text_fields == ("title", "body"):  # the usual layout, spelled out (bulk ingest calls this per row)
        title, body = title or "", body or ""
        return (title + "\n" + body).strip() if title and body else (title or body).strip()
    parts = {"title": title or "", "body": body or ""}
    return "\n".join(parts[f] for f in schema.text_fields if parts[f]).strip()


def text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def parse_datetime(value: Any) -> datetime:
    """Parse ISO-8601 (date or date-time, with or without offset) to naive UTC."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str) and value.strip():
        s = value.strip()
        if s.endswith("Z"):
            s = s[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(s)
        except ValueError as exc:
            raise ValueError(f"not an ISO-8601 date: {value!r}") from exc
    else:
        raise ValueError(f"not an ISO-8601 date: {value!r}")
    return naive_utc(dt)


def naive_utc(dt: datetime) -> datetime:
    """A datetime as naive UTC; at the ends of the calendar, where UTC would overflow, the offset is dropped."""
    if dt.tzinfo is None:
        return dt
    try:
        return dt.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:
        return dt.replace(tzinfo=None)


def coerce_value(spec: FieldSpec, value: Any) -> Any:
    """Convert one raw value to the field's type. Raises ValueError naming the problem."""
    if value is None or (isinstance(value, str) and value.strip() == "" and spec.kind != "multi"):
        return None
    if spec.kind == "categorical":
        if isinstance(value, bool) or isinstance(value, (list, dict)):
            raise ValueError(f"field {spec.name!r} must be a single value, got {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"field {spec.name!r} must be finite")
        return str(value)
    if spec.kind == "multi":
        if isinstance(value, str):
            s = value.strip()
            if not s:
                return []
            if s.startswith("["):
                try:
                    value = json.loads(s)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"field {spec.name!r}: invalid JSON list") from exc
            else:
                value = [p.strip() for p in s.split(";")]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"field {spec.name!r} must be a list, got {type(value).__name__}")
        out: list[str] = []
        for v in value:
            if isinstance(v, (list, dict, bool)) or v is None:
                raise ValueError(f"field {spec.name!r} must hold plain values")
            sv = str(v)
            if sv and sv not in out:
                out.append(sv)
        return out
    if spec.kind == "numeric":
        if isinstance(value, bool):
            raise ValueError(f"field {spec.name!r} must be a number, got a boolean")
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError as exc:
                raise ValueError(f"field {spec.name!r} must be a number, got {value!r}") from exc
        if not isinstance(value, (int, float)):
            raise ValueError(f"field {spec.name!r} must be a number, got {type(value).__name__}")
        f = float(value)
        if not math.isfinite(f):
            raise ValueError(f"field {spec.name!r} must be finite, got {value!r}")
        if spec.transform == "log1p" and f < 0:
            raise ValueError(f"field {spec.name!r} must be >= 0 (log1p), got {f}")
        return f
    # date
    try:
        return parse_datetime(value)
    except ValueError as exc:
        raise ValueError(f"field {spec.name!r}: {exc}") from exc


def normalize_row(schema: Schema, raw: Any, line: int) -> Ticket:
    """Validate one raw record and return a Ticket. Raises RowError."""
    if not isinstance(raw, dict):
        raise RowError(line, f"expected an object, got {type(raw).__name__}")
    rid = raw.get("id")
    if isinstance(rid, bool) or rid is None or (isinstance(rid, str) and not rid.strip()):
        raise RowError(line, "missing id")
    if not isinstance(rid, (str, int)):
        raise RowError(line, f"id must be a string, got {type(rid).__name__}")
    tid = str(rid).strip()
    problem = id_problem(tid)
    if problem:
        raise RowError(line, problem)
    title = raw.get("title")
    body = raw.get("body")
    for name, val in (("title", title), ("body", body)):
        if val is not None and not isinstance(val, str):
            raise RowError(line, f"{name} must be a string, got {type(val).__name__}", tid)
    title = title or ""
    body = body or ""
    if not (title.strip() or body.strip()):
        raise RowError(line, "title and body are both empty", tid)
    if raw.get("created") in (None, ""):
        raise RowError(line, "missing created date", tid)
    try:
        created = parse_datetime(raw["created"])
    except ValueError as exc:
        raise RowError(line, f"created: {exc}", tid) from None
    dup = raw.get("duplicate_of")
    if dup is not None and not isinstance(dup, (str, int)) or isinstance(dup, bool):
        raise RowError(line, "duplicate_of must be a ticket id or null", tid)
    dup = str(dup).strip() if dup not in (None, "") else None
    if dup is not None and id_problem(dup):
        raise RowError(line, f"duplicate_of: {id_problem(dup)}", tid)
    if dup == tid:
        raise RowError(line, SELF_DUPLICATE, tid)

    nested = raw.get("fields")
    if nested is not None and not isinstance(nested, dict):
        raise RowError(line, "fields must be an object", tid)
    flat = {k: v for k, v in raw.items() if k not in CORE_COLUMNS}
    merged: dict[str, Any] = {**flat, **(nested or {})}
    values: dict[str, Any] = {}
    for spec in schema.fields:
        if spec.source == "created" and spec.source not in merged:
            values[spec.name] = created if spec.kind == "date" else None
            continue
        try:
            values[spec.name] = coerce_value(spec, merged.get(spec.source))
        except ValueError as exc:
            raise RowError(line, str(exc), tid) from None
    return Ticket(
        id=tid, title=title, body=body, created=created, duplicate_of=dup, values=values, raw_fields=merged
    )


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8", newline="")


def detect_format(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".parquet"):
        return "parquet"
    raise IngestError(f"{path}: unknown file type (expected .jsonl[.gz], .csv[.gz] or .parquet)")


def json_line(n: int, line: str) -> Any:
    """One JSON Lines line's record (None for a blank line; a RowError, as the record, for invalid JSON)."""
    if not line.strip():
        return None
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        return RowError(n, f"invalid JSON: {exc.msg}")


def csv_records(fh: Any) -> Iterator[tuple[int, Any]]:
    """(data row number + 1, record) for each CSV row of an open text file; "" reads as None."""
    reader = csv.DictReader(fh)
    for n, row in enumerate(reader, start=2):  # line 1 is the header
        if None in row:
            yield n, RowError(n, "more values than header columns")
            continue
        yield n, {k: (v if v != "" else None) for k, v in row.items()}


def iter_raw(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (line number, raw record). A line that is not valid JSON yields a RowError as the record."""
    path = Path(path)
    if not path.is_file():
        raise IngestError(f"{path}: no such file")
    fmt = detect_format(path)
    if fmt == "jsonl":
        with _open_text(path) as fh:
            for n, line in enumerate(fh, start=1):
                rec = json_line(n, line)
                if rec is not None:
                    yield n, rec
    elif fmt == "csv":
        with _open_text(path) as fh:
            yield from csv_records(fh)
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        n = 0
        for batch in table.to_batches(max_chunksize=10_000):
            for rec in batch.to_pylist():
                n += 1
                yield n, rec


def read_tickets(path: Path, schema: Schema) -> Iterator[Ticket | RowError]:
    """Yield a Ticket for each valid row and a RowError for each malformed one."""
    for line, raw in iter_raw(path):
        if isinstance(raw, RowError):
            yield raw
            continue
        try:
            yield normalize_row(schema, raw, line)
        except RowError as err:
            yield err
