"""Reading and validating an input as a Ray dataset (index_data/ray_read.py, a local Ray instance): the same
tickets and the same errors, in the same order and with the same line numbers, as the local readers, for each
input format; and an ingest on Ray writes the same store."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ticketsearch.errors import RowError
from ticketsearch.index_data.records import read_tickets
from ticketsearch.index_data.schema import load_schema
from ticketsearch.index_data.trackers import read_tracker

from ..demo_rows import generate

pytestmark = pytest.mark.ray
FIX = Path(__file__).parent / "fixtures"


def messy_rows() -> list[dict]:
    rows = generate(700, seed=5)  # more than one validation batch
    rows[3]["id"] = ""  # missing id
    rows[10]["created"] = "not a date"
    rows[11]["duplicate_of"] = rows[11]["id"]  # self-duplicate
    rows[650]["title"] = 42  # a number for a title
    return rows


def same(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert type(x) is type(y)
        if isinstance(x, RowError):
            assert (x.line, x.where, x.reason, x.ticket_id, str(x)) == (y.line, y.where, y.reason, y.ticket_id, str(y))
        else:
            assert x == y


def test_each_format_reads_on_ray_as_it_reads_here(local_ray, tmp_path: Path) -> None:  # noqa: ANN001
    from ticketsearch.index_data.ray_read import read_on_ray

    support, rows = load_schema("support"), messy_rows()
    lines = [json.dumps(r) for r in rows]
    lines[5] = "{not json"
    lines.insert(20, "")  # a blank line: skipped, but counted
    jsonl = tmp_path / "t.jsonl.gz"
    with gzip.open(jsonl, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    flat = [{k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in r.items() if k != "fields"}
            | {k: v for k, v in r.get("fields", {}).items() if not isinstance(v, list)} for r in rows[:300]]
    flat[7]["body"] = "a body\nover two lines, quoted"
    cols = sorted({k for r in flat for k in r})
    with open(tmp_path / "t.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, cols)
        w.writeheader()
        w.writerows(flat)
        fh.write(",".join(["x"] * (len(cols) + 2)) + "\n")  # more values than header columns
        w.writerow(flat[0] | {"id": "CSV-LAST"})
    pq.write_table(pa.Table.from_pylist([{k: v for k, v in r.items() if k != "fields"} for r in rows[:400]]),
                   tmp_path / "t.parquet", row_group_size=100)

    for path in (jsonl, tmp_path / "t.csv", tmp_path / "t.parquet"):
        local = list(read_tickets(path, support))
        assert sum(isinstance(x, RowError) for x in local) >= (1 if path.suffix == ".parquet" else 2), path
        same(list(read_on_ray(path, support)), local)

    jira_dir = tmp_path / "jira"
    shutil.copytree(FIX / "jira", jira_dir)
    (jira_dir / "page-3.json").write_text(json.dumps({"issues": [{"key": "BAD-1"}, 7]}))  # two malformed issues
    for fmt, path, schema in (("jira", jira_dir, "jira"), ("github", FIX / "github" / "issues.json", "github"),
                              ("zendesk", FIX / "zendesk", "support")):
        local = list(read_tracker(path, fmt, load_schema(schema)))
        assert any(isinstance(x, RowError) for x in local) or fmt != "jira"
        same(list(read_on_ray(path, load_schema(schema), fmt)), local)
