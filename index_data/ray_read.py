"""Reading an input as a Ray dataset: `ingest --executor ray` reads and validates on the Ray cluster.

`read_on_ray(path, schema, fmt)` yields what `records.read_tickets` / `trackers.read_tracker` yield for the same
input, in the same order: a `Ticket` for each valid row and a `RowError` (the same line or place, the same
reason) for each malformed one. The parsing and the checks are the local ones (`records.json_line`,
`records.csv_records`, `records.normalize_row`, the tracker readers), run in Ray tasks:

- JSON Lines (`.jsonl[.gz]`): `ray.data.read_text`, each line parsed in `map_batches`;
- CSV: `ray.data.read_binary_files`, each file parsed by Python's csv reader (quoted newlines, exact line
  numbers) in a task;
- Parquet: `ray.data.read_parquet` (split by row groups);
- tracker exports (`jira`, `github`, `zendesk`, a file or a folder of pages): one task per page; Jira's groups
  of duplicates need every issue's links, so its records are gathered first and the masters computed here;

then every record is validated against the schema in `map_batches`. Line numbers come from the order (Ray
Data keeps it here: `preserve_order`), so they are the ones a local ingest reports. The store itself is
written where the build runs (DuckDB has one writer).

Optional: Ray is imported only when called.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ticketsearch.errors import IngestError, RowError

from .records import Ticket, csv_records, detect_format, json_line, normalize_row
from .schema import Schema
from .trackers import TRACKERS, export_files, jira_items, jira_masters, load_mapping, read_github, read_zendesk

BATCH = 512  # records per validation batch


def _objects(values: list[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _parse_json_lines(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"n": np.zeros(len(batch["text"]), np.int64), "where": _objects([None] * len(batch["text"])),
            "raw": _objects([json_line(0, str(line)) for line in batch["text"]])}


def _parse_csv(row: dict[str, Any]) -> list[dict[str, Any]]:
    data = bytes(row["bytes"])
    if str(row["path"]).endswith(".gz"):
        data = gzip.decompress(data)
    with io.StringIO(data.decode("utf-8"), newline="") as fh:
        return [{"n": n, "where": None, "raw": rec} for n, rec in csv_records(fh)]


def _parquet_rows(batch: Any) -> dict[str, np.ndarray]:
    recs = batch.to_pylist()
    return {"n": np.zeros(len(recs), np.int64), "where": _objects([None] * len(recs)), "raw": _objects(recs)}


def _tracker_pages(batch: dict[str, np.ndarray], fmt: str, mapping: dict[str, str]) -> dict[str, np.ndarray]:
    rows: list[tuple[str, Any, list[str]]] = []
    for f in batch["item"]:
        if fmt == "jira":
            rows += list(jira_items(Path(f)))
        else:
            items = read_github(Path(f)) if fmt == "github" else read_zendesk(Path(f), mapping)
            rows += [(w, r, []) for w, r in items]
    return {"n": np.zeros(len(rows), np.int64), "where": _objects([w for w, _, _ in rows]),
            "raw": _objects([r for _, r, _ in rows]), "links": _objects([links for _, _, links in rows])}


def _jira_keys(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What the masters need of each issue: (where, the reader's error or None, id, created, links)."""
    keys = [(w, r, None, None, []) if isinstance(r, RowError) else (w, None, r.get("id"), r.get("created"), list(ls))
            for w, r, ls in zip(batch["where"], batch["raw"], batch["links"])]
    return {name: _objects([k[i] for k in keys]) for i, name in enumerate(("where", "error", "id", "created",
                                                                           "links"))}


