"""Tracker exports as tickets: Jira's REST search JSON, GitHub's issues REST JSON, and Zendesk ticket exports.

Each reader turns one export (a file, or a folder of page files read in name order) into records of our own
ticket format (`id`, `title`, `body`, `created`, `duplicate_of`, `fields`), which `records.normalize_row`
checks against the schema like any other row. Only the fields the tracker's shipped schema lists are copied
into `fields`: post-hoc fields (status, resolution, closed dates, state and state_reason, links other than the
ones `duplicate_of` is made from) are never read into a ticket, so they can never be model inputs.

- `jira`: `{"issues": [{"key", "fields": {...}}]}`. Issue links of type Duplicate between two imported issues
  make groups (connected components); each group's earliest-created issue is its master (ties: the lower
  number), and every other member gets `duplicate_of` = master, as in `../shared/data/README.md`.
- `github`: a list of issues (pull requests are skipped). The id is `OWNER/REPO#NUMBER` where the repository is
  known (`repository_url` or `html_url`), else the number. Labels are kept except `duplicate`, `invalid` and
  `wontfix`, which record a triage decision. GitHub's issues API names no duplicate target: no `duplicate_of`.
- `zendesk`: `{"tickets": [...]}` JSON or one ticket per line (JSONL). Mapped onto the `support` schema by a
  small TOML mapping file (`zendesk_mapping.toml`, shipped; `--mapping FILE` for your own): schema field ->
  a path in the ticket (`type`, `priority`, `via.channel`, `tags`) or `custom:ID` for a custom field.
"""

from __future__ import annotations

import gzip
import json
import re
import tomllib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from ticketsearch.errors import IngestError, RowError

from .links import groups
from .records import normalize_row, not_utf8, parse_datetime
from .schema import Schema

TRACKERS = ("jira", "github", "zendesk")
FORMATS = ("auto", "tickets", *TRACKERS)
SHIPPED_SCHEMA = {"jira": "jira", "github": "github", "zendesk": "support"}
TRIAGE_LABELS = {"duplicate", "invalid", "wontfix", "won't fix"}

Raw = tuple[str, Any]  # (where the record is, the record or a RowError)


# ---- reading an export -----------------------------------------------------------------------------------
def export_files(path: Path) -> list[Path]:
    """The export's files: the file itself, or a folder's .json/.jsonl(.gz) pages in name order."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file()
                       and p.name.lower().removesuffix(".gz").endswith((".json", ".jsonl", ".ndjson")))
        if not files:
            raise IngestError(f"{path}: a folder with no .json or .jsonl pages")
        return files
    if not path.is_file():
        raise IngestError(f"{path}: no such file or folder")
    return [path]


def _text(path: Path) -> str:
    """The file's text; a byte that is not UTF-8 kept as a lone surrogate, for `not_utf8` to name."""
    data = path.read_bytes()
    return (gzip.decompress(data) if path.name.endswith(".gz") else data).decode("utf-8", "surrogateescape")


def _documents(path: Path) -> Iterator[tuple[str, Any]]:
    """Each file's JSON document, or for JSON Lines each line's (`where`, value)."""
    for f in export_files(path):
        text = _text(f)
        try:
            doc = json.loads(text)
        except json.JSONDecodeError:
            pass
        else:
            bad = not_utf8(0, text)
            if bad is not None:  # one document: its records cannot be told apart by line
                raise IngestError(f"{f}: {bad.reason}")
            yield f.name, doc
            continue
        lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
        if len(lines) <= 1:
            raise IngestError(f"{f}: not valid JSON")
        for n, line in lines:
            where = f"{f.name} line {n}"
            bad = not_utf8(n, line)
            if bad is not None:
                yield where, RowError(n, bad.reason, where=where)
                continue
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as exc:
                yield where, RowError(n, f"invalid JSON: {exc.msg}", where=where)


def _first_line(path: Path) -> Any:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="surrogateescape") as fh:
        for line in fh:
            if line.strip():
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    return None
    return None


