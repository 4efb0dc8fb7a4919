from __future__ import annotations

import json
from pathlib import Path

import pytest

from ticketsearch.errors import IngestError
from ticketsearch.index_data.ingest import ingest_file
from ticketsearch.index_data.schema import load_schema
from ticketsearch.index_data.store import TicketStore


def rows_with_errors(tmp_path: Path) -> Path:
    lines = [
        json.dumps({"id": "S-1", "title": "a", "body": "x", "created": "2024-01-01"}),
        json.dumps({"title": "no id", "created": "2024-01-01"}),
        json.dumps({"id": "S-3", "title": "bad date", "created": "2024-13-45"}),
        json.dumps({"id": "S-4", "title": "d", "created": "2024-01-04", "fields": {"affected_count": "many"}}),
        json.dumps({"id": "S-5", "title": "e", "created": "2024-01-05", "fields": {"affected_count": 3}}),
    ]
    p = tmp_path / "in.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_skip_reports_each_bad_row_and_writes_the_rest(tmp_path: Path) -> None:
    with TicketStore(tmp_path / "t.duckdb", schema=load_schema("support")) as s:
        rep = ingest_file(s, rows_with_errors(tmp_path), on_error="skip", progress=False)
        assert [e.line for e in rep.errors] == [2, 3, 4]
        assert "missing id" in str(rep.errors[0]) and "affected_count" in str(rep.errors[2])
        assert rep.inserted == 2 and s.count() == 2


def test_stop_writes_nothing(tmp_path: Path) -> None:
    with TicketStore(tmp_path / "t.duckdb", schema=load_schema("support")) as s:
        s.upsert([])
        with pytest.raises(IngestError, match="line 2: missing id"):
            ingest_file(s, rows_with_errors(tmp_path), on_error="stop", progress=False)
        assert s.count() == 0 and s.change_seq == 0


def test_reingest_is_idempotent(tmp_path: Path, demo_file: Path) -> None:
    with TicketStore(tmp_path / "t.duckdb", schema=load_schema("support")) as s:
        a = ingest_file(s, demo_file, progress=False)
        snapshot = s.con.execute("SELECT * EXCLUDE (raw_fields) FROM tickets ORDER BY row_id").fetchall()
        b = ingest_file(s, demo_file, progress=False)
        assert (a.inserted, a.updated) == (300, 0)
        assert (b.inserted, b.updated) == (0, 300)
        assert s.con.execute("SELECT * EXCLUDE (raw_fields) FROM tickets ORDER BY row_id").fetchall() == snapshot


def test_repeated_ids_are_counted_and_named(tmp_path: Path) -> None:
    """The last row of an id wins, and the report says which ids were repeated (was: silent)."""
    rows = [{"id": f"R-{i % 4}", "title": f"row {i}", "created": "2024-01-02"} for i in range(6)]
    data = tmp_path / "rep.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with TicketStore(tmp_path / "t.duckdb", schema=load_schema("support")) as store:
        report = ingest_file(store, data, progress=False, columnar=False)
        assert (report.written, report.inserted, report.repeats) == (6, 4, 2)
        assert report.repeated_ids == ["R-0", "R-1"]
        assert store.get("R-0").title == "row 4" and store.get("R-1").title == "row 5"


def test_a_file_with_versions_keeps_the_newer_stored_ticket(tmp_path: Path) -> None:
    """A file's rows follow the store's version rule as the API's do: an older `updated` is left as stored,
    counted and named, never written (a large clean file leaves the columnar path for this)."""
    with TicketStore(tmp_path / "t.duckdb", schema=load_schema("support")) as store:
        first = [{"id": f"V-{i}", "title": f"new {i}", "created": "2024-01-02", "updated": "2024-03-01T00:00:00Z"}
                 for i in range(1200)]
        (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in first))
        assert ingest_file(store, tmp_path / "a.jsonl", progress=False).inserted == 1200
        older = [{**r, "title": "old", "updated": "2024-02-01T00:00:00Z"} for r in first[:3]]
        newer = [{**r, "title": "newer", "updated": "2024-04-01T00:00:00Z"} for r in first[3:5]]
        (tmp_path / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in older + newer))
        report = ingest_file(store, tmp_path / "b.jsonl", progress=False)
        assert (report.updated, report.stale, report.repeats) == (2, ["V-0", "V-1", "V-2"], 0)
        assert [store.get(f"V-{i}").title for i in range(6)] == ["new 0", "new 1", "new 2", "newer", "newer", "new 5"]
