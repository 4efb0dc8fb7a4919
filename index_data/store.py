"""The DuckDB ticket store: the source of truth for every ticket, its text, typed fields and stable row id.

Row ids are assigned once per ticket id and never reused (FAISS maps to them). Writes are transactional:
an ingest either commits all of its valid rows or nothing.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from ticketsearch.errors import DiskFullError, NotFoundError, QueryError, SchemaError, StoreError, StoreLockedError
from ticketsearch.requests import iso_utc

from .records import Ticket, last_of_each, parse_datetime, text_hash
from .schema import FieldSpec, Schema
from .versions import check_versions

STORE_FORMAT = 1
# Every write logs (change_seq, row_id) in the same transaction, so derived indexes can replay what they missed.
CHANGES_DDL = "CREATE TABLE IF NOT EXISTS changes (seq BIGINT NOT NULL, row_id BIGINT NOT NULL)"
# Fetching search hits by row id: with this index, an IN list of ids is a few lookups instead of a table scan
# (100 hits out of 1M tickets: 8 ms instead of 24 ms, docs/RESULTS.md).
# Fault injection for the disk-full tests where no small filesystem can be mounted (never a user setting):
# while the file this names exists, every commit fails as a full disk makes it fail.
DISK_FULL_ENV = "TICKETSEARCH_TEST_DISK_FULL_FLAG"
ROOM_BYTES = 16 << 20  # after a full disk, writes count as possible again once this much is free
Embeddings = tuple[str, Sequence[str], np.ndarray]  # (model key, text hashes, vectors) for the embedding cache


def disk_full_injected() -> bool:
    """Whether the tests' fault flag (`DISK_FULL_ENV`) says the disk is full now."""
    flag = os.environ.get(DISK_FULL_ENV, "")
    return flag != "" and Path(flag).exists()


