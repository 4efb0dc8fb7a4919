"""Many collections on one real server (`ticketsearch serve --root`): schemas, scoped keys, isolation, idle close
and reopen, and a collection before its first model."""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ticketsearch.results import MAX_VALIDATION_FOLDS

from .server import Server

ADMIN = "admin-key-0000001"
ACME_W = "acme-writer-00001"
ACME_R = "acme-reader-00001"
BETA_W = "beta-writer-00001"
KEYS = f"{ADMIN}:admin,{ACME_W}:write@acme,{ACME_R}:read@acme,{BETA_W}:write@beta"
# a schema of another shape than `support`: labels (a list) and a priority, title-only text
GITHUB_LIKE = {"name": "github-like", "text": {"fields": ["title", "body"]},
               "fields": [{"name": "labels", "kind": "multi"}, {"name": "priority", "kind": "categorical"}]}
ACME_TICKETS = [
    {"id": "T-1", "title": "Refund not received after cancelling the subscription", "created": "2025-01-02",
     "body": "Customer cancelled on the 3rd and the refund never reached the card.",
     "fields": {"product": "Billing Portal", "category": "high"}},
    {"id": "A-2", "title": "Charged twice for the annual plan", "created": "2025-01-03",
     "body": "Two identical charges on the statement for one subscription.", "fields": {"product": "Billing Portal"}},
    {"id": "A-3", "title": "Password reset email never arrives", "created": "2025-01-04",
     "body": "The reset link email does not arrive, spam folder checked.", "fields": {"product": "Login"}},
]
BETA_TICKETS = [
    {"id": "T-1", "title": "Segfault in the parser on nested arrays", "created": "2025-02-01",
     "body": "Parsing [[[]]] crashes with SIGSEGV in parse_value.", "fields": {"labels": ["bug", "crash"]}},
    {"id": "B-2", "title": "Refund API returns 500 for partial refunds", "created": "2025-02-02",
     "body": "POST /refunds with an amount below the charge fails with a server error.",
     "fields": {"labels": ["bug"], "priority": "p1"}},
]


def client(server: Server, key: str | None) -> httpx.Client:
    return server.client(key)


