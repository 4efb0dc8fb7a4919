"""The Python client (`ticketsearch.client`), blocking and async, against a real `ticketsearch serve --root`:
every method, the typed models it returns, one typed error per status, and a 503 retried after its Retry-After."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ticketsearch.client import (
    AsyncClient,
    Client,
    Conflict,
    Forbidden,
    NotFound,
    Unauthorized,
    Unavailable,
    Unprocessable,
)
from ticketsearch.errors import NotFoundError, QueryError, RowError, UnavailableError
from ticketsearch.results import (
    CollectionInfo,
    DuplicateResult,
    FeedbackDecision,
    JobInfo,
    SearchResult,
    TicketOut,
    TrainParams,
)
from ticketsearch.service.schemas import DeleteResponse, UpsertResponse

from .service.server import Server

ADMIN = "client-admin-key-1"
READER = "client-reader-key1"


def start_server(root: Path) -> Server:
    return Server(root / "root", root / "server.log", root=True,
                  env={"TICKETSEARCH_API_KEYS": f"{ADMIN}:admin,{READER}:read"}).start()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("client"))
    yield srv
    srv.stop()


@pytest.fixture
def empty_server(tmp_path: Path) -> Iterator[Server]:
    """A server of its own, with no collection yet: the module's server has those the other tests made."""
    srv = start_server(tmp_path)
    yield srv
    srv.stop()


def test_every_method_of_the_blocking_client(empty_server: Server, demo_rows: list[dict]) -> None:
    with Client(empty_server.url, key=ADMIN, timeout=120) as c:
        info = c.create_collection("helpdesk", schema="support")
        assert isinstance(info, CollectionInfo) and info.name == "helpdesk" and info.tickets == 0
        assert info.reranker.status == "none"
        up = c.upsert(demo_rows, collection="helpdesk")
        assert isinstance(up, UpsertResponse) and up.inserted == len(demo_rows)
        one = c.upsert({"id": "C-1", "title": "Export to CSV drops the last row", "created": "2026-01-05",
                        "body": "Exports miss their final line."}, collection="helpdesk")
        assert one.ids == ["C-1"]
        assert [x.name for x in c.collections()] == ["helpdesk"] and c.collection("helpdesk").tickets == 301
        got = c.get("C-1", collection="helpdesk")
        assert isinstance(got, TicketOut) and got.title.startswith("Export to CSV")
        res = c.search("CSV export is missing the final row", k=3, collection="helpdesk")
        assert isinstance(res, SearchResult) and res.hits[0].id == "C-1" and res.reranker is None
        like = c.search(like="C-1", k=3, collection="helpdesk")
        sim = c.similar("C-1", k=3, collection="helpdesk")
        assert [h.id for h in like.hits] == [h.id for h in sim.hits] and "C-1" not in {h.id for h in sim.hits}
        dup = c.duplicates({"title": "CSV export loses a row"}, k=3, collection="helpdesk")
        assert isinstance(dup, DuplicateResult) and dup.is_duplicate is None and dup.reason
        assert c.search("CSV export", k=1, collection="helpdesk", snippets=True).hits[0].snippet == (
            "Exports miss their final line.")
        sim1 = c.similar("C-1", k=1, collection="helpdesk", snippets=True).hits[0]
        assert sim1.snippet and isinstance(sim1.highlight, list) and sim1.snippet.strip("…") in c.get(
            sim1.id, collection="helpdesk").body
        assert c.duplicates({"title": "CSV export"}, k=1, collection="helpdesk", snippets=True).candidates[0].snippet
        assert res.hits[0].snippet is None  # only on request
        other = demo_rows[0]["id"]
        fb = c.feedback("C-1", other, "not_duplicate", by="ana", collection="helpdesk")
        assert isinstance(fb, FeedbackDecision) and (fb.ticket_id, fb.candidate_id, fb.label, fb.by) == (
            "C-1", other, "not_duplicate", "ana") and fb.at.endswith("Z")
        c.feedback(other, "C-1", "duplicate", collection="helpdesk")  # the same pair: the latest wins
        listed = c.feedback_for("C-1", collection="helpdesk")
        assert [(d.label, d.by) for d in listed] == [("duplicate", None)]
        assert c.feedback_for(other, collection="helpdesk") == listed
        with pytest.raises(Unprocessable):
            c.feedback("C-1", other, "maybe", collection="helpdesk")
        with pytest.raises(NotFound):
            c.feedback("C-1", "NOPE-404", "duplicate", collection="helpdesk")
        fields = {f.name: f for f in c.schema(collection="helpdesk").fields}
        assert fields["product"].kind == "categorical" and fields["product"].values
        gone = c.delete("C-1", collection="helpdesk")
        assert isinstance(gone, DeleteResponse) and gone.deleted == "C-1"
        with pytest.raises(NotFound) as err:
            c.get("C-1", collection="helpdesk")
        assert isinstance(err.value, NotFoundError) and err.value.detail[0]["field"] == "path.ticket_id"
        job = c.train(collection="helpdesk", params=TrainParams(epochs=5))
        assert isinstance(job, JobInfo) and job.state in ("queued", "running")
        with pytest.raises(Conflict):
            c.train(collection="helpdesk")
        done = c.wait(job, timeout=600, poll_s=0.5)
        assert done.state == "done" and done.result is not None, done
        assert c.job(job.id, collection="helpdesk").state == "done"
        assert c.search("CSV export", collection="helpdesk").reranker == done.result["model"]
        with pytest.raises(Conflict):
            c.create_collection("helpdesk")
        with pytest.raises(Unprocessable) as bad:
            c.create_collection("Not A Name")
        assert isinstance(bad.value, QueryError) and bad.value.status == 422
        with pytest.raises(NotFound):
            c.search("x", collection="nowhere")
        c.delete_collection("helpdesk")
        assert c.collections() == []