def detect(path: Path) -> str:
    """`jira`, `github`, `zendesk` or `tickets`, from the first record of the export's first file (a JSON Lines
    file is not read past its first line)."""
    f = export_files(path)[0]
    name = f.name.lower().removesuffix(".gz")
    if not name.endswith((".json", ".jsonl", ".ndjson")):
        return "tickets"  # CSV or Parquet
    doc = _first_line(f) if name.endswith((".jsonl", ".ndjson")) else next(_documents(f), ("", None))[1]
    if isinstance(doc, dict) and isinstance(doc.get("issues"), list):
        return "jira"
    if isinstance(doc, dict) and isinstance(doc.get("tickets"), list):
        return "zendesk"
    first = doc[0] if isinstance(doc, list) and doc else doc
    if isinstance(first, dict):
        if "number" in first and ("html_url" in first or "repository_url" in first or "state" in first):
            return "github"
        if "subject" in first and "id" in first:
            return "zendesk"
        if "key" in first and isinstance(first.get("fields"), dict):
            return "jira"
    return "tickets"


def _items(path: Path, key: str | None) -> Iterator[Raw]:
    """Every record of the export: `doc[key]` lists (or bare lists, or JSON Lines records), with its place."""
    for where, doc in _documents(path):
        if isinstance(doc, RowError):
            yield where, doc
            continue
        items = doc.get(key) if key and isinstance(doc, dict) and key in doc else doc
        if isinstance(items, dict):  # one record per line
            yield where, items
            continue
        if not isinstance(items, list):
            raise IngestError(f"{where}: expected " + (f'{{"{key}": [...]}} or ' if key else "") + "a list of records")
        for i, item in enumerate(items):
            yield f"{where} record {i + 1}", item


def _name(v: Any) -> Any:
    return v.get("name") if isinstance(v, dict) else v


def _names(v: Any) -> list[Any] | None:
    if not isinstance(v, list):
        return None
    return [x for x in (_name(i) for i in v) if x not in (None, "")]


