"""Load a ticket file into the store: validate every row, then write the valid ones in one transaction."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pyarrow as pa
from tqdm import tqdm

from ticketsearch.errors import IngestError, RowError

from .columnar import NotColumnar, iter_columnar
from .ray_read import read_on_ray
from .records import Ticket, read_tickets
from .store import TicketStore
from .trackers import TRACKERS, read_tracker

OnError = Literal["skip", "stop"]


@dataclass
class IngestReport:
    rows_read: int = 0
    inserted: int = 0
    updated: int = 0
    errors: list[RowError] = field(default_factory=list)
    seconds: float = 0.0
    change_seq: int = 0
    repeated_ids: list[str] = field(default_factory=list)  # ids given by more than one row (the last row wins)
    stale: list[str] = field(default_factory=list)  # ids left as stored: their stored version is as new or newer

    @property
    def written(self) -> int:
        """Rows that were valid and written (a repeated id's rows each count)."""
        return self.rows_read - len(self.errors)

    @property
    def repeats(self) -> int:
        """Rows that replaced an earlier row of the same file (the last of an id wins)."""
        return self.written - self.inserted - self.updated - len(self.stale)

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0


def ingest_file(
    store: TicketStore, path: Path, on_error: OnError = "skip", progress: bool = True, columnar: bool = True,
    fmt: str = "tickets", mapping: Path | None = None, executor: str = "local",
) -> IngestReport:
    """Validate `path` against the store's schema and upsert its valid rows.

    `fmt`: `tickets` (our JSONL, CSV or Parquet) or a tracker export (`jira`, `github`, `zendesk`: a file or a
    folder of pages, `trackers.py`; `mapping` is the Zendesk field mapping).

    With on_error="stop" the first malformed row aborts the ingest before anything is written.
    With "skip" malformed rows are reported and the rest are written. The write is one transaction.
    A clean JSONL file of at least `columnar.MIN_ROWS` rows takes the columnar fast path (same result);
    anything it cannot prove valid goes through the per-row path, which names each bad row.
    `executor="ray"` reads and validates on Ray (`ray_read.read_on_ray`, Ray initialised by the caller): the
    same rows and errors; the store is written here.
    """
    path = Path(path)
    tracker = fmt in TRACKERS
    if not tracker and not path.is_file():
        raise IngestError(f"{path}: no such file")
    report = IngestReport()
    start = time.perf_counter()
    # a clean bulk JSONL file, a column at a time (None: the per-row path below)
    if columnar and not tracker and executor == "local":
        res = _ingest_columnar(store, path, progress)
        if res is not None:
            report.rows_read, report.inserted, report.updated, report.change_seq = res
            report.seconds = time.perf_counter() - start
            return report
    good: list[Ticket] = []
    with tqdm(desc="read", unit=" rows", disable=not progress, mininterval=0.5) as bar:
        if executor == "ray":

            items: Iterator[Ticket | RowError] = read_on_ray(path, store.schema, fmt, mapping)
        else:
            items = read_tracker(path, fmt, store.schema, mapping) if tracker else read_tickets(path, store.schema)
        for item in items:
            report.rows_read += 1
            bar.update(1)
            if isinstance(item, RowError):
                if on_error == "stop":
                    raise IngestError(f"{path}: {item} (nothing was written)")
                report.errors.append(item)
            else:
                good.append(item)
    upserted = store.upsert(good)
    report.inserted, report.updated, report.change_seq = upserted.inserted, upserted.updated, upserted.change_seq
    report.repeated_ids, report.stale = upserted.repeated, upserted.stale
    report.seconds = time.perf_counter() - start
    return report


def _ingest_columnar(store: TicketStore, path: Path, progress: bool) -> tuple[int, int, int, int] | None:
    """The fast path: one thread parses, validates and hashes chunk after chunk (Arrow, the GIL) while this
    one writes the previous chunk into DuckDB (which releases the GIL), all in one transaction. Returns
    (rows read, inserted, updated, change seq), or None, with nothing written, when the file needs the
    per-row path."""
    chunks: queue.Queue = queue.Queue(maxsize=2)
    rows = 0
    stop = threading.Event()

    def produce() -> None:
        try:
            for table in iter_columnar(path, store.schema):
                if stop.is_set():
                    return
                chunks.put(table)
            chunks.put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the writer, which rolls back
            chunks.put(exc)

    def consume() -> Iterator[pa.Table]:
        nonlocal rows
        with tqdm(desc="ingest", unit=" rows", disable=not progress, mininterval=0.5) as bar:
            while (item := chunks.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                rows += item.num_rows
                bar.update(item.num_rows)
                yield item

    worker = threading.Thread(target=produce, name="ingest-reader", daemon=True)
    worker.start()
    try:
        res = store.upsert_tables(consume())
    except NotColumnar:
        return None
    finally:
        stop.set()
        while worker.is_alive():  # unblock a reader waiting on a full queue
            try:
                chunks.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.05)
    return rows, res.inserted, res.updated, res.change_seq
