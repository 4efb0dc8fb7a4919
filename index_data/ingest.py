"""Load a ticket file into the store: validate every row, then write the valid ones in one transaction."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from .columnar import read_columnar
from .errors import IngestError, RowError
from .records import Ticket, read_tickets
from .store import TicketStore

OnError = Literal["skip", "stop"]


@dataclass
class IngestReport:
    rows_read: int = 0
    inserted: int = 0
    updated: int = 0
    errors: list[RowError] = field(default_factory=list)
    seconds: float = 0.0
    change_seq: int = 0

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0


def ingest_file(
    store: TicketStore, path: Path, on_error: OnError = "skip", progress: bool = True, columnar: bool = True
) -> IngestReport:
    """Validate `path` against the store's schema and upsert its valid rows.

    With on_error="stop" the first malformed row aborts the ingest before anything is written.
    With "skip" malformed rows are reported and the rest are written. The write is one transaction.
    A clean JSONL file of at least `columnar.MIN_ROWS` rows takes the columnar fast path (same result);
    anything it cannot prove valid goes through the per-row path, which names each bad row.
    """
    path = Path(path)
    if not path.is_file():
        raise IngestError(f"{path}: no such file")
    report = IngestReport()
    start = time.perf_counter()
    # a clean bulk JSONL file, a column at a time; None: the per-row path (`columnar=False` forces it)
    table = read_columnar(path, store.schema) if columnar else None
    if table is not None:
        with tqdm(total=table.num_rows, desc="read", unit=" rows", disable=not progress) as bar:
            bar.update(table.num_rows)
        report.rows_read = table.num_rows
        res = store.upsert_table(table)
        report.inserted, report.updated, report.change_seq = res.inserted, res.updated, res.change_seq
        report.seconds = time.perf_counter() - start
        return report
    good: list[Ticket] = []
    with tqdm(desc="read", unit=" rows", disable=not progress, mininterval=0.5) as bar:
        for item in read_tickets(path, store.schema):
            report.rows_read += 1
            bar.update(1)
            if isinstance(item, RowError):
                if on_error == "stop":
                    raise IngestError(f"{path}: {item} (nothing was written)")
                report.errors.append(item)
            else:
                good.append(item)
    res = store.upsert(good)
    report.inserted, report.updated, report.change_seq = res.inserted, res.updated, res.change_seq
    report.seconds = time.perf_counter() - start
    return report