def test_typed_errors_for_keys(server: Server) -> None:
    with Client(server.url) as anonymous, pytest.raises(Unauthorized) as err:
        anonymous.collections()
    assert err.value.detail[0]["type"] == "unauthorized"
    with Client(server.url, key=ADMIN) as admin:
        admin.create_collection("keys", schema="jira")
    with Client(server.url, key=READER) as reader:
        with pytest.raises(Forbidden) as denied:
            reader.upsert([{"id": "K-1", "title": "t", "created": "2026-01-01"}], collection="keys")
        assert "write scope is needed" in str(denied.value)
        assert reader.search("anything", collection="keys").hits == []


def test_the_async_client_has_the_same_methods(server: Server) -> None:
    async def run() -> None:
        async with AsyncClient(server.url, key=ADMIN) as c:
            assert (await c.create_collection("async-one", schema="support")).name == "async-one"
            await c.upsert([{"id": "X-1", "title": "Dark mode for the dashboard", "created": "2026-01-01"},
                            {"id": "X-2", "title": "Night theme for dashboards please", "created": "2026-01-02"}],
                           collection="async-one")
            assert (await c.get("X-1", collection="async-one")).title.startswith("Dark mode")
            res = await c.search("dark theme on the dashboard", k=2, collection="async-one")
            assert {h.id for h in res.hits} == {"X-1", "X-2"}
            assert [h.id for h in (await c.similar("X-1", collection="async-one")).hits] == ["X-2"]
            dup = await c.duplicates({"title": "dark dashboard theme"}, collection="async-one")
            assert dup.is_duplicate is None and len(dup.candidates) == 2
            marked = await c.search("dark theme", k=2, collection="async-one", snippets=True)
            assert {"dark", "theme"} & set(marked.hits[0].highlight or []) and marked.hits[0].snippet == ""
            fb = await c.feedback("X-1", "X-2", "duplicate", by="bo", collection="async-one")
            assert (fb.label, fb.by) == ("duplicate", "bo")
            assert [d.candidate_id for d in await c.feedback_for("X-1", collection="async-one")] == ["X-2"]
            assert (await c.schema(collection="async-one")).name == "support"
            assert (await c.delete("X-2", collection="async-one")).deleted == "X-2"
            assert "async-one" in {x.name for x in await c.collections()}
            assert (await c.collection("async-one")).tickets == 1
            with pytest.raises(Unprocessable):  # a collection without links has nothing to train on
                await c.train(collection="async-one")
            with pytest.raises(NotFound):
                await c.job("0123456789abcdef", collection="async-one")
            await c.delete_collection("async-one")

    asyncio.run(run())


