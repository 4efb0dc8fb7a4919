from __future__ import annotations

import csv
import gzip
import json
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ticketsearch.errors import IngestError, RowError
from ticketsearch.index_data.records import Ticket, parse_datetime, read_tickets, ticket_text
from ticketsearch.index_data.schema import load_schema

JIRA = load_schema("jira")
SUPPORT = load_schema("support")


def jira_row(**over) -> dict:
    row = {
        "id": "HADOOP-1", "title": "NPE in NameNode", "body": "Stack trace here",
        "created": "2015-03-01T10:00:00+02:00",
        "duplicate_of": None,
        "fields": {"project": "HADOOP", "issuetype": "Bug", "priority": "Major", "components": ["hdfs"],
                   "versions": ["2.6.0"], "labels": [], "status": "Closed", "resolution": "Duplicate"},
        "links": [{"type": "Duplicate", "key": "HADOOP-2"}],
    }
    row.update(over)
    return row


def test_nested_fields_are_read_and_created_is_utc(tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl.gz"
    with gzip.open(p, "wt") as fh:
        fh.write(json.dumps(jira_row()) + "\n")
    [t] = list(read_tickets(p, JIRA))
    assert isinstance(t, Ticket)
    assert t.created == datetime(2015, 3, 1, 8, 0, 0)
    assert t.values["project"] == "HADOOP" and t.values["components"] == ["hdfs"]
    assert "resolution" not in t.values  # leaky fields are never features...
    assert t.raw_fields["resolution"] == "Duplicate"  # ...but nothing given is lost
    assert ticket_text(JIRA, t.title, t.body) == "NPE in NameNode\nStack trace here"


def test_flat_csv_columns(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    with open(p, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "title", "body", "created", "category", "affected_count", "product"])
        w.writerow(["S-1", "Login broken", "", "2024-05-01", "high", "12", "SSO"])
        w.writerow(["S-2", "Billing", "double charge", "2024-05-02T10:00:00Z", "low", "not-a-number", "Pay"])
    out = list(read_tickets(p, SUPPORT))
    assert isinstance(out[0], Ticket) and out[0].values["affected_count"] == 12.0
    assert out[0].values["submitted"] == datetime(2024, 5, 1)  # date field sourced from `created`
    assert isinstance(out[1], RowError) and out[1].line == 3 and "affected_count" in out[1].reason


def test_parquet(tmp_path: Path) -> None:
    p = tmp_path / "t.parquet"
    pq.write_table(
        pa.table({"id": ["P-1"], "title": ["t"], "body": ["b"], "created": ["2020-01-01T00:00:00Z"],
                  "components": [["a", "b"]], "project": ["HIVE"]}),
        p,
    )
    [t] = list(read_tickets(p, JIRA))
    assert t.values["components"] == ["a", "b"] and t.values["project"] == "HIVE"


@pytest.mark.parametrize(
    "row, reason",
    [
        ({"id": None}, "missing id"),
        ({"id": "  "}, "missing id"),
        ({"created": "yesterday"}, "not an ISO-8601 date"),
        ({"created": None}, "created: Field required"),  # the API's message
        ({"title": 5}, "title: Input should be a valid string"),  # the API's message (requests.TicketIn)
        ({"title": "", "body": "  "}, "title: must not be empty or whitespace only"),
        ({"fields": {"components": "a", "priority": ["x"]}}, "priority"),
        ({"fields": {"components": [{"a": 1}]}}, "components"),
        ({"duplicate_of": "HADOOP-1"}, "itself"),
        ({"fields": "nope"}, "fields must be an object"),
    ],
)
def test_bad_rows_name_line_and_reason(tmp_path: Path, row: dict, reason: str) -> None:
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps(jira_row(id="OK-1")) + "\n" + json.dumps(jira_row(**row)) + "\n")
    out = list(read_tickets(p, JIRA))
    assert isinstance(out[0], Ticket)
    assert isinstance(out[1], RowError), out[1]
    assert out[1].line == 2 and reason in str(out[1])


def test_invalid_json_line(tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps(jira_row()) + "\n\n{not json\n")
    out = list(read_tickets(p, JIRA))
    assert isinstance(out[1], RowError) and out[1].line == 3 and "invalid JSON" in str(out[1])


def test_unknown_file_type_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "x.xml").write_text("<x/>")
    with pytest.raises(IngestError, match="unknown file type"):
        list(read_tickets(tmp_path / "x.xml", JIRA))
    with pytest.raises(IngestError, match="no such file"):
        list(read_tickets(tmp_path / "x.jsonl", JIRA))


def test_parse_datetime_variants() -> None:
    assert parse_datetime("2024-01-01") == datetime(2024, 1, 1)
    assert parse_datetime("2024-01-01T05:00:00-05:00") == datetime(2024, 1, 1, 10)
    with pytest.raises(ValueError):
        parse_datetime("01/02/2024")


def test_a_row_has_the_api_limits(tmp_path: Path) -> None:
    """File rows are read into the API's own ticket model (requests.TicketIn): its limits and messages."""
    from ticketsearch.requests import MAX_BODY, MAX_TITLE, TicketIn
    from ticketsearch.service.schemas import TicketIn as ApiTicket

    assert ApiTicket is TicketIn
    rows = [jira_row(id="OK-1", body="b" * MAX_BODY), jira_row(id="LONG-1", body="b" * (MAX_BODY + 1)),
            jira_row(id="LONG-2", title="t" * (MAX_TITLE + 1)), jira_row(id="NEW-1", fields={"colour": "red"})]
    p = tmp_path / "t.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ok, long_body, long_title, unknown = list(read_tickets(p, JIRA))
    assert isinstance(ok, Ticket) and len(ok.body) == MAX_BODY
    assert isinstance(long_body, RowError) and long_body.field == "body" and f"at most {MAX_BODY}" in long_body.reason
    assert isinstance(long_title, RowError) and long_title.field == "title" and long_title.line == 3
    assert isinstance(unknown, RowError) and unknown.field == "fields.colour"
    assert unknown.detail.startswith("unknown field 'colour'; allowed: project, issuetype")  # the API's words


def test_a_line_with_a_byte_that_is_not_utf8_is_refused_with_its_line(tmp_path: Path) -> None:
    """One bad byte costs its row, named by line (JSON Lines, gzipped or not, and CSV), never the file."""
    rows = [{"id": f"U-{i}", "title": f"ticket {i}", "body": "some text", "created": "2024-01-02"} for i in range(5)]
    lines = [json.dumps(r).encode() for r in rows]
    lines[2] = lines[2].replace(b"some text", b"some \xff text")
    (tmp_path / "t.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (tmp_path / "t.jsonl.gz").write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    csv_rows = ["id,title,body,created"] + [f"U-{i},ticket {i},some text,2024-01-02" for i in range(5)]
    data = "\n".join(csv_rows).encode() + b"\n"
    (tmp_path / "t.csv").write_bytes(data.replace(b"U-2,ticket 2,some", b"U-2,ticket 2,\xfesome"))
    schema = load_schema("support")
    for name, line in (("t.jsonl", 3), ("t.jsonl.gz", 3), ("t.csv", 4)):
        got = list(read_tickets(tmp_path / name, schema))
        errors = [g for g in got if isinstance(g, RowError)]
        assert [t.id for t in got if not isinstance(t, RowError)] == ["U-0", "U-1", "U-3", "U-4"], name
        assert len(errors) == 1 and errors[0].line == line and "not UTF-8 text: byte 0x" in str(errors[0]), name
