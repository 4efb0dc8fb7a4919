from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from ticketsearch.errors import NotFoundError, QueryError, SchemaError, StoreError
from ticketsearch.index_data.records import normalize_row
from ticketsearch.index_data.schema import load_schema
from ticketsearch.index_data.store import TicketStore

SUPPORT = load_schema("support")


def tk(i: int, title: str = "t", **fields):
    raw = {"id": f"S-{i}", "title": f"{title} {i}", "body": "b", "created": f"2024-01-{i:02d}T00:00:00Z",
           "fields": {"product": "A", "category": "high", **fields}}
    return normalize_row(SUPPORT, raw, i)


def test_upsert_is_idempotent_and_row_ids_are_stable(tmp_path: Path) -> None:
    with TicketStore(tmp_path / "t.duckdb", schema=SUPPORT) as s:
        r1 = s.upsert([tk(1), tk(2), tk(3)])
        assert (r1.inserted, r1.updated) == (3, 0)
        before = {i: s.get(f"S-{i}").row_id for i in (1, 2, 3)}
        r2 = s.upsert([tk(2, title="changed"), tk(4)])
        assert (r2.inserted, r2.updated) == (1, 1)
        assert s.count() == 4
        assert s.get("S-2").row_id == before[2] and s.get("S-2").title == "changed 2"
        assert s.get("S-4").row_id == 3
        r3 = s.upsert([tk(1), tk(2, title="changed"), tk(3), tk(4)])
        assert s.count() == 4 and r3.inserted == 0 and r3.change_seq == 3


def test_deleted_row_ids_are_never_reused(tmp_path: Path) -> None:
    with TicketStore(tmp_path / "t.duckdb", schema=SUPPORT) as s:
        s.upsert([tk(1), tk(2)])
        assert s.delete(["S-2", "S-9"]) == [1]
        s.upsert([tk(3)])
        assert s.get("S-3").row_id == 2
        with pytest.raises(NotFoundError):
            s.get("S-2")


def test_last_duplicate_in_batch_wins(tmp_path: Path) -> None:
    with TicketStore(tmp_path / "t.duckdb", schema=SUPPORT) as s:
        s.upsert([tk(1, title="old"), tk(1, title="new")])
        assert s.count() == 1 and s.get("S-1").title == "new 1"


def test_filters(tmp_path: Path) -> None:
    with TicketStore(tmp_path / "t.duckdb", schema=load_schema("jira")) as s:
        rows = [
            {"id": "A-1", "title": "a", "created": "2015-01-01",
             "fields": {"project": "HDFS", "components": ["x", "y"]}},
            {"id": "A-2", "title": "b", "created": "2016-01-01", "fields": {"project": "HDFS", "components": ["z"]}},
            {"id": "A-3", "title": "c", "created": "2017-01-01", "fields": {"project": "YARN", "components": []}},
        ]
        s.upsert([normalize_row(s.schema, r, i) for i, r in enumerate(rows)])
        assert s.filter_row_ids() is None
        assert list(s.filter_row_ids({"project": ["HDFS"]})) == [0, 1]
        assert list(s.filter_row_ids({"project": ["HDFS", "YARN"]}, before=datetime(2017, 1, 1))) == [0, 1]
        assert list(s.filter_row_ids({"components": ["y", "z"]})) == [0, 1]
        assert list(s.filter_row_ids(after=datetime(2016, 1, 1), exclude_ids=["A-3"])) == [1]
        with pytest.raises(QueryError, match="allowed: project"):
            s.filter_row_ids({"status": ["Closed"]})


def test_reopen_keeps_schema_and_rejects_another(tmp_path: Path) -> None:
    with TicketStore(tmp_path / "t.duckdb", schema=SUPPORT) as s:
        s.upsert([tk(1)])
    with TicketStore(tmp_path / "t.duckdb") as s:
        assert s.schema == SUPPORT and s.count() == 1
    with pytest.raises(SchemaError, match="built with schema 'support'"):
        TicketStore(tmp_path / "t.duckdb", schema=load_schema("jira"))
    with pytest.raises(NotFoundError):
        TicketStore(tmp_path / "missing.duckdb", read_only=True)