def disk_full(exc: BaseException) -> bool:
    """Whether this error is a full disk (DuckDB's I/O error says so in its message; an OSError by errno)."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    return isinstance(exc, duckdb.Error) and "No space left on device" in str(exc)


ROW_ID_INDEX_DDL = "CREATE INDEX IF NOT EXISTS tickets_row_id ON tickets (row_id)"
# Each ticket's version: the `updated` time its last versioned write gave (a tracker's issue `updated`, or the
# API's `updated` field). Kept when a ticket is deleted, so that an old delivery cannot bring it back.
VERSIONS_DDL = "CREATE TABLE IF NOT EXISTS ticket_versions (id VARCHAR PRIMARY KEY, updated TIMESTAMP NOT NULL)"

_SQL_TYPE = {"categorical": "VARCHAR", "multi": "VARCHAR[]", "numeric": "DOUBLE", "date": "TIMESTAMP"}
_ARROW_TYPE = {
    "categorical": pa.string(),
    "multi": pa.list_(pa.string()),
    "numeric": pa.float64(),
    "date": pa.timestamp("us"),
}


@dataclass
class UpsertResult:
    inserted: int
    updated: int
    change_seq: int
    ids: list[str] = field(default_factory=list)  # distinct ticket ids written, in order
    row_ids: list[int] = field(default_factory=list)  # their row ids
    stale: list[str] = field(default_factory=list)  # ids not written: the stored version is as new or newer
    repeated: list[str] = field(default_factory=list)  # ids given more than once (the last occurrence won)


HIT_ROWS_KEPT = 50_000  # bodiless rows kept for search hits (`TicketStore.get_rows`): about 25 MB of titles and fields


@dataclass
class StoredTicket:
    row_id: int
    id: str
    title: str
    body: str
    created: datetime
    duplicate_of: str | None
    values: dict[str, Any]
    text_hash: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "body": self.body,
            "created": iso_utc(self.created),
            "duplicate_of": self.duplicate_of,
            "fields": {k: (iso_utc(v) if isinstance(v, datetime) else v) for k, v in self.values.items()},
        }


def _json_default(o: Any) -> Any:
    if isinstance(o, datetime):
        return o.isoformat()
    return str(o)


class TicketStore:
    """A DuckDB database file holding tickets. Open one per process; only one process may write."""

    def __init__(self, path: Path, schema: Schema | None = None, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        if read_only and not self.path.exists():
            raise NotFoundError(f"{self.path}: no ticket store here (run 'ticketsearch ingest' first)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._root = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as exc:
            msg = str(exc).splitlines()[0]
            if "lock" in msg.lower():
                raise StoreLockedError(f"{self.path} is open for writing by another process: {msg}") from None
            raise StoreError(f"cannot open {self.path}: {msg}") from None
        self._local = threading.local()
        self._local.con = self._root
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._cursor_lock = threading.Lock()
        self._recency: tuple[int, np.ndarray, np.ndarray] | None = None  # (writes, created, row ids); recent_row_ids
        self._alloc: tuple[int, Mapping[str, int]] = (1, {})  # (row stride, given row ids) of the write in progress
        self._writes = 0  # committed writes through this store
        # search hits' rows (no body) by row id, valid while `_writes` is what it was when they were read
        self._hit_rows: tuple[int, dict[int, StoredTicket]] = (0, {})
        self._hit_rows_lock = threading.Lock()
        self.schema = self._init_schema(schema)
        if not read_only:
            self._root.execute(CHANGES_DDL)
            self._root.execute(ROW_ID_INDEX_DDL)
            self._root.execute(VERSIONS_DDL)
        self._row_id_index = bool(self._root.execute(
            "SELECT count(*) FROM duckdb_indexes() WHERE index_name = 'tickets_row_id'").fetchall()[0][0])

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """This thread's connection (a DuckDB cursor on the one database handle; cursors are not shared)."""
        con = getattr(self._local, "con", None)
        if con is None:
            con = self._root.cursor()
            self._local.con = con
            with self._cursor_lock:
                self._cursors.append(con)
        return con

    def has_room(self) -> bool:
        """Whether the disk that holds the store has room for writes again (ROOM_BYTES free)."""
        return not disk_full_injected() and shutil.disk_usage(self.path.parent).free >= ROOM_BYTES

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN ... COMMIT on this thread's connection. On any failure the transaction is rolled back (where
        DuckDB has not ended it itself, as a failed COMMIT does) and the first error is raised, never the
        rollback's; no room on the disk is DiskFullError."""
        self.con.execute("BEGIN")
        try:
            yield
            if disk_full_injected():  # fault injection (tests only)
                raise duckdb.IOException(f"Could not write file {self.path}: No space left on device (injected)")
            self.con.execute("COMMIT")
        except BaseException as exc:
            with suppress(duckdb.Error):
                self.con.execute("ROLLBACK")
            if disk_full(exc):
                raise DiskFullError("the disk that holds the ticket store is full: nothing of this write was "
                                    "written (free some space; writes go on by themselves)") from exc
            raise

    @contextmanager
    def _stream(self, sql: str) -> Iterator[duckdb.DuckDBPyConnection]:
        """A query read in batches on a cursor of its own, closed however the reading ends: a result left
        unfinished on this thread's connection refuses that connection's next work (DuckDB 2: "connection has
        an unfinished result"), which a reader that stops early, or a `fetchone`, would otherwise leave."""
        cur = self._root.cursor()
        try:
            yield cur.execute(sql)
        finally:
            cur.close()

    def has_table(self, name: str) -> bool:
        """Whether the database holds this table (those made on first use: feedback, webhook deliveries)."""
        return bool(self.con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
                                     [name]).fetchall()[0][0])

    # ---- set-up ---------------------------------------------------------------------------------
    def _init_schema(self, schema: Schema | None) -> Schema:
        has_meta = self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'meta'"
        ).fetchall()[0][0]
        stored: Schema | None = None
        if has_meta:
            rows = self.con.execute("SELECT value FROM meta WHERE key = 'schema'").fetchall()
            stored = Schema.from_dict(json.loads(rows[0][0])) if rows else None
        if stored is not None:
            if schema is not None and schema.to_dict() != stored.to_dict():
                raise SchemaError(
                    f"{self.path} was built with schema {stored.name!r}; it cannot be re-ingested with "
                    f"schema {schema.name!r} (use a new --index directory)"
                )
            return stored
        if schema is None:
            raise NotFoundError(f"{self.path}: no ticket store here (run 'ticketsearch ingest' first)")
        if self.read_only:
            raise NotFoundError(f"{self.path}: store is empty")
        cols = ",\n".join(f"  {f.column} {_SQL_TYPE[f.kind]}" for f in schema.fields)
        self.con.execute("BEGIN")
        self.con.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
        self.con.execute(
            f"""CREATE TABLE tickets (
  id VARCHAR PRIMARY KEY,
  row_id BIGINT NOT NULL,
  title VARCHAR NOT NULL,
  body VARCHAR NOT NULL,
  created TIMESTAMP NOT NULL,
  duplicate_of VARCHAR,
  text_hash VARCHAR NOT NULL,
  raw_fields JSON{',' if cols else ''}
{cols}
)"""
        )
        self.con.execute(
            "CREATE TABLE embedding_cache (model_key VARCHAR, text_hash VARCHAR, vec FLOAT[], "
            "PRIMARY KEY (model_key, text_hash))"
        )
        self.con.executemany(
            "INSERT INTO meta VALUES (?, ?)",
            [
                ("schema", json.dumps(schema.to_dict())),
                ("format", str(STORE_FORMAT)),
                ("next_row_id", "0"),
                ("change_seq", "0"),
            ],
        )
        self.con.execute("COMMIT")
        return schema

    def close(self) -> None:
        with self._cursor_lock:
            for c in self._cursors:
                c.close()
            self._cursors.clear()
        self._root.close()

    def __enter__(self) -> TicketStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- meta -----------------------------------------------------------------------------------
    def _meta_int(self, key: str) -> int:
        rows = self.con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchall()
        return int(rows[0][0]) if rows else 0

    def _set_meta(self, key: str, value: str) -> None:
        self.con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, value])

    @property
    def change_seq(self) -> int:
        return self._meta_int("change_seq")

    # ---- writes ---------------------------------------------------------------------------------
    def upsert(self, tickets: Sequence[Ticket], row_ids: Mapping[str, int] | None = None,
               embeddings: Sequence[Embeddings] = ()) -> UpsertResult:
        """Insert or replace tickets by id in one transaction. Row ids of existing ids are kept; a new id gets
        the next one, or the one `row_ids` gives it (a shard of a split collection keeps the whole's)."""
        if self.read_only:
            raise StoreError(f"{self.path} is open read-only")
        latest, repeated = last_of_each(tickets)
        if not latest:
            return UpsertResult(0, 0, self.change_seq)
        res = self.upsert_tables(iter([self._to_arrow(latest, None)]), row_ids, embeddings)
        res.repeated = repeated
        return res

    # ---- reads the application asks for (no SQL outside this module) --------------------------------
    def ids_by_created(self, since: datetime | None = None,
                       until: datetime | None = None) -> list[tuple[str, datetime]]:
        """(id, created) of the tickets created in [since, until), oldest first (ties by row id)."""
        where, params = self.filter_sql({}, before=until, after=since)
        sql = "SELECT id, created FROM tickets" + (" WHERE " + " AND ".join(where) if where else "")
        return [(r[0], r[1]) for r in self.con.execute(sql + " ORDER BY created, row_id", params).fetchall()]

    def duplicate_links(self, before: datetime | None = None) -> list[tuple[str, str | None]]:
        """(id, duplicate_of) of every ticket (created before `before`, when given)."""
        sql = "SELECT id, duplicate_of FROM tickets" + (" WHERE created < ?" if before is not None else "")
        return [(r[0], r[1]) for r in self.con.execute(sql, [before] if before is not None else []).fetchall()]

    def link_count(self) -> int:
        """How many stored tickets name the ticket they duplicate."""
        return int(self.con.execute("SELECT count(*) FROM tickets WHERE duplicate_of IS NOT NULL").fetchall()[0][0])

    def eval_rows(self) -> list[dict[str, Any]]:
        """Every ticket's row id, id, title, body, created and duplicate_of (what an evaluation reads)."""
        names = ("row_id", "id", "title", "body", "created", "duplicate_of")
        return [dict(zip(names, r)) for r in self.con.execute(f"SELECT {', '.join(names)} FROM tickets").fetchall()]

    def resolved_duplicate_row_ids(self) -> set[int]:
        """Row ids of tickets whose kept `resolution` column says Duplicate (a tracker's own verdict)."""
        rows = self.con.execute(
            "SELECT row_id FROM tickets WHERE lower(coalesce(json_extract_string(raw_fields, '$.resolution'), "
            "json_extract_string(raw_fields, '$.Resolution'), '')) = 'duplicate'").fetchall()
        return {int(r[0]) for r in rows}

    def values_by_row(self) -> dict[int, dict[str, Any]]:
        """row id -> typed field values, for every stored ticket."""
        cols = ", ".join(["row_id"] + [f.column for f in self.schema.fields])
        return {r[0]: {f.name: r[1 + i] for i, f in enumerate(self.schema.fields)}
                for r in self.con.execute(f"SELECT {cols} FROM tickets").fetchall()}

    def newest_titles(self, n: int) -> list[tuple[str, datetime]]:
        """(title, created) of the `n` newest tickets, newest first."""
        rows = self.con.execute("SELECT title, created FROM tickets ORDER BY created DESC, row_id DESC LIMIT ?",
                                [n]).fetchall()
        return [(r[0], r[1]) for r in rows]

    COPIED_TABLES = ("tickets", "embedding_cache", "feedback", "hook_deliveries")  # what a split carries over

    def export_table(self, name: str) -> pa.Table:
        """A whole table as Arrow (tickets in row-id order), for copying into another store (a split)."""
        if name not in self.COPIED_TABLES:
            raise StoreError(f"{name!r} is not a table a store copies")
        order = " ORDER BY row_id" if name == "tickets" else ""
        return self.con.sql(f"SELECT * FROM {name}{order}").to_arrow_table()

    def import_rows(self, name: str, rows: pa.Table, ddl: str | None = None) -> None:
        """Insert rows exported from another store's table of the same layout (`ddl` creates it first)."""
        if name not in self.COPIED_TABLES:
            raise StoreError(f"{name!r} is not a table a store copies")
        if ddl is not None:
            self.con.execute(ddl)
        self.con.register("_rows", rows)
        try:
            self.con.execute(f"INSERT INTO {name} SELECT * FROM _rows")
        finally:
            self.con.unregister("_rows")

    def existing_row_ids(self, ids: Sequence[str]) -> dict[str, int]:
        """The row ids of those of `ids` that are stored."""
        if not ids:
            return {}
        self.con.register("_ask", pa.table({"id": pa.array(list(ids), pa.string())}))
        try:
            return dict(self.con.execute("SELECT t.id, t.row_id FROM tickets t JOIN _ask USING (id)").fetchall())
        finally:
            self.con.unregister("_ask")

    @property
    def next_row_id(self) -> int:
        return self._meta_int("next_row_id")

    def allocate_rows(self, n: int, floor: int = 0) -> int:
        """Reserve `n` row ids for a sharded collection's new tickets (this store is its shard 0, which hands
        them out in order, as one index would number them); returns the first. `floor`: none below it."""
        if self.read_only:
            raise StoreError(f"{self.path} is open read-only")
        with self._transaction():
            start = max(self._meta_int("collection_next_row"), int(floor))
            self._set_meta("collection_next_row", str(start + int(n)))
        return start

    def set_row_allocation(self, next_row: int, stride: int) -> None:
        """New ids get row ids `next_row`, `next_row + stride`, ...: a split's shards go on from the index's next
        row id (stride 1; the front numbers new tickets through shard 0: `allocate_rows`); collections made
        before that gave each shard its own residue modulo N, which stays unique."""
        if self.read_only:
            raise StoreError(f"{self.path} is open read-only")
        self._set_meta("next_row_id", str(int(next_row)))
        self._set_meta("row_stride", str(int(stride)))

    def upsert_tables(self, tables: Iterator[pa.Table], row_ids: Mapping[str, int] | None = None,
                      embeddings: Sequence[Embeddings] = ()) -> UpsertResult:
        """`upsert` for batches already in the store's column layout (every column but `row_id`: validated,
        typed, text hashes computed; instead of `raw_fields` a batch may carry `_line`, each row's JSON line,
        from which the `fields` object is taken), in one transaction (an exception from the stream rolls
        everything back). The result is as if the batches were one: the last occurrence of an id wins, a new
        id gets its row id where it first appears, and an id repeated within the stream counts once.

        Versions: a batch with an `updated` column (`Ticket.updated`; null where a ticket gives none) writes a
        row only if its time is newer than the version stored for that id; the others are left as they are and
        listed in `stale`. A row without a time is always written and leaves the stored version as it was.

        `embeddings`: (model key, text hashes, vectors) for the embedding cache, in the same transaction (a write
        is committed with its vectors or not at all). A full disk is DiskFullError, with nothing written."""
        if self.read_only:
            raise StoreError(f"{self.path} is open read-only")
        with self._transaction():
            seq = self._meta_int("change_seq") + 1
            next_row = self._meta_int("next_row_id")
            self._alloc = (max(self._meta_int("row_stride"), 1), row_ids or {})
            new: dict[str, int] = {}
            old: dict[str, int] = {}
            seen: dict[str, int] = {}  # every id written, in first-occurrence order -> row id
            stale: list[str] = []
            for table in tables:
                last: dict[str, int] = {}
                for i, tid in enumerate(table.column("id").to_pylist()):
                    last[tid] = i
                ids = list(last)
                rows = table if len(ids) == table.num_rows else table.take(pa.array(list(last.values()), pa.int64()))
                if "updated" in rows.column_names:
                    ids, rows = self._newer_only(ids, rows, stale)
                if ids:
                    next_row = self._write_batch(ids, rows, seq, next_row, new, old, seen)
            if not new and not old:
                return UpsertResult(0, 0, seq - 1, stale=stale)  # (an empty transaction: nothing changed)
            self._set_meta("next_row_id", str(next_row))
            self._set_meta("change_seq", str(seq))
            for key, hashes, vecs in embeddings:
                self.put_embeddings(key, hashes, vecs)
        self._writes += 1  # after the commit: a recency list read before it is stale
        return UpsertResult(inserted=len(new), updated=len(old), change_seq=seq, ids=list(seen),
                            row_ids=list(seen.values()), stale=stale)

    def _newer_only(self, ids: list[str], rows: pa.Table, stale: list[str]) -> tuple[list[str], pa.Table]:
        """The rows of one batch that their versions allow (`index_data.versions`; inside the open
        transaction), with their versions stored; the ids refused are added to `stale`. The `updated` column is
        taken off the rows."""
        given = rows.column("updated").to_pylist()
        rows = rows.drop_columns(["updated"])
        asked = [tid for tid, t in zip(ids, given) if t is not None]
        if not asked:
            return ids, rows
        self.con.register("_ids", pa.table({"id": pa.array(asked, pa.string())}))
        stored = dict(self.con.execute("SELECT v.id, v.updated FROM ticket_versions v JOIN _ids USING (id)").fetchall())
        self.con.unregister("_ids")
        check = check_versions(ids, given, stored)
        if check.versions:
            self.con.register("_ver", pa.table({"id": pa.array([tid for tid, _ in check.versions], pa.string()),
                                                "updated": pa.array([t for _, t in check.versions],
                                                                    pa.timestamp("us"))}))
            self.con.execute("INSERT OR REPLACE INTO ticket_versions SELECT id, updated FROM _ver")
            self.con.unregister("_ver")
        if not check.refused:
            return ids, rows
        stale.extend(check.refused)
        return [ids[i] for i in check.keep], rows.take(pa.array(check.keep, pa.int64()))

    def _write_batch(self, ids: list[str], rows: pa.Table, seq: int, next_row: int, new: dict[str, int],
                     old: dict[str, int], seen: dict[str, int]) -> int:
        """Insert or replace one batch of distinct ids inside the open transaction; returns the next row id."""
        self.con.register("_ids", pa.table({"id": pa.array(ids, pa.string())}))
        existing = dict(self.con.execute("SELECT t.id, t.row_id FROM tickets t JOIN _ids USING (id)").fetchall())
        self.con.unregister("_ids")
        row_ids: list[int] = []
        stride, given = self._alloc
        for tid in ids:
            rid = existing.get(tid)
            if rid is None:
                rid = given.get(tid)
                if rid is None:
                    rid = next_row
                    next_row += stride
                else:
                    next_row = max(next_row, rid + 1)
                new[tid] = rid
            elif tid not in new:
                old[tid] = rid  # there before this write (an id repeated in the stream is still new)
            seen.setdefault(tid, rid)
            row_ids.append(rid)
        batch = rows.add_column(1, "row_id", pa.array(row_ids, pa.int64()))
        self.con.register("_batch", batch)
        if existing:
            self.con.execute("DELETE FROM tickets WHERE id IN (SELECT id FROM _batch)")
        cols = [c for c in batch.column_names if c != "_line"]
        exprs = list(cols)
        if "raw_fields" not in cols and "_line" in batch.column_names:
            cols.append("raw_fields")
            exprs.append("coalesce(nullif(json_extract(_line, '$.fields')::VARCHAR, 'null'), '{}')")
        self.con.execute(f"INSERT INTO tickets ({', '.join(cols)}) SELECT {', '.join(exprs)} FROM _batch")
        self.con.unregister("_batch")
        self._log_changes(seq, row_ids)
        return next_row

    def _log_changes(self, seq: int, row_ids: Sequence[int]) -> None:
        self.con.register("_chg", pa.table({"seq": pa.array([seq] * len(row_ids), pa.int64()),
                                            "row_id": pa.array(list(row_ids), pa.int64())}))
        self.con.execute("INSERT INTO changes SELECT seq, row_id FROM _chg")
        self.con.unregister("_chg")

    def changed_since(self, seq: int) -> np.ndarray | None:
        """Row ids written (upserted or deleted) after change `seq`; None if this store keeps no log."""
        try:
            res = self.con.execute("SELECT DISTINCT row_id FROM changes WHERE seq > ? ORDER BY row_id", [seq])
        except duckdb.CatalogException:
            return None
        return res.fetchnumpy()["row_id"].astype(np.int64)

    def prune_changes(self, upto_seq: int) -> None:
        """Forget changes every derived index has applied (those at or below `upto_seq`), and every read
        replica has pulled (`set_replica_seq`)."""
        if not self.read_only:
            floor = min([upto_seq, *self.replica_seqs().values()])
            self.con.execute("DELETE FROM changes WHERE seq <= ?", [floor])
            if floor > self.pruned_seq():
                self._set_meta("pruned_seq", str(int(floor)))

    def pruned_seq(self) -> int:
        """Changes at or below this one are no longer in the log."""
        return self._meta_int("pruned_seq")

    # ---- read replicas (pipeline.replica) -------------------------------------------------------------
    def replica_seqs(self) -> dict[str, int]:
        """The change each read replica of this store has pulled, by replica name."""
        rows = self.con.execute("SELECT key, value FROM meta WHERE key LIKE 'replica:%'").fetchall()
        return {k.removeprefix("replica:"): int(v) for k, v in rows}

    def set_replica_seq(self, name: str, seq: int) -> None:
        """A read replica has every change up to `seq`: the log keeps the later ones for it."""
        if self.replica_seqs().get(name) != int(seq):
            self._set_meta(f"replica:{name}", str(int(seq)))

    def primary_seq(self) -> int:
        """For a read replica's own store: the primary's change it has applied."""
        return self._meta_int("primary_seq")

    def set_primary_seq(self, seq: int) -> None:
        self._set_meta("primary_seq", str(int(seq)))

    def make_replica(self, seq: int) -> None:
        """A copy of a primary's database made a read replica's, at the primary's change `seq`: it keeps no
        log for replicas of its own."""
        self.con.execute("DELETE FROM meta WHERE key LIKE 'replica:%' OR key = 'pruned_seq'")
        self.set_primary_seq(seq)

    def copy_database(self, dest: Path) -> int:
        """A consistent copy of this database at `dest` (a new file), as of one transaction; returns the change
        it holds. Writes wait for it only as long as DuckDB's copy takes."""
        name = self.con.execute("SELECT current_database()").fetchall()[0][0]
        self.con.execute(f"ATTACH '{Path(dest)}' AS _replica_copy")
        try:
            self.con.execute(f'COPY FROM DATABASE "{name}" TO _replica_copy')
            held = self.con.execute("SELECT value FROM _replica_copy.meta WHERE key = 'change_seq'").fetchall()
            seq = int(held[0][0])
        finally:
            self.con.execute("DETACH _replica_copy")
        return seq

    def rows_table(self, row_ids: Sequence[int]) -> tuple[pa.Table, list[int]]:
        """These rows (those that exist) in the layout `upsert_tables` takes, and their row ids."""
        self.con.register("_rids", pa.table({"row_id": pa.array([int(r) for r in row_ids], pa.int64())}))
        try:
            tbl = self.con.sql("SELECT * FROM tickets WHERE row_id IN (SELECT row_id FROM _rids) "
                               "ORDER BY row_id").to_arrow_table()
        finally:
            self.con.unregister("_rids")
        rows = tbl.column("row_id").to_pylist()
        tbl = tbl.drop_columns(["row_id"])
        i = tbl.schema.get_field_index("raw_fields")
        return tbl.set_column(i, "raw_fields", tbl.column(i).cast(pa.string())), rows

    def newest_created(self) -> datetime | None:
        return self.con.execute("SELECT max(created) FROM tickets").fetchall()[0][0]

    def row_ids(self) -> np.ndarray:
        return self.con.execute("SELECT row_id FROM tickets ORDER BY row_id").fetchnumpy()["row_id"].astype(np.int64)

    def delete(self, ids: Iterable[str]) -> list[int]:
        """Delete tickets by id; returns the row ids removed."""
        if self.read_only:
            raise StoreError(f"{self.path} is open read-only")
        ids = list(ids)
        with self._transaction():
            self.con.register("_ids", pa.table({"id": pa.array(ids, pa.string())}))
            rows = [r[0] for r in self.con.execute("SELECT row_id FROM tickets JOIN _ids USING (id)").fetchall()]
            self.con.execute("DELETE FROM tickets WHERE id IN (SELECT id FROM _ids)")
            self.con.unregister("_ids")
            if rows:
                seq = self._meta_int("change_seq") + 1
                self._set_meta("change_seq", str(seq))
                self._log_changes(seq, rows)
        self._writes += 1  # after the commit: a recency list read before it is stale
        return rows

    def _to_arrow(self, tickets: Sequence[Ticket], row_ids: Sequence[int] | None = None) -> pa.Table:
        """Tickets in the table's layout (with `row_id` when given)."""
        data: dict[str, pa.Array] = {
            "id": pa.array([t.id for t in tickets], pa.string()),
            "title": pa.array([t.title for t in tickets], pa.string()),
            "body": pa.array([t.body for t in tickets], pa.string()),
            "created": pa.array([t.created for t in tickets], pa.timestamp("us")),
            "duplicate_of": pa.array([t.duplicate_of for t in tickets], pa.string()),
            "text_hash": pa.array([text_hash(t.text(self.schema)) for t in tickets], pa.string()),
            "raw_fields": pa.array(
                [json.dumps(t.raw_fields, default=_json_default, ensure_ascii=False) for t in tickets], pa.string()
            ),
        }
        for f in self.schema.fields:
            data[f.column] = pa.array([t.values.get(f.name) for t in tickets], _ARROW_TYPE[f.kind])
        if any(t.updated is not None for t in tickets):
            data["updated"] = pa.array([t.updated for t in tickets], pa.timestamp("us"))
        table = pa.table(data)
        return table if row_ids is None else table.add_column(1, "row_id", pa.array(row_ids, pa.int64()))

    # ---- reads ----------------------------------------------------------------------------------
    def count(self) -> int:
        return self.con.execute("SELECT count(*) FROM tickets").fetchall()[0][0]

    def _select(self, with_body: bool = True) -> str:
        fcols = "".join(f", {f.column}" for f in self.schema.fields)
        body = "body" if with_body else "'' AS body"
        return f"SELECT row_id, id, title, {body}, created, duplicate_of, text_hash{fcols} FROM tickets"

    def _row(self, r: Sequence[Any]) -> StoredTicket:
        values = {f.name: r[7 + i] for i, f in enumerate(self.schema.fields)}
        return StoredTicket(
            row_id=r[0], id=r[1], title=r[2], body=r[3], created=r[4], duplicate_of=r[5], text_hash=r[6],
            values=values,
        )

    def get(self, ticket_id: str) -> StoredTicket:
        rows = self.con.execute(self._select() + " WHERE id = ?", [ticket_id]).fetchall()
        if not rows:
            raise NotFoundError(f"ticket {ticket_id!r} not found")
        return self._row(rows[0])

    def get_rows(self, row_ids: Sequence[int], with_body: bool = True) -> list[StoredTicket]:
        """Tickets for these row ids, in the given order; ids that no longer exist are dropped.
        `with_body=False` leaves `body` empty (search hits do not carry it: 100 bodies cost most of a fetch), and
        is served from the rows read since the last write through this store (`_writes`, counted after each
        commit: the only writer, DuckDB lets no other process open the file meanwhile). A search reads its 100
        candidates' rows: 1.8 ms from DuckDB at 2,000 tickets, 15% of a search's time under load (py-spy)."""
        if len(row_ids) == 0:
            return []
        if with_body:
            return self._read_rows(row_ids, with_body=True)
        writes = self._writes  # before reading: a write committed meanwhile makes what is read now stale
        ids = [int(r) for r in row_ids]
        with self._hit_rows_lock:
            seen, rows = self._hit_rows
            known = {r: rows[r] for r in ids if r in rows} if seen == writes else {}
        missing = [r for r in ids if r not in known]
        if missing:
            fresh = {t.row_id: t for t in self._read_rows(missing, with_body=False)}
            known.update(fresh)
            with self._hit_rows_lock:  # kept under the count read before reading: valid until the next write
                seen, rows = self._hit_rows
                if seen != writes or len(rows) + len(fresh) > HIT_ROWS_KEPT:
                    rows = {}
                    self._hit_rows = (writes, rows)
                rows.update(fresh)
        return [known[r] for r in ids if r in known]

    def _read_rows(self, row_ids: Sequence[int], with_body: bool) -> list[StoredTicket]:
        select = self._select(with_body)
        if self._row_id_index and len(row_ids) <= 1000:  # uses the row-id index; a join would scan
            # One list parameter, `row_id = ANY(?)`: through the service at 100k it fetched 100 hits in 5.1-5.9 ms
            # against 7.8 ms for an IN list of 100 literals; at 1M, in a bare loop, it was 1.8 ms slower (8.8 vs
            # 7.0 ms; docs/RESULTS.md).
            rows = self.con.execute(select + " WHERE row_id = ANY(?)", [[int(r) for r in row_ids]]).fetchall()
        else:
            self.con.register("_rids", pa.table({"row_id": pa.array(list(row_ids), pa.int64())}))
            rows = self.con.execute(select + " WHERE row_id IN (SELECT row_id FROM _rids)").fetchall()
            self.con.unregister("_rids")
        by_id = {r[0]: self._row(r) for r in rows}
        return [by_id[r] for r in row_ids if r in by_id]

    def known_values(self, name: str, limit: int = 100) -> list[str]:
        """A categorical or multi field's most frequent values, most frequent first (ties by value)."""
        spec = self.schema.field(name)
        if spec.kind not in ("categorical", "multi"):
            return []
        col = spec.column if spec.kind == "categorical" else f"unnest({spec.column})"
        rows = self.con.execute(f"SELECT v, count(*) AS n FROM (SELECT {col} AS v FROM tickets) WHERE v IS NOT NULL "
                                "GROUP BY v ORDER BY n DESC, v LIMIT ?", [limit]).fetchall()
        return [str(r[0]) for r in rows]

    def bodies(self, ids: Sequence[str]) -> dict[str, str]:
        """The bodies of these tickets by id (ids that no longer exist are left out)."""
        if not ids:
            return {}
        return dict(self.con.execute("SELECT id, body FROM tickets WHERE id = ANY(?)", [list(ids)]).fetchall())

    def iter_index_rows(self, batch: int = 10_000) -> Iterator[tuple[np.ndarray, list[str], list[str], list[str]]]:
        """Yield (row_ids, text_hashes, titles, bodies) in row-id order, in batches."""
        with self._stream("SELECT row_id, text_hash, title, body FROM tickets ORDER BY row_id") as cur:
            while rows := cur.fetchmany(batch):
                yield (
                    np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)),
                    [r[1] for r in rows],
                    [r[2] for r in rows],
                    [r[3] for r in rows],
                )

    def field_rows(self) -> Iterator[dict[str, Any]]:
        """Every ticket's typed field values, for learning vocabularies and statistics."""
        if not self.schema.fields:
            for _ in range(self.count()):
                yield {}
            return
        cols = ", ".join(f.column for f in self.schema.fields)
        with self._stream(f"SELECT {cols} FROM tickets ORDER BY row_id") as cur:
            while rows := cur.fetchmany(10_000):
                for r in rows:
                    yield {f.name: r[i] for i, f in enumerate(self.schema.fields)}

    # ---- filters --------------------------------------------------------------------------------
    def filter_row_ids(
        self,
        filters: dict[str, list[Any]] | None = None,
        before: datetime | None = None,
        after: datetime | None = None,
        exclude_ids: Sequence[str] = (),
    ) -> np.ndarray | None:
        """Row ids that satisfy every filter (values of one field are OR-ed). None means no restriction."""
        where, params = self.filter_sql(filters or {}, before, after)
        if exclude_ids:
            where.append("id NOT IN (SELECT unnest(?))")
            params.append(list(exclude_ids))
        if not where:
            return None
        sql = "SELECT row_id FROM tickets WHERE " + " AND ".join(where) + " ORDER BY row_id"
        return self.con.execute(sql, params).fetchnumpy()["row_id"].astype(np.int64)

    def recent_row_ids(
        self,
        limit: int,
        filters: dict[str, list[Any]] | None = None,
        before: datetime | None = None,
        after: datetime | None = None,
        exclude_ids: Sequence[str] = (),
    ) -> np.ndarray:
        """The `limit` newest tickets that satisfy the filters, newest first (the recency ranking)."""
        if not filters:
            return self._recent_in_memory(limit, before, after, exclude_ids)
        where, params = self.filter_sql(filters or {}, before, after)
        if exclude_ids:
            where.append("id NOT IN (SELECT unnest(?))")
            params.append(list(exclude_ids))
        sql = "SELECT row_id FROM tickets" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY created DESC, row_id DESC LIMIT ?"
        return self.con.execute(sql, [*params, int(limit)]).fetchnumpy()["row_id"].astype(np.int64)

    def _recent_in_memory(
        self, limit: int, before: datetime | None, after: datetime | None, exclude_ids: Sequence[str]
    ) -> np.ndarray:
        """`recent_row_ids` without filters, from every ticket's (created, row id) held sorted in memory.

        A top-N sort of the whole table on every query cost 8 ms at 100k tickets; this is a binary search.
        The sorted arrays are rebuilt after every write through this store (the only writer: DuckDB lets no
        other process open the file meanwhile).
        """
        cache = self._recency
        if cache is None or cache[0] != self._writes:
            writes = self._writes  # before reading: a write committed meanwhile makes this copy stale
            res = self.con.execute("SELECT row_id, created FROM tickets ORDER BY created, row_id").fetchnumpy()
            created = np.asarray(res["created"]).astype("datetime64[us]")
            cache = (writes, created, np.asarray(res["row_id"]).astype(np.int64))
            self._recency = cache
        _, created, rows = cache
        hi = int(np.searchsorted(created, np.datetime64(before, "us"), "left")) if before is not None else len(rows)
        lo = int(np.searchsorted(created, np.datetime64(after, "us"), "left")) if after is not None else 0
        skip: set[int] = set()
        if exclude_ids:
            self.con.register("_ex", pa.table({"id": pa.array(list(exclude_ids), pa.string())}))
            skip = {r[0] for r in self.con.execute("SELECT row_id FROM tickets JOIN _ex USING (id)").fetchall()}
            self.con.unregister("_ex")
        window = rows[max(lo, hi - limit - len(skip)) : hi][::-1]
        if skip:
            window = window[~np.isin(window, list(skip))]
        return window[:limit].copy()

    def filter_sql(
        self, filters: dict[str, list[Any]], before: datetime | None, after: datetime | None
    ) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        for name, values in filters.items():
            try:
                spec = self.schema.field(name)
            except KeyError:
                raise QueryError(
                    f"unknown filter field {name!r}; allowed: {', '.join(self.schema.field_names) or '(none)'}"
                ) from None
            vals = [coerce_filter_value(spec, v) for v in values]
            if spec.kind == "multi":
                where.append(f"list_has_any({spec.column}, ?::VARCHAR[])")
                params.append(vals)
            else:
                where.append(f"{spec.column} IN (SELECT unnest(?))")
                params.append(vals)
        if before is not None:
            where.append("created < ?")
            params.append(before)
        if after is not None:
            where.append("created >= ?")
            params.append(after)
        return where, params

    # ---- embedding cache ------------------------------------------------------------------------
    def cached_embeddings(self, model_key: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        if not hashes:
            return {}
        self.con.register("_h", pa.table({"text_hash": pa.array(list(set(hashes)), pa.string())}))
        tbl = self.con.sql(
            "SELECT c.text_hash, c.vec FROM embedding_cache c JOIN _h USING (text_hash) WHERE c.model_key = ?",
            params=[model_key],
        ).to_arrow_table()
        self.con.unregister("_h")
        if tbl.num_rows == 0:
            return {}
        keys = tbl.column("text_hash").to_pylist()
        flat = tbl.column("vec").combine_chunks().flatten().to_numpy().astype(np.float32)
        mat = flat.reshape(len(keys), -1)
        return {k: mat[i] for i, k in enumerate(keys)}

    def all_embeddings(self) -> dict[tuple[str, str], np.ndarray]:
        """Every cached vector, by (model key, text hash): to compare two builds of the same tickets."""
        rows = self.con.execute("SELECT model_key, text_hash, vec FROM embedding_cache").fetchall()
        return {(k, h): np.asarray(v, np.float32) for k, h, v in rows}

    def put_embeddings(self, model_key: str, hashes: Sequence[str], vecs: np.ndarray) -> None:
        if len(hashes) == 0:
            return
        dim = vecs.shape[1]
        values = pa.array(np.ascontiguousarray(vecs, dtype=np.float32).reshape(-1), pa.float32())
        lists = pa.ListArray.from_arrays(pa.array(np.arange(0, len(hashes) * dim + 1, dim, dtype=np.int32)), values)
        tbl = pa.table(
            {
                "model_key": pa.array([model_key] * len(hashes), pa.string()),
                "text_hash": pa.array(list(hashes), pa.string()),
                "vec": lists,
            }
        )
        self.con.register("_emb", tbl)
        self.con.execute("INSERT INTO embedding_cache SELECT * FROM _emb ON CONFLICT DO NOTHING")
        self.con.unregister("_emb")


def coerce_filter_value(spec: FieldSpec, value: Any) -> Any:
    if spec.kind == "numeric":
        try:
            return float(value)
        except (TypeError, ValueError):
            raise QueryError(f"filter {spec.name!r} needs a number, got {value!r}") from None
    if spec.kind == "date":

        try:
            return parse_datetime(value)
        except ValueError as exc:
            raise QueryError(f"filter {spec.name!r}: {exc}") from None
    if isinstance(value, (dict, list)):
        raise QueryError(f"filter {spec.name!r} needs plain values")
    return str(value)


@dataclass
class StoreTexts:
    row_ids: np.ndarray
    hashes: list[str]
    titles: list[str]
    bodies: list[str]


def read_texts(store: TicketStore) -> StoreTexts:
    """Every ticket's row id, text hash, title and body, in row-id order (what an index build reads)."""
    parts: list[np.ndarray] = []
    out = StoreTexts(np.zeros(0, np.int64), [], [], [])
    for row_ids, hs, titles, bodies in store.iter_index_rows():
        parts.append(row_ids)
        out.hashes.extend(hs)
        out.titles.extend(titles)
        out.bodies.extend(bodies)
    if parts:
        out.row_ids = np.concatenate(parts)
    return out
