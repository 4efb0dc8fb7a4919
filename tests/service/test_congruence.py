"""One interface, every door, the same answers: a battery of good and bad requests sent through the library
(`TicketIndex`), the CLI (`--json`, on the index and on the service), the HTTP client against a real server, and a
2-shard collection filled through the API. The same hits (ids in order, scores within 1e-6) for every good
request; the same kind of error for every bad one (the library and the client raise it, the CLI prints one line
and exits 2)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from typer.testing import CliRunner

from ticketsearch.api import TicketIndex
from ticketsearch.client import Client
from ticketsearch.errors import QueryError
from ticketsearch.pipeline.collections import Collections
from ticketsearch.requests import MAX_BODY
from ticketsearch.service.cli import app

from ..demo_rows import write_demo
from .battery import battery, cli_args, hits, same
from .server import Server

ADMIN = "admin-key-congruence-1"
BATCH = 80


@pytest.fixture(scope="module")
def doors(tmp_path_factory: pytest.TempPathFactory, settings) -> Any:  # noqa: ANN001
    root = tmp_path_factory.mktemp("congruence")
    write_demo(root / "d.jsonl", n=240, seed=7)
    rows = [json.loads(line) for line in (root / "d.jsonl").read_text().splitlines()]
    batches = [rows[i:i + BATCH] for i in range(0, len(rows), BATCH)]

    local = Collections.at_root(root / "lib", settings)  # the library's own index, written as the service is
    local.create("lib", "support", general_model=True)
    local.close()
    lib_dir = root / "lib" / "collections" / "lib"
    with TicketIndex.open(lib_dir, writable=True, settings=settings) as idx:
        for batch in batches:
            idx.upsert(batch)

    srv = Server(root / "srv", root / "server.log", root=True, env={"TICKETSEARCH_API_KEYS": f"{ADMIN}:admin"})
    srv.start()
    client = Client(srv.url, key=ADMIN)
    client.create_collection("plain", "support", general_model=True)
    client.create_collection("sharded", "support", general_model=True, shards=2)
    for batch in batches:
        for name in ("plain", "sharded"):
            client.upsert(batch, collection=name)
    yield rows, lib_dir, srv, client
    client.close()
    srv.stop()


def test_every_door_gives_the_same_answers_and_the_same_errors(doors: Any, settings) -> None:  # noqa: ANN001
    rows, lib_dir, srv, client = doors
    good, bad = battery(rows)
    runner = CliRunner()

    def cli(*args: str) -> tuple[int, str, str]:
        res = runner.invoke(app, list(args))
        return res.exit_code, res.stdout, res.stderr

    with TicketIndex.open(lib_dir, settings=settings) as lib:
        remote: dict[str, Callable[[dict], Any]] = {
            "client": lambda o: client.search(collection="plain", **o),
            "sharded": lambda o: client.search(collection="sharded", **o),
        }
        for opts in good:
            want = hits(lib.search(**opts))
            assert want, opts
            for name, call in remote.items():
                same(want, hits(call(opts)), f"{name} {opts}")
            for where in (["--index", str(lib_dir)], ["--url", srv.url, "--key", ADMIN, "--collection", "plain"]):
                code, out, err = cli("search", *where, *cli_args(opts), "--json")
                assert code == 0, (opts, err)
                got = [(h["id"], h["score"]) for h in json.loads(out)["hits"]]
                same(want, got, f"cli {where[0]} {opts}")
        # one typed ticket from every door, its time with its zone
        for tid in (rows[0]["id"], rows[-1]["id"]):
            got = lib.get(tid)
            assert got == client.get(tid, collection="plain") == client.get(tid, collection="sharded"), tid
            assert got.created.endswith("Z") and lib.search(like=tid, k=1).hits[0].created.endswith("Z")
        for opts, kind in bad:
            with pytest.raises(kind):
                lib.search(**opts)
            for call in remote.values():
                with pytest.raises(kind):
                    call(opts)
            for where in (["--index", str(lib_dir)], ["--url", srv.url, "--key", ADMIN, "--collection", "sharded"]):
                code, out, err = cli("search", *where, *cli_args(opts), "--json")
                assert code == 2 and not out and err.startswith("error: ") and err.count("\n") == 1, (opts, err)


def test_a_ticket_every_door_takes_is_checked_whole_at_every_door(doors: Any, settings) -> None:  # noqa: ANN001
    """A ticket with a body of more than a query text's old limit (real JIRA tickets reach 187,000 characters),
    written at every door, and sent back as a new ticket: every door's duplicate check takes it and finds it
    first, a near copy; one character over a ticket's limit, every door refuses it alike."""
    rows, lib_dir, srv, client = doors
    words = " ".join(r["body"] for r in rows)
    body = (words + " ") * (150_000 // len(words) + 1)
    body = body[:150_000].strip()
    long = {"id": "LONG-1", "title": "Export worker log dump after the nightly job", "body": body,
            "created": "2024-06-01T00:00:00Z", "fields": {"product": rows[0]["fields"]["product"]}}
    with TicketIndex.open(lib_dir, writable=True, settings=settings) as idx:
        idx.upsert([long])
    for name in ("plain", "sharded"):
        client.upsert([long], collection=name)
    check = {"title": long["title"], "body": body, "created": "2026-01-01T00:00:00Z"}
    runner = CliRunner()
    cli_doors = (["--index", str(lib_dir)], ["--url", srv.url, "--key", ADMIN, "--collection", "sharded"])
    with TicketIndex.open(lib_dir, settings=settings) as lib:
        answers = [lib.duplicates(check), client.duplicates(check, collection="plain"),
                   client.duplicates(check, collection="sharded")]
        for where in cli_doors:
            res = runner.invoke(app, ["duplicates", *where, "--title", check["title"], "--body", body, "--created",
                                      check["created"], "--json"])
            assert res.exit_code == 0, res.stderr
            answers.append(json.loads(res.stdout))
        for got in answers:
            got = got if isinstance(got, dict) else got.model_dump()
            assert got["candidates"][0]["id"] == "LONG-1" and got["near_copy"] and got["is_duplicate"], got["reason"]
        over = {**check, "body": "b" * (MAX_BODY + 1)}
        with pytest.raises(QueryError, match="body"):
            lib.duplicates(over)
        for name in ("plain", "sharded"):
            with pytest.raises(QueryError, match="body"):
                client.duplicates(over, collection=name)
        for where in cli_doors:
            res = runner.invoke(app, ["duplicates", *where, "--title", "t", "--body", over["body"]])
            assert res.exit_code == 2 and "body" in res.stderr and res.stderr.count("\n") == 1, res.stderr


def test_every_door_refuses_the_same_tickets_the_same_way(doors: Any, settings) -> None:  # noqa: ANN001
    """A write through the library is checked by the API's rule (`records.sent_ticket`), not a file's leniency:
    each bad ticket is refused by the library and the client alike (QueryError naming the same field, or
    ConflictError for a self-duplicate), and nothing of the batch is written."""
    from ticketsearch.errors import ConflictError, NotFoundError

    rows, lib_dir, srv, client = doors
    ok = {"id": "W-1", "title": "Exports stall at ninety percent", "created": "2024-06-01T00:00:00Z",
          "fields": {"product": rows[0]["fields"]["product"]}}
    bad: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({**ok, "id": 12}, QueryError, "id"),  # a file may spell an id as a number; JSON states a string
        ({**ok, "product": "Mobile App"}, QueryError, "product"),  # a flat column: a file's spelling, not the API's
        ({**ok, "fields": {"affected_count": "12"}}, QueryError, "fields.affected_count"),  # a CSV cell's spelling
        ({**ok, "fields": {"colour": "red"}}, QueryError, "fields.colour"),
        ({**ok, "created": 1717200000}, QueryError, "created"),
        ({**ok, "title": "\x00\x01"}, QueryError, "title"),
        ({**ok, "duplicate_of": ".."}, QueryError, "duplicate_of"),
        ({**ok, "duplicate_of": "W-1"}, ConflictError, "duplicate_of"),
    ]
    with TicketIndex.open(lib_dir, writable=True, settings=settings) as idx:
        for ticket, kind, field in bad:
            with pytest.raises(kind) as lib_err:
                idx.upsert([{**ok, "id": "W-0"}, ticket])  # the good ticket before it is not written either
            for name in ("plain", "sharded"):
                with pytest.raises(kind) as http_err:
                    client.upsert([{**ok, "id": "W-0"}, ticket], collection=name)
                if kind is QueryError:
                    lib_field = lib_err.value.field  # type: ignore[attr-defined]
                    assert lib_field == f"tickets.1{'.' + field if field else ''}", (ticket, lib_field)
                    assert f"body.1{'.' + field if field else ''}" in str(http_err.value), (ticket, http_err.value)
        with pytest.raises(NotFoundError):
            idx.get("W-0")
    for name in ("plain", "sharded"):
        with pytest.raises(NotFoundError):
            client.get("W-0", collection=name)


