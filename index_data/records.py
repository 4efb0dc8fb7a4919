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
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ticketsearch.errors import IngestError, RequestError, RowError
from ticketsearch.requests import (  # noqa: F401 - the id rule and dates live with the request rules (re-exported)
    CONTROL_CHARS,
    ID_PATTERN,
    MAX_ID_LEN,
    MAX_TITLE,
    SELF_DUPLICATE,
    TicketIn,
    checked_fields,
    id_problem,
    naive_utc,
    parse_datetime,
    unknown_field,
    validated,
    value_problem,
)

from .schema import CORE_COLUMNS, FieldSpec, Schema


@dataclass
class Ticket:
    id: str
    title: str
    body: str
    created: datetime  # naive UTC
    duplicate_of: str | None = None
    updated: datetime | None = None  # its version (naive UTC): the store writes it only over an older one
    values: dict[str, Any] = field(default_factory=dict)  # schema field name -> typed value (or None)
    raw_fields: dict[str, Any] = field(default_factory=dict)  # everything given, kept verbatim

    def text(self, schema: Schema) -> str:
        return ticket_text(schema, self.title, self.body)


def last_of_each(tickets: Iterable[Ticket]) -> tuple[list[Ticket], list[str]]:
    """The one rule for an id given twice in a write: its last occurrence is written (in the place of its first),
    and the ids given more than once are named (`UpsertResult.repeated`)."""
    latest: dict[str, Ticket] = {}
    repeated: dict[str, None] = {}
    for t in tickets:
        if t.id in latest:
            repeated[t.id] = None
        latest[t.id] = t
    return list(latest.values()), list(repeated)


def ticket_text(schema: Schema, title: str, body: str) -> str:
    """The text that the encoder and BM25 see: the schema's text fields joined by a newline."""
    if schema.text_fields == ("title", "body"):  # the usual layout, spelled out (bulk ingest calls this per row)
        title, body = title or "", body or ""
        return (title + "\n" + body).strip() if title and body else (title or body).strip()
    parts = {"title": title or "", "body": body or ""}
    return "\n".join(parts[f] for f in schema.text_fields if parts[f]).strip()


def text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


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


def _number_text_problem(spec: FieldSpec, text: str, problem: str) -> str | None:
    """A numeric field's value spelled as text (a CSV cell): the API's words for the number it spells ("-1" in
    a log1p field: "must be at least 0", as a JSON -1 gets), or `problem` when it spells none."""
    try:
        number = float(text)
    except ValueError:
        return problem
    return value_problem(spec, number, False)


def normalize_row(schema: Schema, raw: Any, line: int, tracker: bool = False) -> Ticket:
    """Validate one incoming ticket and return a Ticket. Raises RowError naming the line (the API: the item).

    The one rule for a ticket at every door (file readers, the API, webhooks): the record is read into
    `requests.TicketIn` (required fields, limits, id rule, dates; the API's messages), then its fields are
    checked against the schema: each key a field's name or source column, or a column the schema keeps
    (`keep`); anything else is refused, never dropped. Files' own leniency is only about spelling: a numeric
    id, spaces around an id, "" for null, flat columns beside `fields`, text values that the field's type reads
    (a number in a CSV cell, "a;b" for a list). `tracker`: the record is a tracker's issue translated by
    `trackers` (an export or a webhook): the tracker's own fields that the schema lacks are not the ticket's and
    are left out, as documented, rather than refused."""
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
    dup = raw.get("duplicate_of")
    if dup is not None and not isinstance(dup, (str, int)) or isinstance(dup, bool):
        raise RowError(line, "duplicate_of must be a ticket id or null", tid)
    dup = str(dup).strip() if dup not in (None, "") else None
    if dup == tid:
        raise RowError(line, SELF_DUPLICATE, tid, field="duplicate_of")
    nested = raw.get("fields")
    if nested is not None and not isinstance(nested, dict):
        raise RowError(line, "fields must be an object", tid)
    merged: dict[str, Any] = {**{k: v for k, v in raw.items() if k not in CORE_COLUMNS}, **(nested or {})}
    allowed = schema.input_set
    if tracker:
        merged = {k: v for k, v in merged.items() if k in allowed}
    data = {"id": tid, "title": raw.get("title"), "body": raw.get("body"), "created": raw.get("created"),
            "updated": raw.get("updated") or None, "duplicate_of": dup, "fields": merged}
    try:
        checked = validated(TicketIn, {k: v for k, v in data.items() if v is not None})
    except RequestError as exc:
        raise RowError(line, f"{exc.field}: {exc.reason}" if exc.field else exc.reason, tid,
                       field=exc.field) from None
    unknown = [k for k in merged if k not in allowed]
    if unknown:
        raise RowError(line, f"fields.{unknown[0]}: {unknown_field(unknown[0], schema.input_names)}", tid,
                       field=f"fields.{unknown[0]}")
    values: dict[str, Any] = {}
    for spec in schema.fields:
        given = merged.get(spec.source, merged.get(spec.name))
        if spec.source == "created" and given is None:
            values[spec.name] = checked.created if spec.kind == "date" else None
            continue
        # the API's rule for the value's type (requests.value_problem); a file's text may spell it (CSV)
        problem = value_problem(spec, given, False)
        if problem is not None and not isinstance(given, str):
            raise RowError(line, f"fields.{spec.name}: {problem}", tid, field=f"fields.{spec.name}")
        if problem is not None and spec.kind == "numeric" and isinstance(given, str):
            problem = _number_text_problem(spec, given, problem)
        try:
            values[spec.name] = value = coerce_value(spec, given)
        except ValueError as exc:
            raise RowError(line, f"fields.{spec.name}: {problem or exc}", tid, field=f"fields.{spec.name}") from None
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, str) and len(v) > MAX_TITLE:
                raise RowError(line, f"fields.{spec.name}: a value is longer than {MAX_TITLE} characters", tid,
                               field=f"fields.{spec.name}")
    return Ticket(id=tid, title=checked.title, body=checked.body, created=checked.created, duplicate_of=dup,
                  values=values, raw_fields=merged, updated=checked.updated)


