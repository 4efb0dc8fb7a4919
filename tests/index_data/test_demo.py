from __future__ import annotations

from pathlib import Path

from ticketsearch.index_data.demo import generate, write_demo
from ticketsearch.index_data.ingest import ingest_file
from ticketsearch.index_data.schema import load_schema
from ticketsearch.index_data.store import TicketStore


def test_generation_is_seeded_and_sorted() -> None:
    a, b, c = generate(200, seed=1), generate(200, seed=1), generate(200, seed=2)
    assert a == b and a != c
    assert [r["created"] for r in a] == sorted(r["created"] for r in a)
    assert len({r["id"] for r in a}) == 200


def test_duplicates_point_to_earlier_masters_in_other_words() -> None:
    rows = generate(1000, seed=3)
    by_id = {r["id"]: r for r in rows}
    dups = [r for r in rows if r["duplicate_of"]]
    assert 0.1 < len(dups) / len(rows) < 0.4
    reworded = 0
    for d in dups:
        m = by_id[d["duplicate_of"]]
        assert m["duplicate_of"] is None and m["created"] <= d["created"]
        assert m["fields"]["product"] == d["fields"]["product"]
        reworded += m["title"] != d["title"]
    # about half of the later reports copy the first one's subject line; the rest are worded afresh
    assert 0.3 < reworded / len(dups) < 0.8, reworded / len(dups)


def test_demo_file_ingests_cleanly_with_support_schema(tmp_path: Path) -> None:
    p = tmp_path / "demo.jsonl.gz"
    assert write_demo(p, n=150, seed=0) == 150
    with TicketStore(tmp_path / "t.duckdb", schema=load_schema("support")) as s:
        rep = ingest_file(s, p, progress=False)
        assert rep.errors == [] and s.count() == 150