def test_a_ticket_of_the_longest_body_fits_one_request_however_its_json_escapes_it(doors: Any) -> None:
    """The service's default body limit (TICKETSEARCH_MAX_BODY_BYTES) takes a ticket of the longest title and
    body written with JSON's longest escapes (ASCII-only JSON: a character outside the BMP is 12 bytes); 1 MiB
    answered 413 to a ticket that every door's rule takes. One byte over the limit is still 413."""
    from ticketsearch.requests import MAX_BODY, MAX_TITLE
    from ticketsearch.service.settings import DEFAULT_MAX_BODY_BYTES

    _, _, srv, _ = doors
    ticket = {"id": "WIDE-1", "title": "\U0001f525" * MAX_TITLE, "body": "\U0001f4a5" * MAX_BODY,
              "created": "2024-06-01T00:00:00Z"}
    raw = json.dumps(ticket)  # ensure_ascii: every emoji as "\\ud83d\\udca5"
    assert len(raw) > 12 * (MAX_TITLE + MAX_BODY) > 2 * (1 << 20)
    http = srv.client(ADMIN)
    try:
        r = http.post("/v1/collections/plain/tickets", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 200 and r.json()["ids"] == ["WIDE-1"], r.text[:300]
        assert http.get("/v1/collections/plain/tickets/WIDE-1").json()["body"] == ticket["body"]
        over = http.post("/v1/collections/plain/tickets", content=b" " * (DEFAULT_MAX_BODY_BYTES + 1),
                         headers={"content-type": "application/json"})
        assert over.status_code == 413, over.text
    finally:
        http.delete("/v1/collections/plain/tickets/WIDE-1")
        http.close()