def sent_ticket(schema: Schema, sent: Mapping[str, Any] | TicketIn, where: str, line: int = 1) -> Ticket:
    """A ticket sent as JSON (the API's `POST .../tickets`, the client's and the library's `upsert`): the JSON
    types `requests.TicketIn` and the OpenAPI document state, strictly (none of a file's leniency: an id is a
    string, fields are nested, each value of its field's JSON type), then the one rule of a ticket
    (`normalize_row`). Raises RequestError naming `where.FIELD`; its type is "conflict" for a ticket marked a
    duplicate of itself (well formed, but in conflict with its own id: the API's 409)."""
    if isinstance(sent, TicketIn):
        t = sent
    elif not isinstance(sent, Mapping):
        raise RequestError(f"expected an object, got {type(sent).__name__}", field=where, type_="model_type")
    else:
        try:
            t = validated(TicketIn, dict(sent))
        except RequestError as exc:
            raise RequestError(exc.reason, f"{where}.{exc.field}" if exc.field else where, exc.type) from None
    checked_fields(schema, {k: v for k, v in t.fields.items() if k in schema.field_names}, f"{where}.fields")
    raw = {"id": t.id, "title": t.title, "body": t.body, "created": t.created.isoformat(),
           "updated": t.updated.isoformat() if t.updated else None, "duplicate_of": t.duplicate_of,
           "fields": t.fields}
    try:
        return normalize_row(schema, raw, line)
    except RowError as exc:
        kind = ("conflict" if exc.reason == SELF_DUPLICATE else
                "unknown_field" if exc.detail.startswith("unknown field") else "value_error")
        raise RequestError(exc.detail, f"{where}.{exc.field}" if exc.field else where, kind) from None


def _open_text(path: Path) -> io.TextIOBase:
    """UTF-8 text; a byte that is not UTF-8 is kept as a lone surrogate (`surrogateescape`), so that the row that
    holds it is refused with its line (`not_utf8`) and the rest of the file reads on."""
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="surrogateescape")
    return open(path, encoding="utf-8", errors="surrogateescape", newline="")


def not_utf8(n: int, text: str) -> RowError | None:
    """A RowError for a line of a file that held a byte UTF-8 does not allow (None: the text is clean)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        byte = ord(text[exc.start]) - 0xDC00
        return RowError(n, f"not UTF-8 text: byte 0x{byte:02x} at character {exc.start + 1} of the line")
    return None


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
    bad = not_utf8(n, line)
    if bad is not None:
        return bad
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
        bad = not_utf8(n, "".join(v or "" for v in row.values()))
        if bad is not None:
            yield n, bad
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
        import pyarrow.parquet as pq  # deferred: pyarrow

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
