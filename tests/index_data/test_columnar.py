"""The columnar ingest fast path stores exactly what the per-row path stores, and hands every file it cannot
prove clean to the per-row path (which names the bad rows)."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest

from ticketsearch.index_data.columnar import MIN_ROWS, read_columnar
from ticketsearch.index_data.ingest import ingest_file
from ticketsearch.index_data.schema import load_schema
from ticketsearch.index_data.store import TicketStore

from ..demo_rows import generate

SUPPORT = load_schema("support")
JIRA = load_schema("jira")


def write(path: Path, rows: list[dict], blank_lines: bool = False) -> Path:
    text = "".join(json.dumps(r) + ("\n\n  \n" if blank_lines and i % 100 == 0 else "\n") for i, r in enumerate(rows))
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def stored(path: Path, schema, columnar: bool, tmp: Path) -> tuple[list[tuple], object]:
    db = tmp / f"{path.name}.{columnar}.duckdb"
    with TicketStore(db, schema=schema) as store:
        report = ingest_file(store, path, progress=False, columnar=columnar)
        rows = store.con.execute(
            "SELECT * EXCLUDE (raw_fields), raw_fields::VARCHAR FROM tickets ORDER BY row_id"
        ).fetchall()
    # raw fields are compared as JSON (the two paths format the same object differently)
    return [(*r[:-1], json.loads(r[-1])) for r in rows], report


def jira_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    zones = ["Z", "+00:00", "+02:00", "-07:30", ""]
    out = []
    for i in range(n):
        day = f"2015-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        created = f"{day}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
        if i % 7 == 0:
            created += f".{rng.randint(0, 999999):06d}"
        created += zones[i % len(zones)]
        if i % 11 == 0:
            created = created[:10]  # a date alone
        out.append({
            "id": f"HADOOP-{i + 1}", "title": f"NPE number {i} in NameNode" if i % 13 else f"  NPE {i}, spaced  ",
            "body": None if i % 5 == 0 and i % 13 else "Stack trace here\n\tat org.apache.Foo", "created": created,
            "duplicate_of": f"HADOOP-{i}" if i % 9 == 0 and i else None,
            "fields": {"project": "HADOOP", "issuetype": rng.choice(["Bug", "Improvement", None]),
                       "priority": rng.choice(["Major", "Minor", "  "]),
                       "components": rng.sample(["hdfs", "yarn", "mapreduce", "common"], rng.randint(0, 3)),
                       "versions": [] if i % 3 else ["2.6.0"], "labels": None if i % 4 else ["newbie"],
                       "status": "Closed", "resolution": rng.choice(["Duplicate", "Fixed", None])},
            "links": [{"type": "Duplicate", "key": "HADOOP-2"}] if i % 10 == 0 else [],
        })
    return out


@pytest.mark.parametrize("name", ["demo.jsonl", "demo.jsonl.gz"])
def test_demo_tickets_take_the_fast_path_and_store_what_the_row_path_stores(tmp_path: Path, name: str) -> None:
    rows = generate(MIN_ROWS + 200, seed=5)
    rows[10]["id"] = rows[3]["id"]  # a repeated id: the last occurrence wins, in the first one's place
    path = write(tmp_path / name, rows, blank_lines=True)
    assert read_columnar(path, SUPPORT) is not None
    fast, rep_fast = stored(path, SUPPORT, True, tmp_path)
    slow, rep_slow = stored(path, SUPPORT, False, tmp_path)
    assert len(fast) == len(rows) - 1 and rep_fast.rows_read == rep_slow.rows_read == len(rows)
    assert (rep_fast.inserted, rep_fast.updated) == (rep_slow.inserted, rep_slow.updated)
    assert fast == slow


def test_jira_rows_with_lists_offsets_and_nulls_agree(tmp_path: Path) -> None:
    path = write(tmp_path / "jira.jsonl", jira_rows(MIN_ROWS + 50))
    assert read_columnar(path, JIRA) is not None
    fast, _ = stored(path, JIRA, True, tmp_path)
    slow, _ = stored(path, JIRA, False, tmp_path)
    assert fast == slow


def test_a_second_ingest_updates_in_place_on_both_paths(tmp_path: Path) -> None:
    rows = generate(MIN_ROWS, seed=6)
    first = write(tmp_path / "a.jsonl", rows)
    for r in rows[::2]:
        r["title"] += " (edited)"
    second = write(tmp_path / "b.jsonl", rows[::-1])  # new order, half changed
    results = []
    for columnar in (True, False):
        with TicketStore(tmp_path / f"u{columnar}.duckdb", schema=SUPPORT) as store:
            ingest_file(store, first, progress=False, columnar=columnar)
            rep = ingest_file(store, second, progress=False, columnar=columnar)
            assert (rep.inserted, rep.updated) == (0, len(rows))
            results.append(
                store.con.execute("SELECT row_id, id, title, text_hash FROM tickets ORDER BY row_id").fetchall()
            )
    assert results[0] == results[1]


BAD_ROWS = {
    "missing id": lambda r: r.pop("id"),
    "id with spaces": lambda r: r.update(id=" " + r["id"]),
    "no text": lambda r: r.update(title=" ", body=""),
    "date in another shape": lambda r: r.update(created="01/02/2024"),
    "impossible date": lambda r: r.update(created="2024-02-30T10:00:00Z"),
    "duplicate of itself": lambda r: r.update(duplicate_of=r["id"]),
    "numeric as text": lambda r: r["fields"].update(affected_count="12"),
    "negative log1p value": lambda r: r["fields"].update(affected_count=-3),
    "categorical as number": lambda r: r["fields"].update(product=7),
    "fields not an object": lambda r: r.update(fields="product=x"),
    "flat field beside fields": lambda r: r.update(channel="email"),
    # the row path's own rules, which the fast path once read more leniently (it stored what a row refuses)
    "duplicate_of of dots": lambda r: r.update(duplicate_of=".."),
    "duplicate_of with a control character": lambda r: r.update(duplicate_of="SUP-1\x01"),
    "duplicate_of too long": lambda r: r.update(duplicate_of="D" * 257),
    "title of control characters": lambda r: r.update(title="\x00\x01"),
    "title of a no-break space": lambda r: r.update(title="\u00a0\u3000"),
    "id with a no-break space": lambda r: r.update(id=r["id"] + "\u00a0"),
    "year 0000": lambda r: r.update(created="0000-06-01T00:00:00"),
    "year 9999 west of UTC": lambda r: r.update(created="9999-12-31T23:00:00-05:00"),
    "year 1 east of UTC": lambda r: r.update(created="0001-01-01T00:30:00+01:00"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_files_the_fast_path_cannot_prove_clean_go_row_by_row(tmp_path: Path, case: str) -> None:
    rows = generate(MIN_ROWS + 10, seed=7)
    BAD_ROWS[case](rows[500])
    path = write(tmp_path / "t.jsonl", rows)
    assert read_columnar(path, SUPPORT) is None
    fast, rep_fast = stored(path, SUPPORT, True, tmp_path)
    slow, rep_slow = stored(path, SUPPORT, False, tmp_path)
    assert fast == slow  # the default run fell back to the per-row path
    assert [(e.line, str(e)) for e in rep_fast.errors] == [(e.line, str(e)) for e in rep_slow.errors]


def test_repeated_list_items_and_malformed_lines_fall_back(tmp_path: Path) -> None:
    rows = jira_rows(MIN_ROWS + 5)
    rows[20]["fields"]["components"] = ["hdfs", "hdfs"]
    path = write(tmp_path / "j.jsonl", rows)
    assert read_columnar(path, JIRA) is None
    for name, value in (("environment", ["linux", None]), ("s" * 65, "x")):  # a kept list's null, a long name
        rows = jira_rows(MIN_ROWS + 5)
        for r in rows:
            r["fields"]["environment"] = ["linux"]  # a list in every row: no null list to send it row by row
        rows[30]["fields"][name] = value
        path = write(tmp_path / f"k{len(name)}.jsonl", rows)
        assert read_columnar(path, JIRA) is None, name
        fast, rep_fast = stored(path, JIRA, True, tmp_path)
        slow, rep_slow = stored(path, JIRA, False, tmp_path)
        assert fast == slow and [str(e) for e in rep_fast.errors] == [str(e) for e in rep_slow.errors] != []
    broken = tmp_path / "broken.jsonl"
    broken.write_text(write(tmp_path / "ok.jsonl", generate(MIN_ROWS, seed=8)).read_text() + "{not json\n")
    assert read_columnar(broken, SUPPORT) is None
    with TicketStore(tmp_path / "b.duckdb", schema=SUPPORT) as store:
        rep = ingest_file(store, broken, progress=False)
    assert rep.inserted == MIN_ROWS and len(rep.errors) == 1 and rep.errors[0].line == MIN_ROWS + 1


def test_small_files_and_other_formats_use_the_row_path(tmp_path: Path) -> None:
    assert read_columnar(write(tmp_path / "s.jsonl", generate(50, seed=9)), SUPPORT) is None
    csv = tmp_path / "t.csv"
    csv.write_text("id,title,created\nA-1,hello,2024-01-01\n")
    assert read_columnar(csv, SUPPORT) is None


def test_many_chunks_give_the_same_store_and_a_late_bad_row_writes_nothing(tmp_path: Path, monkeypatch) -> None:
    import ticketsearch.index_data.columnar as columnar

    monkeypatch.setattr(columnar, "CHUNK_BYTES", 40_000)  # about 60 rows a chunk
    rows = jira_rows(MIN_ROWS + 300, seed=3)
    for r in rows[:400]:
        r["fields"]["labels"] = None  # whole chunks without a value: their column type is inferred as null
    rows[900]["id"] = rows[5]["id"]  # repeated across chunks: the last occurrence wins, in the first one's place
    path = write(tmp_path / "many.jsonl", rows)
    assert len(list(columnar.iter_columnar(path, JIRA))) > 10
    fast, rep_fast = stored(path, JIRA, True, tmp_path)
    slow, rep_slow = stored(path, JIRA, False, tmp_path)
    assert fast == slow and (rep_fast.inserted, rep_fast.updated) == (rep_slow.inserted, rep_slow.updated)

    rows[-3]["created"] = "yesterday"  # in the last chunk: the earlier chunks were already written, then rolled back
    bad = write(tmp_path / "bad.jsonl", rows)
    fast, rep_fast = stored(bad, JIRA, True, tmp_path)
    slow, rep_slow = stored(bad, JIRA, False, tmp_path)
    assert fast == slow and len(rep_fast.errors) == 1 and rep_fast.inserted == len(fast)
