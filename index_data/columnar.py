"""The columnar fast path of bulk ingest: a clean JSONL file read and validated a column at a time.

`iter_columnar` parses the file in chunks of whole lines with Arrow's JSON reader and checks each column
with vectorised predicates. It only takes files whose every row it can prove valid and whose values need no
conversion that the per-row path (`records.normalize_row`) would do differently; for anything else (a
malformed line, a type it does not handle, a value that would be rejected, flat field columns beside
`fields`, a list with repeated or empty items, ...) it raises NotColumnar, the caller rolls back what it
wrote and runs the per-row path, which reports each bad row by line. So both paths store the same tickets;
the fast one exists for speed only (tests/index_data/test_columnar.py checks that they agree).
"""

from __future__ import annotations

import gzip
import io
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from ticketsearch.requests import MAX_BODY, MAX_FIELDS, MAX_TEXT, MAX_TITLE, MAX_VALUES, VISIBLE

from .records import MAX_ID_LEN, detect_format, id_problem, text_hash, ticket_text
from .schema import CORE_COLUMNS, FieldSpec, Schema
from .store import _ARROW_TYPE

# The date shapes on which Arrow's ISO-8601 cast and `records.parse_datetime` agree: not at the calendar's ends,
# where Python has no year 0 and the row path drops an offset that would leave years 1 to 9999 (Arrow does not)
_DATE = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})?)?$"
_CALENDAR_END = r"^(0000|0001|9999)-"
MIN_ROWS = 1_000  # below this the per-row path is as fast


class NotColumnar(Exception):
    """The file needs the per-row path (the reason is for logs and tests)."""


CHUNK_BYTES = 16 << 20  # the file is parsed and written in pieces of about this size (see ingest)


def read_columnar(path: Path, schema: Schema) -> pa.Table | None:
    """The whole file in the store's column layout (without `row_id`; `_line` instead of `raw_fields`), or
    None when it needs the per-row path. For tests and small tools; ingest streams `iter_columnar`."""
    try:
        return pa.concat_tables(list(iter_columnar(Path(path), schema)))
    except NotColumnar:
        return None


def iter_columnar(path: Path, schema: Schema, chunk_bytes: int | None = None) -> Iterator[pa.Table]:
    """The file's tickets, a chunk of lines at a time, in the store's column layout (without `row_id`, and
    with each row's JSON line as `_line`, from which the store takes the `fields` object).
    Raises NotColumnar (possibly after some chunks) when the file needs the per-row path."""
    if detect_format(path) != "jsonl":
        raise NotColumnar("not JSONL")
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        head = fh.read(chunk_bytes)
        if head.count(b"\n") + 1 < MIN_ROWS and len(head) < chunk_bytes:
            raise NotColumnar("small file")
        while head:
            more = fh.read(chunk_bytes)
            if not more:
                yield _chunk(head, schema)
                return
            cut = head.rfind(b"\n") + 1  # whole lines only; the rest starts the next chunk
            if cut == 0:
                head += more
                continue
            yield _chunk(head[:cut], schema)
            head = head[cut:] + more


def _lines(data: bytes) -> pa.Array:
    """The chunk's non-blank lines as a string array over the chunk's own bytes (no copy per line; Arrow's
    JSON reader has already checked them as UTF-8). Each keeps its newline, which JSON ignores."""
    buf = np.frombuffer(data, np.uint8)
    offsets = np.concatenate([[0], np.flatnonzero(buf == 10) + 1, [len(data)]]).astype(np.int32)
    offsets = np.unique(offsets)  # a chunk ending in a newline has no empty last line
    lines = pa.StringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(data))
    return lines.filter(pc.not_equal(pc.utf8_trim_whitespace(lines), ""))


