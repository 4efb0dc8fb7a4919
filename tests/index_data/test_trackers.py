"""Tracker exports (index_data/trackers.py) on fixtures this project wrote: Jira REST search pages, GitHub's
issues API, Zendesk's tickets export: ids, text, fields, duplicate links, rejected records with their places,
post-hoc fields never read, and `auto` detection; then `ticketsearch ingest --format auto` on a Jira folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ticketsearch.errors import RowError
from ticketsearch.index_data.records import Ticket
from ticketsearch.index_data.schema import load_schema
from ticketsearch.index_data.trackers import detect, load_mapping, read_tracker
from ticketsearch.pipeline.parts import open_store

FIX = Path(__file__).parent / "fixtures"


def split(items: list) -> tuple[dict[str, Ticket], list[RowError]]:
    good = {t.id: t for t in items if isinstance(t, Ticket)}
    return good, [e for e in items if isinstance(e, RowError)]


def test_jira_pages_with_duplicate_groups() -> None:
    good, bad = split(list(read_tracker(FIX / "jira", "jira", load_schema("jira"))))
    assert sorted(good) == ["HDFS-10", "HDFS-12", "HDFS-15", "HDFS-16"]
    t = good["HDFS-12"]
    assert t.title == "NN restart fails when the edit log is large" and t.body == "Same OOM on startup."
    assert t.created.isoformat() == "2019-01-05T08:00:00"
    assert t.values["project"] == "HDFS" and t.values["issuetype"] == "Bug" and t.values["priority"] == "Major"
    assert t.values["components"] == ["fs"] and t.values["versions"] == ["3.1.0"] and t.values["labels"] == ["perf"]
    # HDFS-12 -> HDFS-10 and HDFS-15 -> HDFS-12 are one group; its earliest member is the master
    assert good["HDFS-10"].duplicate_of is None
    assert good["HDFS-12"].duplicate_of == good["HDFS-15"].duplicate_of == "HDFS-10"
    assert good["HDFS-16"].duplicate_of is None  # its Duplicate link leaves the import; Relates links are not used
    for ticket in good.values():  # post-hoc fields are never read into a ticket
        assert not {"status", "resolution", "resolutiondate", "issuelinks"} & set(ticket.raw_fields)
    reasons = {e.where: e.reason for e in bad}
    assert reasons == {"page-1.json record 3": "title: must not be empty or whitespace only",
                       "page-2.json record 3": "created: Field required",
                       "page-2.json record 4": "expected an issue object, got str"}
    assert "page-1.json record 3 (id 'HDFS-11')" in str(next(e for e in bad if e.ticket_id == "HDFS-11"))


def test_github_issues() -> None:
    good, bad = split(list(read_tracker(FIX / "github" / "issues.json", "github", load_schema("github"))))
    assert sorted(good) == ["acme/widget#7", "acme/widget#8"]  # #9 is a pull request: skipped
    assert good["acme/widget#7"].values["labels"] == ["bug", "parser"]
    assert good["acme/widget#8"].values["labels"] == ["bug"]  # the triage label "duplicate" is dropped
    assert good["acme/widget#8"].body == "" and good["acme/widget#8"].duplicate_of is None
    assert not {"state", "state_reason", "closed_at"} & set(good["acme/widget#8"].raw_fields)
    reasons = {e.where: e.reason for e in bad}
    assert reasons["issues.json record 4"] == "issue has no integer 'number'"
    assert reasons["issues.json record 5"].startswith("created: not an ISO-8601 date")
    assert len(bad) == 2


def test_zendesk_json_and_jsonl_with_the_mapping() -> None:
    schema = load_schema("support")
    good, bad = split(list(read_tracker(FIX / "zendesk" / "tickets.json", "zendesk", schema)))
    assert sorted(good) == ["501", "502"]
    t = good["501"]
    assert t.title == "Charged twice for March" and t.body == "Two charges on the card."
    assert t.values["item_type"] == "problem" and t.values["category"] == "high" and t.values["channel"] == "email"
    assert t.values["customer_tier"] == "enterprise" and t.values["product"] == "Billing Portal"
    assert t.values["affected_count"] == 12 and t.values["component"] is None
    assert good["502"].values["channel"] == "web" and good["502"].values["item_type"] == "question"
    assert not {"status", "satisfaction_rating", "tags"} & set(t.raw_fields)
    reasons = {e.where: e.reason for e in bad}
    assert reasons["tickets.json record 3"] == "title: must not be empty or whitespace only"
    assert "must be at least 0" in reasons["tickets.json record 4"]
    good_l, bad_l = split(list(read_tracker(FIX / "zendesk" / "tickets.jsonl", "zendesk", schema)))
    assert sorted(good_l) == ["501", "502"] and [e.where for e in bad_l] == ["tickets.jsonl line 3"]
    assert bad_l[0].reason.startswith("invalid JSON")


def test_an_edited_mapping_file(tmp_path: Path) -> None:
    mapping = tmp_path / "m.toml"
    mapping.write_text('[fields]\nproduct = "custom:360000000001"\nchannel = "via.channel"\n')
    assert load_mapping(mapping) == {"product": "custom:360000000001", "channel": "via.channel"}
    good, _ = split(list(read_tracker(FIX / "zendesk" / "tickets.json", "zendesk", load_schema("support"), mapping)))
    assert good["501"].values["product"] == "enterprise" and good["501"].values["item_type"] is None
    mapping.write_text("[fields]\nproduct = 3\n")
    with pytest.raises(Exception, match="schema field"):
        load_mapping(mapping)


def test_auto_detects_each_format(tmp_path: Path) -> None:
    assert detect(FIX / "jira") == detect(FIX / "jira" / "page-2.json") == "jira"
    assert detect(FIX / "github" / "issues.json") == "github"
    assert detect(FIX / "zendesk" / "tickets.json") == detect(FIX / "zendesk" / "tickets.jsonl") == "zendesk"
    ours = tmp_path / "t.jsonl"
    ours.write_text(json.dumps({"id": "A-1", "title": "t", "created": "2024-01-01"}) + "\n")
    csv = tmp_path / "t.csv"
    csv.write_text("id,title,created\nA-1,t,2024-01-01\n")
    assert detect(ours) == detect(csv) == "tickets"


def test_ingest_says_what_it_detected_and_builds_the_index(tmp_path: Path) -> None:
    from ticketsearch.index_dir import IndexDir
    from ticketsearch.service.cli import app

    out = CliRunner().invoke(app, ["ingest", "--data", str(FIX / "jira"), "--index", str(tmp_path / "idx"), "-q"])
    assert out.exit_code == 0, out.output
    assert "detected format: jira" in out.output and "skipped" in out.output and "page-2.json record 3" in out.output
    with open_store(IndexDir(tmp_path / "idx")) as store:
        assert store.schema.name == "jira" and store.count() == 4
        assert store.get("HDFS-15").duplicate_of == "HDFS-10"
    bad = CliRunner().invoke(app, ["ingest", "--data", str(FIX / "jira"), "--index", str(tmp_path / "x"),
                                   "--format", "trello"])
    assert bad.exit_code == 2 and "--format must be one of auto, tickets, jira, github, zendesk" in bad.output