def _validate(batch: dict[str, np.ndarray], schema: Schema, masters: dict[str, str],
              tracker: bool = False) -> dict[str, np.ndarray]:
    """Each record as a Ticket or a RowError (`read`: the reader's own error, passed on); line numbers are set
    by `read_on_ray`, from the order."""
    out: list[Any] = []
    read: list[bool] = []
    for raw in batch["raw"]:
        read.append(raw is None or isinstance(raw, RowError))
        if read[-1]:
            out.append(raw)
            continue
        if masters and isinstance(raw, dict):
            raw = {**raw, "duplicate_of": masters.get(str(raw.get("id")))}
        try:
            out.append(normalize_row(schema, raw, 0, tracker=tracker))
        except RowError as err:
            out.append(err)
    return {"n": batch["n"], "where": batch["where"], "item": _objects(out), "read": np.array(read, bool)}


def _dataset(path: Path, fmt: str, mapping: Path | None) -> tuple[Any, int, dict[str, str], list[RowError]]:
    """The records as a Ray dataset (columns n, where, raw), the line number of its first record where the
    order gives it (0: the records carry their own), Jira's masters, and the errors reported first (Jira's
    malformed issues, which the local reader gives before the records)."""
    import ray.data  # deferred: Ray, pyarrow

    if fmt in TRACKERS:
        files = [str(f) for f in export_files(path)]
        read = partial(_tracker_pages, fmt=fmt, mapping=load_mapping(mapping) if fmt == "zendesk" else {})
        pages = ray.data.from_items(files, override_num_blocks=len(files)).map_batches(read, batch_size=1)
        if fmt != "jira":
            return pages.drop_columns(["links"]), 1, {}, []
        pages = pages.materialize()  # read once; the masters need every issue's links first
        keys = pages.map_batches(_jira_keys).take_all()
        first = [k["error"] for k in keys if k["error"] is not None]  # the local reader reports these first
        masters = jira_masters([(k["where"], {"id": k["id"], "created": k["created"]}, list(k["links"]))
                                for k in keys if k["error"] is None])
        return pages.drop_columns(["links"]), len(first) + 1, masters, first
    if not path.is_file():
        raise IngestError(f"{path}: no such file")
    kind = detect_format(path)
    if kind == "jsonl":
        return ray.data.read_text(str(path), drop_empty_lines=False).map_batches(_parse_json_lines), 1, {}, []
    if kind == "csv":
        return ray.data.read_binary_files(str(path), include_paths=True).flat_map(_parse_csv), 0, {}, []
    return ray.data.read_parquet(str(path)).map_batches(_parquet_rows, batch_format="pyarrow"), 1, {}, []


def read_on_ray(path: Path, schema: Schema, fmt: str = "tickets", mapping: Path | None = None,
                ) -> Iterator[Ticket | RowError]:
    """Tickets and RowErrors of `path` as the local readers give them, read and validated on Ray (which must
    be initialised: `ray.init`, or `retrieval.ray_encode.RayEncoding`)."""
    import ray.data  # deferred: Ray, pyarrow

    ctx = ray.data.DataContext.get_current()
    before = (ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.print_on_execution_start)
    ctx.execution_options.preserve_order = True  # line numbers come from the order
    ctx.enable_progress_bars = False  # the ingest's own bar counts rows
    ctx.print_on_execution_start = False
    try:
        ds, first_line, masters, first = _dataset(Path(path), fmt, mapping)
        yield from first
        tracker = fmt in TRACKERS
        out = ds.map_batches(partial(_validate, schema=schema, masters=masters, tracker=tracker),
                             batch_size=BATCH)
        line = first_line
        for row in out.iter_rows():
            n = int(row["n"]) or line  # CSV rows carry theirs; the others count in order (blank lines too)
            line += 1
            item = row["item"]
            if item is None:  # a blank line
                continue
            if not isinstance(item, RowError):
                yield item
            elif row["read"]:  # the reader's: JSON Lines' invalid JSON gets its line here
                if first:  # Jira's, already given
                    line -= 1
                    continue
                yield RowError(n, item.reason, item.ticket_id, field=item.field) if item.line == 0 and not tracker \
                    else item
            else:
                yield RowError(n, item.reason, item.ticket_id, where=row["where"] if tracker else None,
                               field=item.field)
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.print_on_execution_start = before
