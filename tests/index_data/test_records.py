from __future__ import annotations

import csv
import gzip
import json
import tomllib
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ticketsearch.errors import IngestError, RowError
from ticketsearch.index_data.records import (
    Ticket,
    coerce_value,
    csv_records,
    detect_format,
    iter_raw,
    json_line,
    last_of_each,
    normalize_row,
    not_utf8,
    parse_datetime,
    read_tickets,
    text_hash,
    ticket_text,
)
from ticketsearch.index_data.schema import FieldSpec, Schema, load_schema
from ticketsearch.requests import CONTROL_CHARS, ID_PATTERN, MAX_ID_LEN, SELF_DUPLICATE

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


# ---- the rules of ticket validation, one by one (the tests `scripts/mutate.py --module records` runs) ------------



def toml_schema(*fields: tuple[str, ...], keep: tuple[str, ...] = ()) -> Schema:
    """A schema read from TOML, as a schema file is: its strings are not the interned literals of this file
    (`kind is "multi"` would hold for literals, never for a schema read from a file). Each field: name, kind[,
    source[, transform]]."""
    lines = ['name = "s"', "keep = [" + ", ".join(f'"{k}"' for k in keep) + "]"]
    for name, kind, *rest in fields:
        lines += ["[[fields]]", f'name = "{name}"', f'kind = "{kind}"']
        lines += [f'source = "{rest[0]}"'] if rest else []
        lines += [f'transform = "{rest[1]}"'] if len(rest) > 1 else []
    return Schema.from_dict(tomllib.loads("\n".join(lines)))


CAT, MULTI, NUM, DATE = toml_schema(("product", "categorical"), ("tags", "multi"), ("count", "numeric"),
                                    ("due", "date")).fields
LOG = toml_schema(("count", "numeric", "count", "log1p")).fields[0]


def refused_row(schema: Schema, raw: object, line: int = 7, tracker: bool = False) -> RowError:
    with pytest.raises(RowError) as info:
        normalize_row(schema, raw, line, tracker)
    assert info.value.line == line
    return info.value


def a_ticket(tid: str, title: str = "t") -> Ticket:
    return Ticket(id=tid, title=title, body="", created=datetime(2024, 1, 1))


def test_the_id_rule_is_the_requests_one() -> None:
    from ticketsearch import requests

    assert (ID_PATTERN, MAX_ID_LEN, CONTROL_CHARS) == (requests.ID_PATTERN, 256, requests.CONTROL_CHARS)


def test_the_last_of_an_id_given_twice_is_written_in_the_place_of_its_first() -> None:
    a1, b, a2, c, b2, b3 = a_ticket("A", "1"), a_ticket("B"), a_ticket("A", "2"), a_ticket("C"), a_ticket("B"), \
        a_ticket("B", "3")
    kept, repeated = last_of_each([a1, b, a2, c, b2, b3])
    assert [(t.id, t.title) for t in kept] == [("A", "2"), ("B", "3"), ("C", "t")]
    assert repeated == ["A", "B"]
    assert last_of_each([a1, b]) == ([a1, b], [])
    assert last_of_each([]) == ([], [])


def test_ticket_text_joins_the_schemas_text_fields() -> None:
    usual = Schema(name="u", text_fields=("title", "body"))
    assert ticket_text(usual, "Title", "Body") == "Title\nBody"
    assert ticket_text(usual, " Title ", " Body ") == "Title \n Body"
    assert ticket_text(usual, "Title", "") == "Title" and ticket_text(usual, "", " Body ") == "Body"
    assert ticket_text(usual, None, None) == "" and ticket_text(usual, "  ", "") == ""  # type: ignore[arg-type]
    reverse = Schema(name="r", text_fields=("body", "title"))
    assert ticket_text(reverse, "Title", "Body") == "Body\nTitle"
    assert ticket_text(reverse, "Title", "") == "Title" and ticket_text(reverse, None, "B") == "B"  # type: ignore[arg-type]
    title_only = Schema(name="t", text_fields=("title",))
    assert ticket_text(title_only, " Title ", "Body") == "Title"
    assert a_ticket("A", "Only").text(usual) == "Only"


def test_text_hash_is_a_128_bit_blake2b_of_the_utf8_text() -> None:
    import hashlib

    h = text_hash("héllo")
    assert h == hashlib.blake2b("héllo".encode(), digest_size=16).hexdigest() and len(h) == 32
    assert text_hash("héllo") == h and text_hash("hello") != h