def test_embedding_cache_round_trip(tmp_path: Path) -> None:
    with TicketStore(tmp_path / "t.duckdb", schema=SUPPORT) as s:
        v = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
        s.put_embeddings("m", ["h1", "h2", "h3"], v)
        s.put_embeddings("m", ["h1"], v[:1] + 1)  # existing keys are kept, not duplicated
        got = s.cached_embeddings("m", ["h1", "h3", "nope"])
        assert set(got) == {"h1", "h3"}
        assert np.array_equal(got["h1"], v[0]) and np.array_equal(got["h3"], v[2])
        assert s.cached_embeddings("other-model", ["h1"]) == {}


def test_a_second_writer_process_gets_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "t.duckdb"
    with TicketStore(db, schema=SUPPORT) as s:
        s.upsert([tk(1)])
        code = (
            "import sys\nfrom ticketsearch.index_data.store import TicketStore\n"
            "from ticketsearch.errors import StoreLockedError\n"
            f"try:\n    TicketStore({str(db)!r})\nexcept StoreLockedError as e:\n    print(e); sys.exit(3)\n"
        )
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert res.returncode == 3, res.stderr
        assert "another process" in res.stdout
        assert s.count() == 1


def test_failed_upsert_rolls_back(tmp_path: Path) -> None:
    with TicketStore(tmp_path / "t.duckdb", schema=SUPPORT) as s:
        s.upsert([tk(1)])
        bad = tk(2)
        bad.values["affected_count"] = "not a number"  # bypasses validation: the write must fail whole
        with pytest.raises(ValueError):  # pyarrow.ArrowInvalid: the column cannot take the string
            s.upsert([tk(3), bad])
        assert s.count() == 1 and s.change_seq == 1
    with TicketStore(tmp_path / "t.duckdb", read_only=True) as ro:
        with pytest.raises(StoreError, match="read-only"):
            ro.upsert([tk(4)])