def test_a_503_is_retried_after_retry_after_then_surfaces_typed(tmp_path: Path) -> None:
    """A service still loading answers 503 with Retry-After (held there by the test hook for 4 s)."""
    srv = Server(tmp_path / "root", tmp_path / "server.log", root=True,
                 env={"TICKETSEARCH_TEST_START_DELAY_S": "4", "TICKETSEARCH_RETRY_AFTER_S": "1"})
    srv.start(wait_ready=False)
    try:
        deadline = time.monotonic() + 60
        while True:  # listening (health is answered at once), still loading
            try:
                if httpx.get(srv.url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with Client(srv.url, retries=0) as impatient, pytest.raises(Unavailable) as err:
            impatient.create_collection("first")
        assert isinstance(err.value, UnavailableError) and err.value.retry_after == 1.0
        assert err.value.detail[0]["type"] == "loading"

        async def async_impatient() -> None:
            async with AsyncClient(srv.url, retries=1) as c:
                await c.create_collection("second")

        with pytest.raises(Unavailable):  # one retry after 1 s: still loading
            asyncio.run(async_impatient())
        t0 = time.monotonic()
        with Client(srv.url, retries=30) as patient:
            assert patient.create_collection("third").name == "third"
        assert time.monotonic() - t0 >= 0.5  # it waited for the service, it did not just get through
        log = srv.log()
        assert log.count('"PUT /v1/collections/third HTTP/1.1" 503') >= 1
        assert '"PUT /v1/collections/third HTTP/1.1" 201' in log
    finally:
        srv.stop()


@pytest.mark.parametrize("dots", [".", "..", "..."])
def test_an_id_of_dots_is_refused_and_never_changes_the_route(server: Server, tmp_path: Path, dots: str) -> None:
    """Ids are data, never paths: an id of dots only is refused by the API, the client and a file alike (422, the
    same rule), and the client encodes it as one segment, so `delete("..")` cannot reach the collection."""
    from ticketsearch.index_data.records import read_tickets
    from ticketsearch.index_data.schema import load_schema

    with Client(server.url, key=ADMIN, timeout=120) as c:
        c.create_collection(f"dots{len(dots)}", schema="support")
        name = f"dots{len(dots)}"
        c.upsert({"id": "D-1", "title": "a ticket to keep", "created": "2026-01-05"}, collection=name)
        with pytest.raises(Unprocessable):
            c.upsert({"id": dots, "title": "t", "created": "2026-01-05"}, collection=name)
        for call in (lambda: c.delete(dots, collection=name), lambda: c.get(dots, collection=name),
                     lambda: c.similar(dots, collection=name)):
            with pytest.raises(QueryError):  # the server's 422 (Unprocessable), or the request's own rule
                call()
        assert c.collection(name).tickets == 1 and c.get("D-1", collection=name).title == "a ticket to keep"
    r = server.client(ADMIN).get(f"/v1/collections/{name}/tickets/{dots.replace('.', '%2E')}")
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "path.ticket_id"
    assert "must not be only dots" in r.json()["detail"][0]["reason"], r.text  # a file's words, not a regex
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"id": dots, "title": "t", "created": "2026-01-05"}) + "\n")
    [row] = list(read_tickets(path, load_schema("support")))
    assert isinstance(row, RowError) and "only dots" in row.reason