def _chunk(data: bytes, schema: Schema) -> pa.Table:
    try:
        table = pajson.read_json(
            io.BytesIO(data),
            parse_options=pajson.ParseOptions(
                explicit_schema=pa.schema([("title", pa.string()), ("body", pa.string()), ("created", pa.string())]),
                unexpected_field_behavior="infer",
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, UnicodeDecodeError) as exc:
        raise NotColumnar(f"arrow: {exc}") from None
    lines = _lines(data)
    if table.num_rows != len(lines) or not len(lines):
        raise NotColumnar("row count")
    return _columns(table, schema).append_column("_line", lines)


def _columns(table: pa.Table, schema: Schema) -> pa.Table:
    extra = set(table.column_names) - CORE_COLUMNS
    if "updated" in table.column_names:
        raise NotColumnar("versioned rows")  # a version is compared with the stored one row by row
    if extra:
        raise NotColumnar(f"flat field columns {sorted(extra)}")  # merging them with `fields` is per-row work
    n = table.num_rows

    ids = _ids(table.column("id") if "id" in table.column_names else None, n)
    title = _text(table.column("title"))
    body = _text(table.column("body"))
    titles = title.to_pylist()
    visible = re.compile(VISIBLE)  # the row path's own rule (requests.TicketIn), not a look-alike in RE2
    if not all(visible.search(t) for t in titles):
        raise NotColumnar("a row with no title")  # the row path names it
    if pc.max(pc.utf8_length(title)).as_py() > MAX_TITLE or pc.max(pc.utf8_length(body)).as_py() > MAX_BODY:
        raise NotColumnar("a title or body over its limit")
    created = _dates(table.column("created"), required=True)
    dup = _duplicate_of(table.column("duplicate_of") if "duplicate_of" in table.column_names else None, ids, n)

    fields = table.column("fields") if "fields" in table.column_names else None
    if fields is not None and pa.types.is_null(fields.type):
        fields = None
    if fields is not None and not pa.types.is_struct(fields.type):
        raise NotColumnar("fields is not an object")
    if fields is not None:
        _kept_columns(fields, schema)
    out: dict[str, pa.Array | pa.ChunkedArray] = {
        "id": ids, "title": title, "body": body, "created": created, "duplicate_of": dup,
    }
    out["text_hash"] = _text_hashes(schema, titles, body.to_pylist())
    for spec in schema.fields:
        column = None
        if fields is not None and fields.type.get_field_index(spec.source) >= 0:
            column = pc.struct_field(fields, spec.source)
        if column is None and spec.source == "created":
            out[spec.column] = created if spec.kind == "date" else pa.nulls(n, pa.string())
            continue
        out[spec.column] = _field(spec, column, n)
    return pa.table(out)


def _kept_columns(fields: pa.ChunkedArray, schema: Schema) -> None:
    """The per-row rule's checks on the `fields` object as a whole: every key a field or a kept column, at most
    MAX_FIELDS of them, kept columns plain values within their limits (requests.TicketIn)."""
    names = [fields.type.field(i).name for i in range(fields.type.num_fields)]
    unknown = set(names) - schema.input_set
    if unknown or len(names) > MAX_FIELDS:  # (a name the schema has is short enough: `schema._parse`)
        raise NotColumnar(f"fields {sorted(unknown)[:3]} or too many")
    sources = {f.source for f in schema.fields} | {f.name for f in schema.fields}
    for name in names:
        if name in sources:
            continue  # a schema field: `_field` checks it
        col = pc.struct_field(fields, name)
        t = col.type
        items = t.value_type if pa.types.is_list(t) else t
        if pa.types.is_list(t) and col.null_count:
            raise NotColumnar(f"{name}: a null list")  # null is fine per row; kept simple here
        if not (pa.types.is_string(items) or pa.types.is_integer(items) or pa.types.is_floating(items)
                or pa.types.is_null(items)):
            raise NotColumnar(f"{name}: {t}")
        if pa.types.is_list(t) and len(col) and (pc.max(pc.list_value_length(col)).as_py() or 0) > MAX_VALUES:
            raise NotColumnar(f"{name}: a long list")
        flat = pc.list_flatten(col) if pa.types.is_list(t) else col
        if pa.types.is_list(t) and flat.null_count:
            raise NotColumnar(f"{name}: a null in a list")  # the row path refuses it (requests.KeptValue)
        if pa.types.is_string(items) and len(flat) and (pc.max(pc.utf8_length(flat)).as_py() or 0) > MAX_TEXT:
            raise NotColumnar(f"{name}: a long value")
        if pa.types.is_floating(items) and not pc.all(pc.fill_null(pc.is_finite(flat), True)).as_py():
            raise NotColumnar(f"{name}: NaN or Infinity")


def _ids(col: pa.ChunkedArray | None, n: int) -> pa.ChunkedArray:
    if col is None or col.null_count:
        raise NotColumnar("missing id")
    if pa.types.is_integer(col.type):
        col = pc.cast(col, pa.string())
    elif not pa.types.is_string(col.type):
        raise NotColumnar(f"id of type {col.type}")
    lengths = pc.utf8_length(col)
    if pc.any(pc.equal(lengths, 0)).as_py() or pc.max(lengths).as_py() > MAX_ID_LEN:
        raise NotColumnar("an empty or long id")
    _id_rule(col, "an id")
    return col


def _id_rule(col: pa.ChunkedArray | pa.Array, what: str) -> None:
    """The row path's own id rule (`requests.id_problem`, after the strip a file's ids get), value by value: an
    id it would refuse or change is the row path's to name."""
    for v in col.to_pylist():
        if v is not None and (v != v.strip() or id_problem(v)):
            raise NotColumnar(f"{what} the row path refuses or strips: {v[:40]!r}")


def _text(col: pa.ChunkedArray) -> pa.ChunkedArray:
    if not (pa.types.is_string(col.type) or pa.types.is_null(col.type)):
        raise NotColumnar(f"text of type {col.type}")
    return pc.fill_null(pc.cast(col, pa.string()), "")


def _dates(col: pa.ChunkedArray | pa.Array, required: bool) -> pa.ChunkedArray | pa.Array:
    """ISO-8601 strings -> naive UTC timestamps, as `records.parse_datetime` gives them."""
    if pa.types.is_null(col.type):
        if required:
            raise NotColumnar("no dates")
        return pa.nulls(len(col), pa.timestamp("us"))
    if not pa.types.is_string(col.type):
        raise NotColumnar(f"dates of type {col.type}")
    if required and col.null_count:
        raise NotColumnar("a missing date")
    ok = pc.and_(pc.match_substring_regex(col, _DATE), pc.invert(pc.match_substring_regex(col, _CALENDAR_END)))
    if not pc.all(pc.fill_null(ok, True)).as_py():
        raise NotColumnar("a date in another shape, or at the calendar's ends")
    # Z / offsets -> UTC; strings without an offset are taken as UTC, like parse_datetime
    with_zone = pc.match_substring_regex(col, r"(Z|[+-]\d{2}:\d{2})$")
    try:
        zoned = pc.cast(pc.if_else(with_zone, col, None), pa.timestamp("us", tz="UTC"))
        plain = pc.cast(pc.if_else(with_zone, None, col), pa.timestamp("us"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise NotColumnar(f"date cast: {exc}") from None
    out = pc.if_else(with_zone, pc.cast(zoned, pa.timestamp("us")), plain)
    if out.null_count != col.null_count:
        raise NotColumnar("a date that did not parse")
    return out


def _duplicate_of(col: pa.ChunkedArray | None, ids: pa.ChunkedArray, n: int) -> pa.ChunkedArray | pa.Array:
    if col is None or pa.types.is_null(col.type):
        return pa.nulls(n, pa.string())
    if pa.types.is_integer(col.type):
        col = pc.cast(col, pa.string())
    elif not pa.types.is_string(col.type):
        raise NotColumnar(f"duplicate_of of type {col.type}")
    col = pc.if_else(pc.equal(col, ""), None, col)
    _id_rule(col, "a duplicate_of")
    if pc.any(pc.fill_null(pc.equal(col, ids), False)).as_py():
        raise NotColumnar("a ticket marked a duplicate of itself")
    return col


def _text_hashes(schema: Schema, titles: list[str], bodies: list[str]) -> pa.Array:
    return pa.array([text_hash(ticket_text(schema, t, b)) for t, b in zip(titles, bodies)], pa.string())


def _field(spec: FieldSpec, col: pa.Array | None, n: int) -> pa.Array:
    target = _ARROW_TYPE[spec.kind]
    if col is None or pa.types.is_null(col.type):
        return pa.nulls(n, target)
    if spec.kind == "categorical":
        if not pa.types.is_string(col.type):
            raise NotColumnar(f"{spec.name}: {col.type}")  # numbers become strings per row (str(value))
        if (pc.max(pc.utf8_length(col)).as_py() or 0) > MAX_TITLE:
            raise NotColumnar(f"{spec.name}: a long value")
        blank = pc.equal(pc.utf8_trim_whitespace(col), "")
        return pc.if_else(pc.fill_null(blank, False), None, col)
    if spec.kind == "numeric":
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
            raise NotColumnar(f"{spec.name}: {col.type}")
        values = pc.cast(col, pa.float64())
        if spec.transform == "log1p" and pc.any(pc.fill_null(pc.less(values, 0), False)).as_py():
            raise NotColumnar(f"{spec.name}: a negative value")
        return values
    if spec.kind == "multi":
        value_type = col.type.value_type if pa.types.is_list(col.type) else None
        if value_type is None or not (pa.types.is_string(value_type) or pa.types.is_null(value_type)):
            raise NotColumnar(f"{spec.name}: {col.type}")
        lists = col.to_pylist()
        for items in lists:
            if items and (None in items or "" in items or len(set(items)) != len(items) or len(items) > MAX_VALUES
                          or max(len(x) for x in items) > MAX_TITLE):
                raise NotColumnar(f"{spec.name}: a list with empty, repeated or long items, or too many")
        return pa.array(lists, target)
    return _dates(col, required=False)