@pytest.mark.parametrize("spec, value, expected", [
    (CAT, None, None), (CAT, "", None), (CAT, "  ", None), (NUM, " ", None), (DATE, "", None), (DATE, None, None),
    (MULTI, None, None), (MULTI, "", []), (MULTI, "  ", []),
    (CAT, "a", "a"), (CAT, 5, "5"), (CAT, 2.5, "2.5"), (CAT, " a ", " a "),
    (MULTI, "a; b ;a", ["a", "b"]), (MULTI, "a", ["a"]), (MULTI, ' ["x", "y", "x"] ', ["x", "y"]),
    (MULTI, ["a", 1, 2.5, "a", ""], ["a", "1", "2.5"]), (MULTI, ("a", "b"), ["a", "b"]), (MULTI, [], []),
    (MULTI, "a;;b", ["a", "b"]), (MULTI, '{"a": 1}', ['{"a": 1}']),  # JSON only when it starts with '['
    (NUM, 3, 3.0), (NUM, "12", 12.0), (NUM, " -1.5 ", -1.5), (NUM, -1, -1.0), (LOG, 0, 0.0), (LOG, "0", 0.0),
    (LOG, 2.5, 2.5),
    (DATE, "2024-01-01T10:00:00+02:00", datetime(2024, 1, 1, 8)), (DATE, datetime(2024, 1, 1), datetime(2024, 1, 1)),
])
def test_coerce_value(spec: FieldSpec, value: object, expected: object) -> None:
    got = coerce_value(spec, value)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("spec, value, reason", [
    (CAT, True, "field 'product' must be a single value, got bool"),
    (CAT, False, "field 'product' must be a single value, got bool"),
    (CAT, ["a"], "field 'product' must be a single value, got list"),
    (CAT, {"a": 1}, "field 'product' must be a single value, got dict"),
    (CAT, float("nan"), "field 'product' must be finite"),
    (CAT, float("-inf"), "field 'product' must be finite"),
    (MULTI, "[not json", "field 'tags': invalid JSON list"),
    (MULTI, 5, "field 'tags' must be a list, got int"),
    (MULTI, "[1, [2]]", "field 'tags' must hold plain values"),
    (MULTI, ["a", None], "field 'tags' must hold plain values"),
    (MULTI, [True], "field 'tags' must hold plain values"),
    (MULTI, [{"a": 1}], "field 'tags' must hold plain values"),
    (NUM, True, "field 'count' must be a number, got a boolean"),
    (NUM, "x", "field 'count' must be a number, got 'x'"),
    (NUM, [1], "field 'count' must be a number, got list"),
    (NUM, float("inf"), "field 'count' must be finite, got inf"),
    (NUM, "nan", "field 'count' must be finite, got nan"),
    (LOG, -1, "field 'count' must be >= 0 (log1p), got -1.0"),
    (LOG, "-0.5", "field 'count' must be >= 0 (log1p), got -0.5"),
    (DATE, "soon", "field 'due': not an ISO-8601 date: 'soon'"),
    (DATE, 5, "field 'due': not an ISO-8601 date: 5"),
])
def test_coerce_value_refuses(spec: FieldSpec, value: object, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        coerce_value(spec, value)
    assert str(info.value) == reason


SUPPORTISH = toml_schema(("product", "categorical"), ("tags", "multi", "labels"),
                         ("count", "numeric", "count", "log1p"), ("submitted", "date", "created"), ("due", "date"),
                         keep=("status",))


def row(**over: object) -> dict:
    return {"id": "S-1", "title": " A title ", "body": "a body", "created": "2024-05-01T10:00:00+02:00", **over}


def test_a_valid_row_reads_into_a_ticket() -> None:
    t = normalize_row(SUPPORTISH, row(updated="2024-05-02", duplicate_of=" S-0 ", product="SSO",
                                      fields={"labels": "a;b", "count": "3", "status": "open", "due": "2024-06-01"}), 1)
    assert (t.id, t.title, t.body, t.duplicate_of) == ("S-1", " A title ", "a body", "S-0")
    assert t.created == datetime(2024, 5, 1, 8) and t.updated == datetime(2024, 5, 2)
    assert t.values == {"product": "SSO", "tags": ["a", "b"], "count": 3.0, "submitted": datetime(2024, 5, 1, 8),
                        "due": datetime(2024, 6, 1)}
    assert t.raw_fields == {"product": "SSO", "labels": "a;b", "count": "3", "status": "open", "due": "2024-06-01"}


def test_a_rows_spelling_leniency() -> None:
    t = normalize_row(SUPPORTISH, row(id=42, duplicate_of=7, updated="", body=None), 1)
    assert (t.id, t.duplicate_of, t.updated, t.body) == ("42", "7", None, "")
    assert t.values["product"] is None and t.values["tags"] is None and t.values["count"] is None
    t = normalize_row(SUPPORTISH, row(id="  S-9  ", duplicate_of="", fields={"product": "B"}, product="A"), 1)
    assert (t.id, t.duplicate_of, t.values["product"]) == ("S-9", None, "B")  # nested wins over flat
    assert refused_row(SUPPORTISH, row(duplicate_of="  ")).field == "duplicate_of"  # blank is not "" (null)


@pytest.mark.parametrize("raw, reason", [
    ([], "expected an object, got list"), ("S-1", "expected an object, got str"), (None, "expected an object"),
    (row(id=None), "missing id"), (row(id=""), "missing id"), (row(id=" \t"), "missing id"),
    (row(id=True), "missing id"), (row(id=False), "missing id"), ({"title": "t"}, "missing id"),
    (row(id=1.5), "id must be a string, got float"), (row(id=["a"]), "id must be a string, got list"),
    (row(id=".."), "an id must not be only dots"), (row(id="a\x00b"), "an id must not hold control characters"),
    (row(id="x" * 257), "id longer than 256 characters"),
])
def test_a_row_without_a_usable_id(raw: object, reason: str) -> None:
    err = refused_row(SUPPORTISH, raw)
    assert err.reason.startswith(reason) and err.ticket_id is None


def test_an_id_of_256_characters_and_a_number() -> None:
    assert normalize_row(SUPPORTISH, row(id="x" * 256), 1).id == "x" * 256
    assert normalize_row(SUPPORTISH, row(id=0), 1).id == "0"


@pytest.mark.parametrize("dup", [True, False, 1.5, ["S-0"], {"id": "S-0"}])
def test_duplicate_of_must_be_an_id_or_null(dup: object) -> None:
    err = refused_row(SUPPORTISH, row(duplicate_of=dup))
    assert err.reason == "duplicate_of must be a ticket id or null" and err.ticket_id == "S-1"


@pytest.mark.parametrize("tid, dup", [("S-1", "S-1"), ("S-1", " S-1 "), (5, 5), (5, "5"), (" 5 ", 5)])
def test_a_ticket_is_not_its_own_duplicate(tid: object, dup: object) -> None:
    err = refused_row(SUPPORTISH, row(id=tid, duplicate_of=dup))
    assert err.reason == SELF_DUPLICATE and err.field == "duplicate_of" and err.ticket_id == str(tid).strip()


def test_a_bad_duplicate_id_is_refused_by_the_id_rule() -> None:
    err = refused_row(SUPPORTISH, row(duplicate_of=".."))
    assert err.field == "duplicate_of" and err.reason.startswith("duplicate_of: ")


@pytest.mark.parametrize("nested", ["x", ["a"], 5, True])
def test_fields_must_be_an_object(nested: object) -> None:
    err = refused_row(SUPPORTISH, row(fields=nested))
    assert err.reason == "fields must be an object" and err.ticket_id == "S-1"


def test_a_row_breaking_a_request_rule_names_the_field() -> None:
    err = refused_row(SUPPORTISH, row(title="  "))
    assert err.field == "title" and err.reason == "title: must not be empty or whitespace only"
    assert err.detail == "must not be empty or whitespace only" and err.ticket_id == "S-1"
    assert str(err) == "line 7 (id 'S-1'): title: must not be empty or whitespace only"
    err = refused_row(SUPPORTISH, row(created=None))
    assert err.field == "created" and err.reason == "created: Field required"
    err = refused_row(SUPPORTISH, row(updated="later"))
    assert err.field == "updated" and "not an ISO-8601 date" in err.reason


def test_unknown_columns_are_refused_unless_a_tracker_brought_them() -> None:
    err = refused_row(SUPPORTISH, row(colour="red", fields={"size": 1}))
    assert err.field == "fields.colour" and err.ticket_id == "S-1"
    assert err.reason == ("fields.colour: unknown field 'colour'; allowed: product, tags, count, submitted, due, "
                          "labels, created, status")
    t = normalize_row(SUPPORTISH, row(colour="red", status="open", fields={"size": 1, "product": "P"}), 1,
                      tracker=True)
    assert t.raw_fields == {"status": "open", "product": "P"} and t.values["product"] == "P"
    err = refused_row(SUPPORTISH, row(fields={"count": "-1"}), tracker=True)  # a tracker's fields are still checked
    assert err.field == "fields.count"


def test_the_created_field_is_the_tickets_creation_time() -> None:
    t = normalize_row(SUPPORTISH, row(), 1)
    assert t.values["submitted"] == datetime(2024, 5, 1, 8) == t.created
    opened = toml_schema(("opened", "numeric", "created"))
    assert normalize_row(opened, row(), 1).values == {"opened": None}  # sourced from `created`, not a date: empty
    t = normalize_row(SUPPORTISH, row(fields={"submitted": "2020-01-01"}), 1)
    assert t.values["submitted"] == datetime(2020, 1, 1)  # given by its name, the field's own value


@pytest.mark.parametrize("fields, name, detail", [
    ({"product": ["a"]}, "product", "takes a single value, not a list"),
    ({"product": {"a": 1}}, "product", "must be a string, a number or a list of them, not dict"),  # TicketIn's
    ({"product": True}, "product", "must be a string, a number or a list of them, not bool"),
    ({"count": -1}, "count", "must be at least 0"),
    ({"count": "many"}, "count", "must be a number"),
    ({"count": [1]}, "count", "takes a single value, not a list"),
    ({"labels": 5}, "tags", "must be a list of strings"),
    ({"labels": ["a", 1]}, "tags", "values must be strings"),
    ({"labels": "[not json"}, "tags", "must be a list of strings"),
    ({"labels": ["t" * 2_001]}, "tags", "a value is longer than 2000 characters"),
    ({"labels": "a;" + "t" * 2_001}, "tags", "a value is longer than 2000 characters"),
    ({"product": "t" * 2_001}, "product", "a value is longer than 2000 characters"),
    ({"due": 20240601}, "due", "must be an ISO-8601 date-time string"),
    ({"due": "June"}, "due", "not an ISO-8601 date: 'June'"),
])
def test_a_field_of_the_wrong_type_names_the_field(fields: dict, name: str, detail: str) -> None:
    err = refused_row(SUPPORTISH, row(fields=fields))
    assert err.field == f"fields.{name}" and err.ticket_id == "S-1"
    assert err.reason == f"fields.{name}: {detail}" and err.detail == detail


def test_values_at_the_limits() -> None:
    t = normalize_row(SUPPORTISH, row(fields={"labels": ["t" * 2_000], "product": "p" * 2_000, "count": 0}), 1)
    assert t.values["tags"] == ["t" * 2_000] and t.values["product"] == "p" * 2_000 and t.values["count"] == 0.0
    t = normalize_row(SUPPORTISH, row(fields={"labels": "a;" + "t" * 2_000}), 1)
    assert t.values["tags"] == ["a", "t" * 2_000]


def test_not_utf8_names_the_byte_and_the_character() -> None:
    assert not_utf8(3, "plain é text") is None
    err = not_utf8(3, "ab\udcffc")
    assert isinstance(err, RowError) and err.line == 3
    assert err.reason == "not UTF-8 text: byte 0xff at character 3 of the line"
    assert not_utf8(1, "\udc80").reason == "not UTF-8 text: byte 0x80 at character 1 of the line"  # type: ignore[union-attr]


@pytest.mark.parametrize("name, fmt", [
    ("a.jsonl", "jsonl"), ("a.JSONL", "jsonl"), ("a.ndjson", "jsonl"), ("a.json", "jsonl"), ("a.jsonl.gz", "jsonl"),
    ("a.csv", "csv"), ("a.CSV.GZ", "csv"), ("a.parquet", "parquet"), ("a.Parquet", "parquet"),
])
def test_detect_format(name: str, fmt: str) -> None:
    assert detect_format(Path(name)) == fmt


@pytest.mark.parametrize("name", ["a.xml", "a.gz", "a.jsonl.zip", "jsonl", "a.parquet.gz.bak"])
def test_detect_format_refuses_other_files(name: str) -> None:
    with pytest.raises(IngestError, match="unknown file type"):
        detect_format(Path(name))


def test_json_line() -> None:
    assert json_line(1, "") is None and json_line(1, "  \n") is None
    assert json_line(2, '{"id": "a"}\n') == {"id": "a"} and json_line(2, "[1]") == [1]
    bad = json_line(4, "{nope")
    assert isinstance(bad, RowError) and bad.line == 4 and bad.reason.startswith("invalid JSON: Expecting")
    raw = json_line(5, '{"t": "\udcfe"}')
    assert isinstance(raw, RowError) and raw.line == 5 and "byte 0xfe at character 8" in raw.reason


def test_csv_records_number_the_lines_and_read_empty_as_null() -> None:
    import io

    fh = io.StringIO('id,title,body\nA,t,\nB,t,b,extra\nC,"",b\n')
    got = list(csv_records(fh))
    assert got[0] == (2, {"id": "A", "title": "t", "body": None})
    assert got[1][0] == 3 and isinstance(got[1][1], RowError) and got[1][1].line == 3
    assert got[1][1].reason == "more values than header columns"
    assert got[2] == (4, {"id": "C", "title": None, "body": "b"})
    fh = io.StringIO("id,title\nA,\udcff\nB,t\n")
    got = list(csv_records(fh))
    assert isinstance(got[0][1], RowError) and got[0][1].line == 2 and got[1] == (3, {"id": "B", "title": "t"})


def test_iter_raw_numbers_lines_and_rows(tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl"
    p.write_text('{"id": 1}\n\n   \n{"id": 2}\n')
    assert list(iter_raw(p)) == [(1, {"id": 1}), (4, {"id": 2})]
    q = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": [f"P-{i}" for i in range(10_002)]}), q, row_group_size=5_000)
    rows = list(iter_raw(q))
    assert len(rows) == 10_002 and rows[0] == (1, {"id": "P-0"}) and rows[-1] == (10_002, {"id": "P-10001"})
    assert [n for n, _ in rows] == list(range(1, 10_003))
    (tmp_path / "d.jsonl").mkdir()
    with pytest.raises(IngestError, match="no such file"):
        list(iter_raw(tmp_path / "d.jsonl"))


def test_read_tickets_reads_on_after_a_bad_row(tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl"
    rows = [jira_row(id="A-1"), jira_row(id=None), "{bad", jira_row(id="A-2"), jira_row(id="A-3", title=""),
            jira_row(id="A-4")]
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    out = list(read_tickets(p, JIRA))
    assert [(type(o).__name__, o.id if isinstance(o, Ticket) else o.line) for o in out] == [
        ("Ticket", "A-1"), ("RowError", 2), ("RowError", 3), ("Ticket", "A-2"), ("RowError", 5), ("Ticket", "A-4")]


@pytest.mark.parametrize("text", ["-1", "-1.5", " -2 "])
def test_a_number_spelled_as_text_is_refused_in_the_apis_words(text: str) -> None:
    """A CSV cell "-1" in a log1p field says what a JSON -1 says ("must be at least 0"), not "must be a number"."""
    schema = load_schema("support")
    as_text = as_number = None
    try:
        normalize_row(schema, {"id": "N-1", "title": "t", "created": "2024-01-01",
                               "fields": {"affected_count": text}}, 3)
    except RowError as exc:
        as_text = str(exc)
    try:
        normalize_row(schema, {"id": "N-1", "title": "t", "created": "2024-01-01",
                               "fields": {"affected_count": float(text)}}, 3)
    except RowError as exc:
        as_number = str(exc)
    assert as_text is not None and as_text == as_number and "must be a number" not in as_text, (as_text, as_number)
    with pytest.raises(RowError, match="must be a number"):
        normalize_row(schema, {"id": "N-1", "title": "t", "created": "2024-01-01",
                               "fields": {"affected_count": "many"}}, 3)


def test_only_a_date_field_sourced_from_created_is_filled_from_it() -> None:
    """A missing date field of its own column stays empty: only a field sourced from `created` takes the ticket's
    creation time (a source before or after "created" in the alphabet must not take it either: "closed", "target")."""
    schema = toml_schema(("opened", "date", "created"), ("closed", "date", "closed"), ("target", "date", "target"))
    t = normalize_row(schema, {"id": "D-1", "title": "t", "created": "2024-03-01T10:00:00Z"}, 1)
    assert t.values["opened"] == datetime(2024, 3, 1, 10) and t.values["closed"] is None and t.values["target"] is None
    t = normalize_row(schema, {"id": "D-2", "title": "t", "created": "2024-03-01T10:00:00Z",
                               "fields": {"closed": "2024-04-01T00:00:00Z"}}, 2)
    assert t.values["closed"] == datetime(2024, 4, 1) and t.values["target"] is None