def _dig(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


# ---- Jira ----------------------------------------------------------------------------------------------
def jira_record(issue: Any) -> dict[str, Any]:
    if not isinstance(issue, dict):
        raise ValueError(f"expected an issue object, got {type(issue).__name__}")
    f = issue.get("fields")
    if not isinstance(f, dict):
        raise ValueError("issue has no 'fields' object")
    return {"id": issue.get("key"), "title": f.get("summary"), "body": f.get("description") or "",
            "created": f.get("created"), "updated": f.get("updated"), "fields": {
                "project": _dig(f, "project.key"), "issuetype": _name(f.get("issuetype")),
                "priority": _name(f.get("priority")), "components": _names(f.get("components")),
                "versions": _names(f.get("versions")), "labels": f.get("labels") or None}}


def jira_duplicate_links(issue: dict[str, Any]) -> list[str]:
    """The keys this issue has a Duplicate link with (either direction)."""
    out = []
    for link in (issue.get("fields") or {}).get("issuelinks") or []:
        if not isinstance(link, dict) or _name(link.get("type")) != "Duplicate":
            continue
        for side in ("inwardIssue", "outwardIssue"):
            key = _dig(link, f"{side}.key")
            if isinstance(key, str):
                out.append(key)
    return out


def _issue_number(key: str) -> int:
    m = re.search(r"(\d+)$", key)
    return int(m.group(1)) if m else 0


def jira_masters(records: list[tuple[str, dict[str, Any], list[str]]]) -> dict[str, str]:
    """duplicate_of for each grouped issue: connected components of Duplicate links between imported issues,
    each pointing at its earliest-created member (ties: the lower issue number)."""

    created: dict[str, Any] = {}
    for _, rec, _ in records:
        try:
            created[str(rec["id"])] = parse_datetime(rec["created"])
        except (ValueError, KeyError, TypeError):
            continue  # a malformed issue is reported on its own and joins no group
    out = {}
    for members in groups(created, ((str(rec["id"]), b) for _, rec, links in records for b in links)):
        if len(members) < 2:
            continue
        master = min(members, key=lambda k: (created[k], _issue_number(k), k))
        out.update({k: master for k in members if k != master})
    return out


def jira_items(path: Path) -> Iterator[tuple[str, Any, list[str]]]:
    """(where, our record or a RowError, the issue's Duplicate links) for each issue of a Jira export."""
    for where, issue in _items(path, "issues"):
        if isinstance(issue, RowError):
            yield where, issue, []
            continue
        try:
            yield where, jira_record(issue), jira_duplicate_links(issue)
        except ValueError as exc:
            yield where, RowError(0, str(exc), where=where), []


def read_jira(path: Path) -> Iterator[Raw]:
    """Malformed issues first (as read), then every record with its duplicate_of (which needs them all)."""
    records: list[tuple[str, dict[str, Any], list[str]]] = []
    for where, rec, links in jira_items(path):
        if isinstance(rec, RowError):
            yield where, rec
        else:
            records.append((where, rec, links))
    masters = jira_masters(records)
    for where, rec, _ in records:
        rec["duplicate_of"] = masters.get(str(rec["id"]))
        yield where, rec


# ---- GitHub --------------------------------------------------------------------------------------------
def github_repo(issue: dict[str, Any]) -> str | None:
    url = issue.get("repository_url") or ""
    m = re.search(r"/repos/([^/]+/[^/]+)/?$", url) or re.search(r"github\.com/([^/]+/[^/]+)/issues/\d+",
                                                                 issue.get("html_url") or "")
    return m.group(1) if m else None


def github_record(issue: Any) -> dict[str, Any] | None:
    """Our record for a GitHub issue; None for a pull request (skipped)."""
    if not isinstance(issue, dict):
        raise ValueError(f"expected an issue object, got {type(issue).__name__}")
    if issue.get("pull_request") is not None:
        return None
    number = issue.get("number")
    if isinstance(number, bool) or not isinstance(number, int):
        raise ValueError("issue has no integer 'number'")
    repo = github_repo(issue)
    labels = [x for x in (_names(issue.get("labels")) or []) if str(x).lower() not in TRIAGE_LABELS]
    return {"id": f"{repo}#{number}" if repo else str(number), "title": issue.get("title"),
            "body": issue.get("body") or "", "created": issue.get("created_at"), "updated": issue.get("updated_at"),
            "duplicate_of": None,
            "fields": {"labels": labels or None}}


def read_github(path: Path) -> Iterator[Raw]:
    for where, issue in _items(path, None):
        if isinstance(issue, RowError):
            yield where, issue
            continue
        try:
            rec = github_record(issue)
        except ValueError as exc:
            yield where, RowError(0, str(exc), where=where)
            continue
        if rec is not None:
            yield where, rec


# ---- Zendesk -------------------------------------------------------------------------------------------
def load_mapping(path: Path | None = None) -> dict[str, str]:
    """schema field -> where its value is in a Zendesk ticket (`type`, `via.channel`, `custom:ID`, ...)."""
    if path is None:
        text = (resources.files("ticketsearch.index_data") / "schemas" / "zendesk_mapping.toml").read_text("utf-8")
        origin = "the shipped zendesk_mapping.toml"
    else:
        if not Path(path).is_file():
            raise IngestError(f"--mapping {path}: no such file")
        text, origin = Path(path).read_text("utf-8"), str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise IngestError(f"{origin}: invalid TOML: {exc}") from None
    fields = data.get("fields")
    if not isinstance(fields, dict) or not all(isinstance(v, str) for v in fields.values()):
        raise IngestError(f"{origin}: needs a [fields] table of schema field = \"path\" strings")
    return dict(fields)


def zendesk_value(ticket: dict[str, Any], where: str) -> Any:
    if where.startswith("custom:"):
        wanted = where.removeprefix("custom:")
        for cf in ticket.get("custom_fields") or []:
            if isinstance(cf, dict) and str(cf.get("id")) == wanted:
                return cf.get("value")
        return None
    return _dig(ticket, where)


def zendesk_record(ticket: Any, mapping: dict[str, str]) -> dict[str, Any]:
    if not isinstance(ticket, dict):
        raise ValueError(f"expected a ticket object, got {type(ticket).__name__}")
    return {"id": ticket.get("id"), "title": ticket.get("subject"), "body": ticket.get("description") or "",
            "created": ticket.get("created_at"), "duplicate_of": None,
            "fields": {name: zendesk_value(ticket, where) for name, where in mapping.items()}}


def read_zendesk(path: Path, mapping: dict[str, str]) -> Iterator[Raw]:
    for where, ticket in _items(path, "tickets"):
        if isinstance(ticket, RowError):
            yield where, ticket
            continue
        try:
            yield where, zendesk_record(ticket, mapping)
        except ValueError as exc:
            yield where, RowError(0, str(exc), where=where)


# ---- webhooks ------------------------------------------------------------------------------------------
GITHUB_ACTIONS = {"opened", "edited", "reopened", "labeled", "unlabeled", "transferred"}
JIRA_EVENTS = {"jira:issue_created", "jira:issue_updated"}


# Where a webhook payload holds each field of the ticket it becomes (`github_record`, `jira_record`): a refused
# ticket's error names the payload's own field (`body.issue.fields.summary`), not the ticket's
HOOK_PATHS: dict[str, dict[str, str]] = {
    "github": {"id": "issue.number", "title": "issue.title", "body": "issue.body", "created": "issue.created_at",
               "updated": "issue.updated_at", "fields.labels": "issue.labels"},
    "jira": {"id": "issue.key", "title": "issue.fields.summary", "body": "issue.fields.description",
             "created": "issue.fields.created", "updated": "issue.fields.updated",
             "fields.project": "issue.fields.project.key", "fields.issuetype": "issue.fields.issuetype",
             "fields.priority": "issue.fields.priority", "fields.components": "issue.fields.components",
             "fields.versions": "issue.fields.versions", "fields.labels": "issue.fields.labels"},
}


def hook_field(source: str, ticket_field: str | None) -> str:
    """The payload's field (under the request body) that a ticket's field came from; the issue as a whole where
    none did."""
    return "body." + HOOK_PATHS.get(source, {}).get(ticket_field or "", "issue")


def hook_record(source: str, event: str | None, payload: Any) -> tuple[dict[str, Any] | None, str]:
    """The record of an issue-created or issue-updated webhook payload, or (None, why it is ignored).
    Raises ValueError for a payload that claims to be one but is malformed."""
    if not isinstance(payload, dict):
        raise ValueError(f"expected a JSON object, got {type(payload).__name__}")
    if source == "github":
        if event != "issues":
            return None, f"event {event!r} is not about issues"
        if payload.get("action") not in GITHUB_ACTIONS:
            return None, f"action {payload.get('action')!r} neither creates nor edits an issue"
        issue = payload.get("issue")
        if isinstance(issue, dict) and not issue.get("repository_url"):
            full = _dig(payload, "repository.full_name")
            issue = {**issue, "repository_url": f"https://api.github.com/repos/{full}"} if full else issue
        rec = github_record(issue)
        return (rec, "issue") if rec is not None else (None, "a pull request")
    kind = payload.get("webhookEvent")
    if kind not in JIRA_EVENTS:
        return None, f"webhookEvent {kind!r} neither creates nor updates an issue"
    return jira_record(payload.get("issue")), "issue"


# ---- into tickets --------------------------------------------------------------------------------------
def tracker_records(path: Path, fmt: str, mapping: Path | None = None) -> Iterator[Raw]:
    if fmt == "jira":
        return read_jira(path)
    if fmt == "github":
        return read_github(path)
    if fmt == "zendesk":
        return read_zendesk(path, load_mapping(mapping))
    raise IngestError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")


def read_tracker(path: Path, fmt: str, schema: Schema, mapping: Path | None = None) -> Iterator[Any]:
    """A Ticket for each good record and a RowError (with its place in the export) for each bad one."""
    for n, (where, rec) in enumerate(tracker_records(path, fmt, mapping), start=1):
        if isinstance(rec, RowError):
            yield rec
            continue
        try:
            yield normalize_row(schema, rec, n, tracker=True)
        except RowError as err:
            yield RowError(n, err.reason, err.ticket_id, where=where, field=err.field)