def serve_acme_and_beta(root: Path) -> Iterator[Server]:
    """A server holding acme (ACME_TICKETS) and beta (BETA_TICKETS), and nothing else."""
    srv = Server(root / "root", root / "server.log", root=True,
                 env={"TICKETSEARCH_API_KEYS": KEYS, "TICKETSEARCH_MAX_OPEN_COLLECTIONS": "2",
                      "TICKETSEARCH_COLLECTION_IDLE_S": "2"}).start()
    admin = srv.client(ADMIN)
    assert admin.put("/v1/collections/acme", json={"schema": "support"}).status_code == 201
    r = admin.put("/v1/collections/beta", json={"schema": GITHUB_LIKE})
    assert r.status_code == 201, r.text
    assert srv.client(ACME_W).post("/v1/collections/acme/tickets", json=ACME_TICKETS).status_code == 200
    assert srv.client(BETA_W).post("/v1/collections/beta/tickets", json=BETA_TICKETS).status_code == 200
    yield srv
    srv.stop()
    for key in (ADMIN, ACME_W, ACME_R, BETA_W):
        assert key not in srv.log(), "an API key reached the log"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Shared by the tests that leave acme and beta as they found them, and add no collection."""
    yield from serve_acme_and_beta(tmp_path_factory.mktemp("collections"))


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[Server]:
    """For a test that writes to acme or adds collections: a server of its own, so that what the others see of
    acme, of the collection list and of the metrics does not depend on whether it ran before them."""
    yield from serve_acme_and_beta(tmp_path)


def test_create_refuses_what_exists_bad_names_and_bad_schemas(server: Server) -> None:
    admin = server.client(ADMIN)
    r = admin.put("/v1/collections/acme", json={"schema": "support"})
    assert r.status_code == 409 and "already exists" in r.json()["detail"][0]["reason"]
    for bad in ("Acme", "-lead", "a" * 64, "dot.ted", "sp%20ace", "_x"):
        r = admin.put(f"/v1/collections/{bad}", json={"schema": "support"})
        assert r.status_code == 422, (bad, r.text)
    for schema in ("nope", {"name": "x", "fields": [{"name": "f", "kind": "weird"}]},
                   {"name": "x", "fields": [{"name": "resolution", "kind": "categorical"}]},  # a leaky field
                   {"fields": []}, 7):
        r = admin.put("/v1/collections/newone", json={"schema": schema})
        assert r.status_code == 422, (schema, r.text)
    assert admin.get("/v1/collections/newone").status_code == 404  # nothing half-made was left


def test_each_key_sees_only_its_collections(server: Server) -> None:
    names = {k: [c["name"] for c in server.client(k).get("/v1/collections").json()]
             for k in (ADMIN, ACME_W, ACME_R, BETA_W)}
    assert names[ADMIN] == ["acme", "beta"]
    assert names[ACME_W] == names[ACME_R] == ["acme"] and names[BETA_W] == ["beta"]
    info = server.client(ACME_R).get("/v1/collections/acme").json()
    assert info["tickets"] == 3 and info["schema_name"] == "support" and info["model"] == "all-MiniLM-L6-v2"
    assert info["reranker"]["status"] == "none"
    assert server.client(BETA_W).get("/v1/collections/beta").json()["schema_name"] == "github-like"


def test_an_unseen_collection_is_404_whether_it_exists_or_not(server: Server) -> None:
    acme = server.client(ACME_W)
    requests = [("GET", "/v1/collections/{c}", None), ("POST", "/v1/collections/{c}/search", {"text": "refund"}),
                ("GET", "/v1/collections/{c}/tickets/T-1", None), ("GET", "/v1/collections/{c}/tickets/T-1/similar",
                                                                     None),
                ("POST", "/v1/collections/{c}/duplicates", {"title": "refund"}),
                ("POST", "/v1/collections/{c}/tickets", BETA_TICKETS[0]), ("DELETE", "/v1/collections/{c}/tickets/T-1",
                                                                          None),
                ("DELETE", "/v1/collections/{c}", None), ("PUT", "/v1/collections/{c}", {"schema": "support"}),
                ("POST", "/v1/collections/{c}/train", {}), ("GET", "/v1/collections/{c}/jobs/0123456789abcdef", None)]
    for method, path, body in requests:
        seen = acme.request(method, path.format(c="beta"), json=body)  # exists, not this key's
        missing = acme.request(method, path.format(c="gamma"), json=body)  # does not exist
        assert seen.status_code == missing.status_code == 404, (method, path, seen.text, missing.text)
        assert seen.json()["detail"][0]["reason"].replace("beta", "X") == \
            missing.json()["detail"][0]["reason"].replace("gamma", "X")
    admin = server.client(ADMIN)  # sees every collection: a missing one is 404 as well
    assert admin.post("/v1/collections/gamma/search", json={"text": "x"}).status_code == 404
    assert server.client(BETA_W).get("/v1/collections/beta/tickets/T-1").status_code == 200  # it does exist


def test_scopes_401_and_403(server: Server) -> None:
    ticket = {"id": "W-1", "title": "write probe", "created": "2025-03-01"}
    assert httpx.post(server.url + "/v1/collections/acme/search", json={"text": "x"}).status_code == 401
    assert server.client("not-a-key-at-all").get("/v1/collections").status_code == 401
    r = server.client(ACME_R).post("/v1/collections/acme/tickets", json=ticket)
    assert r.status_code == 403 and "write scope is needed" in r.json()["detail"][0]["reason"]
    assert server.client(ACME_R).delete("/v1/collections/acme/tickets/T-1").status_code == 403
    assert server.client(ACME_W).delete("/v1/collections/acme").status_code == 403  # admin only
    assert server.client(ACME_W).put("/v1/collections/acme", json={"schema": "support"}).status_code == 403
    assert server.client(ACME_W).post("/v1/collections/acme/train", json={}).status_code == 403
    assert server.client(ACME_W).get("/metrics").status_code == 403  # it names every collection
    assert server.client(ACME_R).post("/v1/collections/acme/search", json={"text": "refund"}).status_code == 200


def test_the_same_id_in_two_collections_is_two_tickets(server: Server) -> None:
    a = server.client(ACME_W).get("/v1/collections/acme/tickets/T-1").json()
    b = server.client(BETA_W).get("/v1/collections/beta/tickets/T-1").json()
    assert a["title"].startswith("Refund not received") and b["title"].startswith("Segfault")
    assert "product" in a["fields"] and "labels" in b["fields"] and "labels" not in a["fields"]


def test_search_similar_and_duplicates_stay_in_their_collection(server: Server) -> None:
    acme_ids, beta_ids = {t["id"] for t in ACME_TICKETS}, {t["id"] for t in BETA_TICKETS}
    acme, beta = server.client(ACME_W), server.client(BETA_W)
    for c, name, ids, other in ((acme, "acme", acme_ids, BETA_TICKETS), (beta, "beta", beta_ids, ACME_TICKETS)):
        for query in ("refund for a partial refund fails", "segfault parsing nested arrays", "password reset email"):
            res = c.post(f"/v1/collections/{name}/search", json={"text": query, "k": 10}).json()
            assert {h["id"] for h in res["hits"]} <= ids, (name, query, res["hits"])
            assert {h["title"] for h in res["hits"]}.isdisjoint({t["title"] for t in other})
        sim = c.get(f"/v1/collections/{name}/tickets/T-1/similar").json()
        assert {h["id"] for h in sim["hits"]} <= ids - {"T-1"}
        dup = c.post(f"/v1/collections/{name}/duplicates", json={"title": "Refund API returns 500"}).json()
        assert {h["id"] for h in dup["candidates"]} <= ids
    # the beta ticket most like "refund" is B-2; acme never answers with it, nor with its text
    res = acme.post("/v1/collections/acme/search", json={"text": "Refund API returns 500 for partial refunds"})
    assert "B-2" not in res.text and "partial refunds" not in res.text.replace(res.json()["query"], "")
    missing = acme.get("/v1/collections/acme/tickets/B-2")
    assert missing.status_code == 404 and "Refund API" not in missing.text


def test_before_its_first_model_a_collection_says_so(server: Server) -> None:
    acme = server.client(ACME_W)
    res = acme.post("/v1/collections/acme/search", json={"text": "refund never arrived"}).json()
    assert res["reranked"] is False and res["reranker"] is None
    assert any("no trained reranker yet" in n for n in res["notes"]), res["notes"]
    assert res["hits"][0]["rerank_score"] is None and res["hits"][0]["probability"] is None
    r = acme.post("/v1/collections/acme/duplicates", json={"title": "Refund never arrived", "body": "card refund"})
    assert r.status_code == 200, r.text
    dup = r.json()
    assert dup["is_duplicate"] is None and dup["probability"] is None and dup["threshold"] is None
    assert "no trained reranker yet" in dup["reason"] and dup["candidates"][0]["id"] == "T-1"
    # a dedupe job needs a trained model: refused when asked (409), never accepted and failed later
    r = server.client(ADMIN).post("/v1/collections/acme/dedupe", json={"precision": 0.9})
    assert r.status_code == 409 and "dedupe needs a trained reranker" in r.json()["detail"][0]["reason"], r.text
    assert not list((Path(server.index_dir) / "collections" / "acme").glob("jobs/*.json"))


def test_metrics_are_labelled_by_collection(server: Server) -> None:
    server.client(ACME_W).post("/v1/collections/acme/search", json={"text": "refund"})
    server.client(BETA_W).post("/v1/collections/beta/search", json={"text": "crash"})
    text = server.client(ADMIN).get("/metrics").text
    for name in ("acme", "beta"):
        assert re.search(rf'ticketsearch_requests_total{{collection="{name}",method="POST",'
                         rf'route="/v1/collections/{{name}}/search",status="200"}}', text), name
        assert f'ticketsearch_stage_seconds_count{{collection="{name}",stage="encode"}}' in text
    assert 'collection="gamma"' not in text  # a name nobody may see never becomes a label
    for t in ACME_TICKETS + BETA_TICKETS:  # and no ticket's id or text is in the metrics
        assert f'"{t["id"]}"' not in text and t["title"] not in text


def test_idle_collections_close_and_reopen_losing_nothing(own_server: Server) -> None:
    server = own_server
    admin, acme = server.client(ADMIN), server.client(ACME_W)
    assert admin.put("/v1/collections/gamma", json={"schema": "support"}).status_code == 201
    new = {"id": "IDLE-1", "title": "Invoice PDF shows the wrong VAT number", "created": "2025-04-01",
           "body": "The VAT number printed on invoices is the old one."}
    assert acme.post("/v1/collections/acme/tickets", json=new).status_code == 200
    for name in ("beta", "gamma"):  # three collections touched, at most two open at once
        assert admin.post(f"/v1/collections/{name}/search", json={"text": "x"}).status_code == 200
        assert sum(c["open"] for c in admin.get("/v1/collections").json()) <= 2
    deadline = time.monotonic() + 30
    while any(c["open"] for c in admin.get("/v1/collections").json()):
        assert time.monotonic() < deadline, "idle collections were not closed"
        time.sleep(0.3)
    assert "closed collection acme" in server.log()
    got = acme.get("/v1/collections/acme/tickets/IDLE-1")
    assert got.status_code == 200 and got.json()["title"] == new["title"]
    res = acme.post("/v1/collections/acme/search", json={"text": "wrong VAT number on the invoice", "k": 3}).json()
    assert res["hits"][0]["id"] == "IDLE-1"
    assert [c["tickets"] for c in admin.get("/v1/collections").json() if c["name"] == "acme"] == [4]
    assert admin.delete("/v1/collections/gamma").status_code == 204
    assert admin.get("/v1/collections/gamma").status_code == 404
    assert not (Path(server.index_dir) / "collections" / "gamma").exists()


def wait_job(c: httpx.Client, name: str, job_id: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = c.get(f"/v1/collections/{name}/jobs/{job_id}").json()
        if job["state"] in ("done", "failed") or time.monotonic() > deadline:
            return job
        time.sleep(0.5)


def test_a_training_job_swaps_its_model_in_without_a_restart(own_server: Server, demo_rows: list[dict]) -> None:
    server = own_server
    admin = server.client(ADMIN)
    assert admin.put("/v1/collections/trained", json={"schema": "support"}).status_code == 201
    r = admin.post("/v1/collections/acme/train", json={})
    assert r.status_code == 422 and "duplicate link" in r.text  # acme has no links to learn from
    assert admin.post("/v1/collections/trained/tickets", json=demo_rows).status_code == 200
    assert admin.put("/v1/collections/waits", json={"schema": "support"}).status_code == 201
    assert admin.post("/v1/collections/waits/tickets", json=demo_rows[:200]).status_code == 200
    query = {"text": demo_rows[-1]["title"], "k": 5}
    before = admin.post("/v1/collections/trained/search", json=query).json()
    assert before["reranker"] is None
    r = admin.post("/v1/collections/trained/train", json={"validation_folds": MAX_VALIDATION_FOLDS + 1})
    assert r.status_code == 422 and "validation_folds" in r.text, r.text  # the CLI's bound, before any work
    for dates in ({"train_before": "2025-06-01T00:00:00Z", "valid_before": "2025-05-01"},
                  {"train_before": 1748736000}):  # the CLI's and the library's rules: a period, ISO strings
        r = admin.post("/v1/collections/trained/train", json=dates)
        assert r.status_code == 422 and ("valid_before must be after" in r.text or "ISO-8601" in r.text), r.text
    r = admin.post("/v1/collections/trained/train", json={"variant": "rerank-cross-shuffled"})  # an ablation
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "body.variant", r.text
    # one earlier period of the same length joins validation: the decision pools it and says so
    r = admin.post("/v1/collections/trained/train", json={"epochs": 8, "install": "always", "validation_folds": 1,
                                                           "variant": "rerank-cross+pair"})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["state"] in ("queued", "running") and job["collection"] == "trained"
    # one training job at a time across collections (TICKETSEARCH_TRAINING_JOBS, default 1): another
    # collection's job is accepted and waits, queued, until the first has finished
    waiting = admin.post("/v1/collections/waits/train", json={"epochs": 1})
    assert waiting.status_code == 202 and waiting.json()["state"] == "queued", waiting.text
    second = admin.post("/v1/collections/trained/train", json={})
    assert second.status_code == 409 and job["id"] in second.text
    during = admin.post("/v1/collections/trained/search", json=query)  # answered meanwhile, by the old order
    assert during.status_code == 200
    assert admin.delete("/v1/collections/trained").status_code == 409  # not while it trains
    assert admin.get(f"/v1/collections/waits/jobs/{waiting.json()['id']}").json()["state"] == "queued"
    done = wait_job(admin, "trained", job["id"])
    assert done["state"] == "done", done
    then = wait_job(admin, "waits", waiting.json()["id"])
    assert then["state"] == "done" and then["started"] >= done["finished"], (then, done)
    assert done["validation"]["first_stage"]["queries"] > 0 and "rerank-cross+pair" in done["validation"]
    model = done["result"]["model"]
    assert done["result"]["installed"] is True and model.startswith("rerank-cross+pair@"), done["result"]
    decision = done["result"]["decision"]
    assert decision["folds"] == 1 and "the validation period and 1 earlier fold" in decision["reason"], decision
    fold = done["result"]["folds"][0]  # the fold's own figures, and what validation alone would have decided
    assert decision["queries"] == fold["queries"] + done["validation"]["first_stage"]["queries"], done["result"]
    assert done["result"]["decision_without_folds"]["folds"] == 0
    after = admin.post("/v1/collections/trained/search", json=query).json()
    assert after["reranked"] is True and after["reranker"] == model
    assert after["hits"][0]["probability"] is not None
    dup = admin.post("/v1/collections/trained/duplicates", json={"title": demo_rows[-1]["title"]}).json()
    assert dup["is_duplicate"] is not None and dup["reranker"] == model and dup["reason"] is None
    info = admin.get("/v1/collections/trained").json()
    assert info["reranker"] == {"status": "trained", "model": model, "reason": info["reranker"]["reason"]}
    # a write after the swap is reranked with the new model's vectors at once
    new = {**demo_rows[0], "id": "NEW-1", "created": "2026-01-01"}
    assert admin.post("/v1/collections/trained/tickets", json=new).status_code == 200
    res = admin.post("/v1/collections/trained/search", json={"text": new["title"], "k": 3}).json()
    assert res["reranker"] == model and "NEW-1" in {h["id"] for h in res["hits"]}
    # the record outlives the job, and an unknown job is 404
    assert admin.get(f"/v1/collections/trained/jobs/{job['id']}").json()["state"] == "done"
    assert admin.get("/v1/collections/trained/jobs/0123456789abcdef").status_code == 404
    assert (Path(server.index_dir) / "collections" / "trained" / "jobs" / f"{job['id']}.json").is_file()


@pytest.fixture
def trained_server(own_server: Server, demo_rows: list[dict]) -> Server:
    """A server whose collection `trained` holds what the training test above leaves there (the demo tickets and
    NEW-1, 301 tickets) and has a trained model."""
    admin = own_server.client(ADMIN)
    assert admin.put("/v1/collections/trained", json={"schema": "support"}).status_code == 201
    new = {**demo_rows[0], "id": "NEW-1", "created": "2026-01-01"}
    assert admin.post("/v1/collections/trained/tickets", json=[*demo_rows, new]).status_code == 200
    r = admin.post("/v1/collections/trained/train", json={"epochs": 8, "install": "always", "validation_folds": 0})
    assert r.status_code == 202, r.text
    job = wait_job(admin, "trained", r.json()["id"])
    assert job["state"] == "done" and job["result"]["installed"] is True, job
    return own_server


def test_a_dedupe_job_finds_clusters(trained_server: Server) -> None:
    server = trained_server
    admin = server.client(ADMIN)
    r = admin.post("/v1/collections/trained/dedupe", json={"precision": 0.6})  # training stored no threshold
    assert r.status_code == 422 and "stores duplicate thresholds for precision 0.80" in r.text, r.text
    for half in ({"calibrate_since": "2020-01-01T00:00:00Z"}, {"calibrate_until": "2020-01-01T00:00:00Z"},
                 {"calibrate_since": "2020-01-02", "calibrate_until": "2020-01-01"}, {"since": 1577836800}):
        r = admin.post("/v1/collections/trained/dedupe", json={"precision": 0.8, **half})  # the CLI's rules
        assert r.status_code == 422 and ("calibrate_" in r.text or "ISO-8601" in r.text), (half, r.text)
    r = admin.post("/v1/collections/trained/dedupe", json={"precision": 0.8})
    assert r.status_code == 202 and r.json()["kind"] == "dedupe", r.text
    done = wait_job(admin, "trained", r.json()["id"])
    assert done["state"] == "done" and done["result"]["tickets"] == 301 and done["result"]["clusters"] > 0, done
    lines = admin.get(f"/v1/collections/trained/jobs/{done['id']}/clusters")
    assert lines.status_code == 200 and lines.headers["content-type"].startswith("application/x-ndjson")
    rows = [json.loads(x) for x in lines.text.splitlines()]
    assert len(rows) == done["result"]["clusters"] and all(len(r["members"]) >= 2 for r in rows)
    assert sum(link["known"] for r in rows for link in r["links"]) > 0  # the collection's links, reported as known
    assert admin.get("/v1/collections/trained/jobs/0123456789abcdef/clusters").status_code == 404
    assert server.client(ACME_W).post("/v1/collections/acme/dedupe", json={}).status_code == 403


def test_a_broken_collection_answers_503_without_the_servers_paths(own_server: Server) -> None:
    """A collection whose store cannot be opened answers 503 naming the problem; no answer tells a client where the
    server keeps its files (was: the absolute path of the store)."""
    own_server.stop()
    store = own_server.index_dir / "collections" / "acme" / "tickets.duckdb"
    store.write_bytes(b"not a duckdb file at all" * 100)
    own_server.start()
    r = own_server.client(ACME_R).post("/v1/collections/acme/search", json={"text": "refund"})
    assert r.status_code == 503 and r.json()["detail"][0]["type"] == "unavailable", r.text
    for path in (own_server.index_dir, own_server.index_dir.resolve(), Path(tempfile.gettempdir())):
        assert str(path) not in r.text, r.text
    assert "<served directory>/collections/acme/tickets.duckdb" in r.text


def test_each_collection_has_its_own_duplicate_precision(own_server: Server) -> None:
    """Set at creation and changed by PATCH (admin), through the API and the client: the verdicts of that collection
    use the stored threshold of its precision at once and after a restart; the others keep the service's."""
    from ticketsearch.client import Client
    from ticketsearch.rerank.general import GeneralReranker

    admin = own_server.client(ADMIN)
    r = admin.put("/v1/collections/strict", json={"schema": "support", "general_model": True,
                                                  "duplicate_precision": 0.95})
    assert r.status_code == 201 and r.json()["duplicate_precision"] == 0.95, r.text
    assert admin.post("/v1/collections/strict/tickets", json=ACME_TICKETS).status_code == 200
    general = GeneralReranker()

    def verdict(name: str) -> tuple[float, float]:
        out = admin.post(f"/v1/collections/{name}/duplicates", json={"title": ACME_TICKETS[0]["title"]}).json()
        return out["target_precision"], out["threshold"]

    assert verdict("strict") == (0.95, pytest.approx(general.duplicate_threshold(0.95)))
    assert admin.get("/v1/collections/acme").json()["duplicate_precision"] == 0.9  # the service's
    assert Client(own_server.url, ADMIN).set_precision("strict", 0.8).duplicate_precision == 0.8
    assert verdict("strict") == (0.8, pytest.approx(general.duplicate_threshold(0.8)))
    search = admin.post("/v1/collections/strict/search", json={"text": "refund"}).json()
    assert search["threshold"] == pytest.approx(general.duplicate_threshold(0.8))
    for bad in (1.5, 0, "high"):
        assert admin.patch("/v1/collections/strict", json={"duplicate_precision": bad}).status_code == 422
    assert own_server.client(ACME_W).patch("/v1/collections/acme", json={"duplicate_precision": 0.8}
                                           ).status_code == 403
    own_server.stop()
    own_server.start()
    admin = own_server.client(ADMIN)
    assert verdict("strict")[0] == 0.8 and admin.get("/v1/collections/strict").json()["duplicate_precision"] == 0.8
    assert admin.patch("/v1/collections/strict", json={"duplicate_precision": None}).json()[
        "duplicate_precision"] == 0.9  # back to the service's
    assert verdict("strict")[0] == 0.9


def test_the_services_duplicate_precision_is_every_collections_default(tmp_path: Path) -> None:
    """TICKETSEARCH_DUPLICATE_PRECISION: the target precision of a collection that sets none of its own."""
    from ticketsearch.rerank.general import GeneralReranker

    srv = Server(tmp_path / "root", tmp_path / "server.log", root=True,
                 env={"TICKETSEARCH_API_KEYS": KEYS, "TICKETSEARCH_DUPLICATE_PRECISION": "0.95"}).start()
    try:
        admin = srv.client(ADMIN)
        r = admin.put("/v1/collections/plain", json={"schema": "support", "general_model": True})
        assert r.status_code == 201 and r.json()["duplicate_precision"] == 0.95, r.text
        assert admin.post("/v1/collections/plain/tickets", json=ACME_TICKETS).status_code == 200
        out = admin.post("/v1/collections/plain/duplicates", json={"title": ACME_TICKETS[0]["title"]}).json()
        assert out["target_precision"] == 0.95
        assert out["threshold"] == pytest.approx(GeneralReranker().duplicate_threshold(0.95))
        assert out["threshold"] != pytest.approx(GeneralReranker().duplicate_threshold(0.9))  # not the default's
    finally:
        srv.stop()