def test_writes_log_their_row_ids_for_replay(tmp_path) -> None:
    import threading
    from datetime import datetime

    from ticketsearch.index_data.records import Ticket
    from ticketsearch.index_data.schema import load_schema
    from ticketsearch.index_data.store import TicketStore

    def t(i: str) -> Ticket:
        return Ticket(id=i, title=f"t {i}", body="b", created=datetime(2025, 1, 1), duplicate_of=None, values={},
                      raw_fields={})

    with TicketStore(tmp_path / "s.duckdb", schema=load_schema("support")) as store:
        r1 = store.upsert([t("A"), t("B")])
        assert r1.row_ids == [0, 1] and r1.ids == ["A", "B"]
        seq1 = store.change_seq
        store.upsert([t("B"), t("C")])
        store.delete(["A"])
        assert store.changed_since(0).tolist() == [0, 1, 2]
        assert store.changed_since(seq1).tolist() == [0, 1, 2]  # B updated, C new, A deleted
        assert store.changed_since(store.change_seq).tolist() == []
        store.prune_changes(seq1)
        assert store.changed_since(0).tolist() == [0, 1, 2]
        store.prune_changes(store.change_seq)
        assert store.changed_since(0).tolist() == []
        assert store.row_ids().tolist() == [1, 2]
        # each thread reads through its own cursor
        seen: list[int] = []
        threads = [threading.Thread(target=lambda: seen.append(store.count())) for _ in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert seen == [2, 2, 2, 2]


def test_recency_from_memory_equals_the_sql_order_and_follows_writes(tmp_path: Path) -> None:
    """Unfiltered recency comes from sorted arrays in memory; it must equal the SQL ranking (newest first,
    ties by row id), honour before/after/exclusions, and see every write."""
    def sql(s: TicketStore, limit: int, before=None, after=None, exclude=()) -> list[int]:
        where, params = s.filter_sql({}, before, after)
        if exclude:
            where.append("id NOT IN (SELECT unnest(?))")
            params.append(list(exclude))
        q = "SELECT row_id FROM tickets" + (" WHERE " + " AND ".join(where) if where else "")
        rows = s.con.execute(q + " ORDER BY created DESC, row_id DESC LIMIT ?", [*params, limit]).fetchall()
        return [r[0] for r in rows]

    with TicketStore(tmp_path / "t.duckdb", schema=SUPPORT) as s:
        twins = [normalize_row(SUPPORT, {"id": f"T-{i}", "title": "twin", "body": "b",
                                         "created": f"2024-01-{i:02d}T00:00:00Z"}, i) for i in range(1, 6)]
        s.upsert([tk(i) for i in range(1, 21)] + twins)  # days 1-5 twice: ties go by row id
        cases = [(5, None, None, ()), (30, None, None, ()), (4, datetime(2024, 1, 10), None, ()),
                 (10, datetime(2024, 1, 10), datetime(2024, 1, 3), ()), (3, None, None, ("S-20", "S-19")),
                 (6, datetime(2024, 1, 6), None, ("S-3",)), (5, datetime(2023, 1, 1), None, ())]
        for limit, before, after, exclude in cases:
            got = s.recent_row_ids(limit, before=before, after=after, exclude_ids=exclude).tolist()
            assert got == sql(s, limit, before, after, exclude), (limit, before, after, exclude)
        newest = s.recent_row_ids(1).tolist()
        s.upsert([tk(28)])  # a newer ticket
        assert s.recent_row_ids(1).tolist() != newest == sql(s, 2)[1:]
        s.delete(["S-28"])
        assert s.recent_row_ids(1).tolist() == newest


def test_known_values_most_frequent_first_for_single_and_multi_fields(tmp_path: Path) -> None:
    jira = load_schema("jira")
    rows = [{"id": f"A-{i}", "title": "t", "created": f"2015-01-0{i}",
             "fields": {"project": p, "components": c}}
            for i, (p, c) in enumerate([("HDFS", ["x", "y"]), ("YARN", ["y"]), ("HDFS", []), ("HDFS", ["z", "y"])], 1)]
    with TicketStore(tmp_path / "t.duckdb", schema=jira) as s:
        s.upsert([normalize_row(jira, r, i) for i, r in enumerate(rows, 1)])
        assert s.known_values("project") == ["HDFS", "YARN"]
        assert s.known_values("components") == ["y", "x", "z"]  # 3, then the ties by value
        assert s.known_values("components", limit=1) == ["y"]
        assert s.bodies(["A-1", "gone"]) == {"A-1": ""}


READS = {  # every read of the store, a reader stopping early where it streams
    "link_count": lambda s: s.link_count(),
    "count": lambda s: s.count(),
    "duplicate_links": lambda s: s.duplicate_links(),
    "eval_rows": lambda s: s.eval_rows(),
    "newest_titles": lambda s: s.newest_titles(1),
    "newest_created": lambda s: s.newest_created(),
    "get": lambda s: s.get("S-1"),
    "known_values": lambda s: s.known_values("product"),
    "changed_since": lambda s: s.changed_since(0),
    "row_ids": lambda s: s.row_ids(),
    "iter_index_rows, stopped": lambda s: next(s.iter_index_rows(batch=1)),
    "field_rows, stopped": lambda s: next(s.field_rows()),
}


@pytest.mark.parametrize("read", list(READS))
def test_a_read_leaves_the_connection_ready_for_a_write(tmp_path: Path, read: str) -> None:
    # DuckDB 2 refuses a connection's next work while a result of it is unfinished: a `fetchone` of the links'
    # count (the train route's check) made the next ticket write on that service thread answer 500
    with TicketStore(tmp_path / "t.duckdb", schema=SUPPORT) as s:
        s.upsert([tk(1), tk(2), tk(3)])
        READS[read](s)
        assert s.cached_embeddings("m", ["h1"]) == {}
        assert s.upsert([tk(4)]).inserted == 1


def versioned(i: int, title: str, updated: str | None):
    raw = {"id": f"S-{i}", "title": title, "body": "b", "created": "2024-01-01T00:00:00Z",
           "fields": {"product": "A", "category": "high"}, **({"updated": updated} if updated else {})}
    return normalize_row(SUPPORT, raw, i)


def test_a_write_applies_only_over_an_older_version(tmp_path: Path) -> None:
    with TicketStore(tmp_path / "t.duckdb", schema=SUPPORT) as s:
        assert s.upsert([versioned(1, "v2", "2024-02-02T00:00:00Z")]).inserted == 1
        for title, when in (("v1", "2024-02-01T00:00:00Z"), ("v2 again", "2024-02-02T00:00:00Z"),
                            ("v1 in +01:00", "2024-02-02T00:30:00+01:00")):  # older, equal, older in another zone
            res = s.upsert([versioned(1, title, when)])
            assert (res.inserted, res.updated, res.stale, res.ids) == (0, 0, ["S-1"], [])
            assert s.get("S-1").title == "v2"
        seq = s.change_seq
        res = s.upsert([versioned(1, "v3", "2024-02-03T00:00:00Z"), versioned(2, "new", "2024-01-01T00:00:00Z")])
        assert (res.updated, res.inserted, res.stale, res.change_seq) == (1, 1, [], seq + 1)
        assert s.upsert([versioned(1, "unversioned", None)]).updated == 1  # no version given: always written
        assert s.upsert([versioned(1, "v2 late", "2024-02-02T12:00:00Z")]).stale == ["S-1"]  # v3's version stays
        assert s.get("S-1").title == "unversioned"
        s.delete(["S-1"])
        assert s.upsert([versioned(1, "resurrected", "2024-02-02T12:00:00Z")]).stale == ["S-1"]
        with pytest.raises(NotFoundError):
            s.get("S-1")
        assert s.upsert([versioned(1, "re-filed", "2024-03-01T00:00:00Z")]).inserted == 1


def test_a_batch_names_its_repeated_ids(tmp_path: Path) -> None:
    with TicketStore(tmp_path / "t.duckdb", schema=SUPPORT) as s:
        res = s.upsert([tk(1, "first"), tk(2), tk(1, "second"), tk(1, "third")])
        assert (res.inserted, res.repeated) == (2, ["S-1"]) and s.get("S-1").title == "third 1"


def test_hit_rows_follow_every_write_even_one_committed_during_a_read(tmp_path: Path) -> None:
    """Search hits' rows (`get_rows(with_body=False)`) are kept between searches: an update, a delete and a
    write that commits while a read is in flight are all seen by the next read, never an older copy."""
    with TicketStore(tmp_path / "t.duckdb", schema=SUPPORT) as s:
        s.upsert([tk(i) for i in range(1, 6)])
        rows = [s.get(f"S-{i}").row_id for i in range(1, 6)]
        assert [t.title for t in s.get_rows(rows, with_body=False)] == [f"t {i}" for i in range(1, 6)]
        assert s.get_rows(rows[:2], with_body=False)[0] is s.get_rows(rows[:2], with_body=False)[0]  # kept
        s.upsert([tk(2, title="changed")])
        s.delete(["S-4"])
        got = s.get_rows(rows, with_body=False)
        assert [t.title for t in got] == ["t 1", "changed 2", "t 3", "t 5"] and all(t.body == "" for t in got)
        assert s.get_rows(rows[:1], with_body=True)[0].body == "b"  # bodies are read, never kept

        # a write committed while a read is in flight: what that read fetched (the old row) must not be kept
        read = s._read_rows
        stale: dict[str, bool] = {"written": False}

        def read_then_write(ids, with_body):  # noqa: ANN001, ANN202
            out = read(ids, with_body)
            if not stale["written"]:
                stale["written"] = True
                s.upsert([tk(3, title="renamed")])
            return out

        s.upsert([tk(1)])  # any write: nothing kept is valid after it, so the next read goes to DuckDB
        s._read_rows = read_then_write  # type: ignore[method-assign]
        first = s.get_rows([rows[2]], with_body=False)
        assert stale["written"] and first[0].title == "t 3"  # that read began before the write
        s._read_rows = read  # type: ignore[method-assign]
        assert s.get_rows([rows[2]], with_body=False)[0].title == "renamed 3"
