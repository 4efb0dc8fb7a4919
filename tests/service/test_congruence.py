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
from ticketsearch.errors import NotFoundError, QueryError
from ticketsearch.index_data.demo import write_demo
from ticketsearch.pipeline.collections import Collections
from ticketsearch.requests import MAX_K
from ticketsearch.service.cli import app

from .server import Server

ADMIN = "admin-key-congruence-1"
BATCH = 80


def battery(rows: list[dict]) -> tuple[list[dict], list[tuple[dict, type[Exception]]]]:
    """(good searches, (bad search, the error class every door must give)) as SearchRequest options."""
    a, b = rows[11], rows[40]
    good = [
        {"text": "customers were charged twice for their subscription", "k": 5},
        {"text": a["body"], "title": a["title"], "k": 8, "fields": {"product": a["fields"]["product"]}},
        {"text": "login fails after password reset", "k": 10, "method": "bm25"},
        {"text": "export to csv times out", "k": 7, "method": "dense", "filters": {"channel": ["chat", "email"]}},
        {"text": "app crashes", "k": 6, "method": "title", "after": "2024-03-01"},
        {"text": b["title"], "k": MAX_K, "rerank": False},
        {"like": a["id"], "k": 5},
        {"text": "refund missing", "k": 4, "snippets": True, "before": "2025-01-01"},
    ]
    bad: list[tuple[dict, type[Exception]]] = [
        ({"text": "x", "k": MAX_K + 1}, QueryError),
        ({"text": "   "}, QueryError),
        ({"text": "x", "fields": {"colour": "red"}}, QueryError),
        ({"text": "x", "filters": {"affected_count": ["many"]}}, QueryError),
        ({"text": "x", "method": "magic"}, QueryError),
        ({"text": "x", "before": "last tuesday"}, QueryError),
        ({"text": "x", "like": a["id"]}, QueryError),
        ({"like": "NOPE-404"}, NotFoundError),
    ]
    return good, bad


def cli_args(opts: dict) -> list[str]:
    """The CLI's spelling of a request's options."""
    args = [opts["text"]] if "text" in opts else []
    for name, flag in (("like", "--like"), ("title", "--title"), ("method", "--method"), ("before", "--before"),
                       ("after", "--after")):
        if name in opts:
            args += [flag, str(opts[name])]
    args += ["-k", str(opts.get("k", 10))]
    for name, value in opts.get("fields", {}).items():
        args += ["--field", f"{name}={value}"]
    for name, values in opts.get("filters", {}).items():
        args += ["--filter", f"{name}={','.join(map(str, values))}"]
    if opts.get("rerank") is False:
        args.append("--no-rerank")
    if opts.get("snippets"):
        args.append("--snippets")
    return args


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


def hits(res: Any) -> list[tuple[str, float]]:
    return [(h.id, h.score) for h in res.hits]


def same(a: list[tuple[str, float]], b: list[tuple[str, float]], what: str) -> None:
    assert [i for i, _ in a] == [i for i, _ in b], what
    assert all(abs(x - y) <= 1e-6 for (_, x), (_, y) in zip(a, b)), (what, [(p, q) for p, q in zip(a, b)])


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
        for opts, kind in bad:
            with pytest.raises(kind):
                lib.search(**opts)
            for call in remote.values():
                with pytest.raises(kind):
                    call(opts)
            for where in (["--index", str(lib_dir)], ["--url", srv.url, "--key", ADMIN, "--collection", "sharded"]):
                code, out, err = cli("search", *where, *cli_args(opts), "--json")
                assert code == 2 and not out and err.startswith("error: ") and err.count("\n") == 1, (opts, err)
