"""The HTTP API end to end, against a real uvicorn server: auth, bad input, live updates, duplicates, metrics."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from ticketsearch.index_dir import IndexDir

from .server import Server

READ_KEY = "reader-key-123456"
WRITE_KEY = "writer-key-567890"


@pytest.fixture(scope="module")
def server(trained_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Server:
    root = tmp_path_factory.mktemp("api")
    shutil.copytree(trained_index, root / "idx")
    srv = Server(root / "idx", root / "server.log",
                 env={"TICKETSEARCH_API_KEYS": f"{READ_KEY}:read,{WRITE_KEY}:write",
                      "TICKETSEARCH_MAX_BODY_BYTES": "65536"}).start()
    yield srv
    srv.stop()
    assert READ_KEY not in srv.log() and WRITE_KEY not in srv.log(), "an API key reached the log"


@pytest.fixture(scope="module")
def reader(server: Server) -> httpx.Client:
    return server.client(READ_KEY)


@pytest.fixture(scope="module")
def writer(server: Server) -> httpx.Client:
    return server.client(WRITE_KEY)


AUTH_TICKET = {"id": "AUTH-1", "title": "auth probe", "created": "2025-01-01T00:00:00"}
# (method, path, json body, scope needed, what a key with that scope gets)
ROUTES = [
    ("GET", "/metrics", None, "read", "ticketsearch_requests_total"),
    ("POST", "/v1/search", {"text": "refund"}, "read", "hits"),
    ("GET", "/v1/tickets/SUP-10/similar", None, "read", "hits"),
    ("POST", "/v1/duplicates", {"title": "refund missing"}, "read", "is_duplicate"),
    ("GET", "/v1/tickets/SUP-10", None, "read", "SUP-10"),
    ("GET", "/v1/schema", None, "read", "Billing Portal"),
    ("POST", "/v1/tickets", AUTH_TICKET, "write", "AUTH-1"),
    ("DELETE", "/v1/tickets/AUTH-1", None, "write", "AUTH-1"),
]


@pytest.mark.parametrize(("method", "path", "body", "needed", "answer"), ROUTES,
                         ids=[f"{m} {p}" for m, p, *_ in ROUTES])
def test_auth_on_every_route(server: Server, writer: httpx.Client, method: str, path: str, body: dict | None,
                             needed: str, answer: str) -> None:
    def call(headers: dict[str, str]) -> httpx.Response:
        return httpx.request(method, server.url + path, json=body, headers=headers, timeout=60)

    if method == "DELETE":  # the ticket to delete, whatever ran before
        assert writer.post("/v1/tickets", json=AUTH_TICKET).status_code == 200
    for headers in ({}, {"Authorization": "Bearer not-a-key-0000"}, {"Authorization": f"Basic {READ_KEY}"}):
        r = call(headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.headers["www-authenticate"] == "Bearer" and r.json()["detail"][0]["field"] == "header.authorization"
    r = call({"Authorization": f"Bearer {READ_KEY}"})
    if needed == "write":
        assert r.status_code == 403 and "write scope" in r.json()["detail"][0]["reason"], r.text
    else:
        assert r.status_code == 200 and answer in r.text, r.text
    r = call({"Authorization": f"Bearer {WRITE_KEY}"})  # write implies read
    assert r.status_code == 200 and answer in r.text, r.text


def test_health_routes_are_open(server: Server) -> None:
    assert httpx.get(server.url + "/healthz").json()["status"] == "ok"
    r = httpx.get(server.url + "/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ready" and r.json()["tickets"] >= 1000


BIG = "x" * 70_000
BAD_INPUT = [
    # (case, method, path, raw body or json, expected status, field named in the error, reason contains)
    ("unknown field", "POST", "/v1/search", {"text": "a", "colour": "red"}, 422, "body.colour", "Extra inputs"),
    ("wrong type", "POST", "/v1/search", {"text": 42}, 422, "body.text", "string"),
    ("k wrong type", "POST", "/v1/search", {"text": "a", "k": "ten"}, 422, "body.k", "integer"),
    ("empty text", "POST", "/v1/search", {"text": ""}, 422, "body.text", "must not be empty"),
    ("whitespace text", "POST", "/v1/search", {"text": "  \n\t "}, 422, "body.text", "whitespace"),
    ("missing text", "POST", "/v1/search", {"k": 3}, 422, "body", "give a query text, or like"),
    ("NaN in a field", "POST", "/v1/search", '{"text": "a", "fields": {"affected_count": NaN}}', 422,
     "body.fields.affected_count", "NaN"),
    ("Infinity in a filter", "POST", "/v1/search", '{"text": "a", "filters": {"affected_count": Infinity}}', 422,
     "body.filters.affected_count", "NaN and Infinity"),
    ("k too small", "POST", "/v1/search", {"text": "a", "k": 0}, 422, "body.k", "greater than or equal to 1"),
    ("k too large", "POST", "/v1/search", {"text": "a", "k": 101}, 422, "body.k", "less than or equal to 100"),
    ("filter on unknown field", "POST", "/v1/search", {"text": "a", "filters": {"colour": "red"}}, 422,
     "body.filters.colour", "allowed: category, item_type"),
    ("query field unknown", "POST", "/v1/search", {"text": "a", "fields": {"colour": "red"}}, 422,
     "body.fields.colour", "allowed:"),
    ("object as a field value", "POST", "/v1/search", {"text": "a", "fields": {"product": {"x": 1}}}, 422,
     "body.fields.product", "string, a number"),
    ("bad date", "POST", "/v1/search", {"text": "a", "created_before": "last tuesday"}, 422,
     "body.created_before", "ISO-8601"),
    ("number as a date", "POST", "/v1/search", {"text": "a", "created_after": 0}, 422, "body.created_after",
     "ISO-8601 date-time string, not int"),
    ("number as a duplicate's date", "POST", "/v1/duplicates", {"title": "a", "created": 0}, 422, "body.created",
     "ISO-8601 date-time string"),
    ("number as a ticket's date", "POST", "/v1/tickets", {"id": "B-1", "title": "t", "created": 0}, 422,
     "body.created", "ISO-8601 date-time string"),
    ("4th ticket of a batch", "POST", "/v1/tickets", [{"id": f"B-{i}", "title": "t", "created": "2025-01-01"}
                                                       for i in range(3)] + [{"id": "B-3", "title": "t"}], 422,
     "body.3.created", "required"),
    ("empty duplicate_of", "POST", "/v1/tickets", {"id": "B-1", "title": "t", "created": "2025-01-01",
                                                    "duplicate_of": ""}, 422, "body.duplicate_of", "at least 1"),
    ("control character in an id", "POST", "/v1/tickets", {"id": "B\t1", "title": "t", "created": "2025-01-01"},
     422, "body.id", "must not hold control characters"),  # a file's words, not the id pattern's regex
    ("id over the limit", "POST", "/v1/tickets", {"id": "B" * 257, "title": "t", "created": "2025-01-01"}, 422,
     "body.id", "at most 256"),
    ("its own duplicate", "POST", "/v1/tickets", [{"id": "B-1", "title": "t", "created": "2025-01-01",
                                                   "duplicate_of": "B-1"}], 409, "body.0.duplicate_of", "itself"),
    ("a string as the batch", "POST", "/v1/tickets", "\"tickets\"", 422, "body", "a ticket object or a list"),
    ("bad method", "POST", "/v1/search", {"text": "a", "method": "magic"}, 422, "body.method", "hybrid"),
    ("not JSON", "POST", "/v1/search", "{text: a", 422, "body.1", "JSON"),
    ("body too large", "POST", "/v1/search", {"text": BIG}, 413, "body", "larger than 65536 bytes"),
    ("similar k out of bounds", "GET", "/v1/tickets/SUP-10/similar?k=0", None, 422, "query.k", "greater than"),
    ("similar unknown id", "GET", "/v1/tickets/NOPE-1/similar", None, 404, "path.ticket_id", "not found"),
    ("get unknown id", "GET", "/v1/tickets/NOPE-1", None, 404, "path.ticket_id", "not found"),
    ("delete unknown id", "DELETE", "/v1/tickets/NOPE-1", None, 404, "path.ticket_id", "not found"),
    ("ticket without created", "POST", "/v1/tickets", {"id": "B-1", "title": "t"}, 422, "body.created",
     "required"),
    ("ticket with blank title", "POST", "/v1/tickets", {"id": "B-1", "title": " ", "body": "",
                                                         "created": "2025-01-01"}, 422, "body.title", "whitespace"),
    ("empty batch", "POST", "/v1/tickets", [], 422, "body", "at least 1"),
    ("ticket with unknown field", "POST", "/v1/tickets", {"id": "B-1", "title": "t", "created": "2025-01-01",
                                                           "fields": {"resolution": "Duplicate"}}, 422,
     "body.fields.resolution", "allowed:"),
    ("ticket id blank", "POST", "/v1/tickets", {"id": " ", "title": "t", "created": "2025-01-01"}, 422,
     "body.id", "start or end with whitespace"),
    ("ticket bad numeric", "POST", "/v1/tickets", {"id": "B-1", "title": "t", "created": "2025-01-01",
                                                    "fields": {"affected_count": "many"}}, 422,
     "body.fields.affected_count", "must be a number"),
    ("list for a single-valued field", "POST", "/v1/search", {"text": "a", "fields": {"product": ["a", "b"]}}, 422,
     "body.fields.product", "single value, not a list"),
    ("null filter", "POST", "/v1/search", {"text": "a", "filters": {"product": None}}, 422, "body.filters.product",
     "null"),
    ("duplicates with no text", "POST", "/v1/duplicates", {"title": " "}, 422, "body.title", "whitespace"),
    ("unknown route", "GET", "/v1/nothing", None, 404, "path", "Not Found"),
    ("batch over the limit", "POST", "/v1/tickets", [{"id": f"B-{i}", "title": "t", "created": "2025-01-01"}
                                                    for i in range(1001)], 422, "body", "at most 1000 items"),
]


@pytest.mark.parametrize(("case", "method", "path", "body", "status", "field", "reason"), BAD_INPUT,
                         ids=[c[0] for c in BAD_INPUT])
def test_bad_input_gets_a_clear_4xx(writer: httpx.Client, case: str, method: str, path: str, body, status: int,
                                    field: str, reason: str) -> None:
    raw = {"content": body, "headers": {"content-type": "application/json"}}
    kwargs = raw if isinstance(body, str) else {"json": body}
    r = writer.request(method, path, **kwargs)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert any(d["field"].startswith(field) and reason in d["reason"] for d in detail), detail
    assert all(d["field"] and d["reason"] for d in detail)
    assert not any("TicketIn" in d["field"] or "list[" in d["field"] for d in detail), detail  # the request's own names


def test_unseen_values_and_long_texts_are_fine(reader: httpx.Client) -> None:
    r = reader.post("/v1/search", json={"text": "refund not received " * 2000, "k": 3,
                                         "fields": {"product": "A product nobody has seen", "affected_count": 3}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["hits"]) == 3 and body["reranked"]
    hit = body["hits"][0]
    assert 0 <= hit["probability"] <= 1 and hit["rerank_score"] == hit["score"] and hit["retrieval_score"] is not None


def test_search_filters_dates_methods_and_explain(reader: httpx.Client) -> None:
    r = reader.post("/v1/search", json={"text": "app crashes on start", "filters": {"product": ["Mobile App"]},
                                         "created_before": "2025-01-01T00:00:00Z", "k": 5, "explain": True})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert hits and all(h["fields"]["product"] == "Mobile App" and h["created"] < "2025-01-01" for h in hits)
    assert all(h["attended"] and all(a["word"] for a in h["attended"]) for h in hits)
    for method in ("dense", "bm25", "title"):
        r = reader.post("/v1/search", json={"text": "app crashes on start", "method": method, "rerank": False, "k": 3})
        assert r.status_code == 200 and r.json()["method"] == method and not r.json()["reranked"]


def test_live_updates_add_update_delete(reader: httpx.Client, writer: httpx.Client) -> None:
    ticket = {"id": "LIVE-1", "title": "Quokka sync daemon segfaults", "created": "2025-06-01T10:00:00",
              "body": "The quokka sync daemon segfaults whenever the xylophone plugin loads.",
              "fields": {"product": "Mobile App", "category": "high"}}
    r = writer.post("/v1/tickets", json=ticket)
    assert r.status_code == 200 and r.json()["inserted"] == 1, r.text
    for method in ("hybrid", "dense", "bm25"):
        hits = reader.post("/v1/search", json={"text": "quokka daemon segfault xylophone", "method": method,
                                                "rerank": False}).json()["hits"]
        assert hits[0]["id"] == "LIVE-1", method
    reranked = reader.post("/v1/search", json={"text": "quokka daemon segfault xylophone", "k": 100}).json()
    assert reranked["reranked"] and "LIVE-1" in [h["id"] for h in reranked["hits"]]
    assert reader.get("/v1/tickets/LIVE-1").json()["title"] == ticket["title"]
    # update: the new text is what search sees
    new = {**ticket, "title": "Wombat exporter hangs", "body": "The wombat exporter hangs on marimba archives."}
    r = writer.post("/v1/tickets", json=[new])
    assert r.status_code == 200 and r.json()["updated"] == 1
    hits = reader.post("/v1/search", json={"text": "wombat exporter marimba", "rerank": False}).json()["hits"]
    assert hits[0]["id"] == "LIVE-1" and hits[0]["title"] == "Wombat exporter hangs"
    old = reader.post("/v1/search", json={"text": "quokka xylophone", "method": "bm25", "k": 5}).json()["hits"]
    assert "LIVE-1" not in [h["id"] for h in old]
    # delete: never returned again, under any filter or method
    r = writer.delete("/v1/tickets/LIVE-1")
    assert r.status_code == 200 and r.json()["deleted"] == "LIVE-1"
    assert reader.get("/v1/tickets/LIVE-1").status_code == 404
    for body in ({"text": "wombat exporter marimba"}, {"text": "wombat exporter", "filters": {"product": "Mobile App"}},
                 {"text": "wombat", "method": "bm25"}, {"text": "wombat exporter", "method": "dense", "k": 100},
                 {"text": "wombat exporter", "rerank": False, "filters": {"category": ["high", "low"]}}):
        ids = [h["id"] for h in reader.post("/v1/search", json=body).json()["hits"]]
        assert "LIVE-1" not in ids, body
    sim = reader.get("/v1/tickets/SUP-10/similar", params={"k": 100}).json()["hits"]
    assert "LIVE-1" not in [h["id"] for h in sim] and "SUP-10" not in [h["id"] for h in sim]


def test_batch_upsert_is_searchable_at_once(reader: httpx.Client, writer: httpx.Client) -> None:
    batch = [{"id": f"BATCH-{i}", "title": f"Batch ticket {i} about gizmo{i}", "body": f"gizmo{i} broke",
              "created": "2025-05-01T00:00:00"} for i in range(40)]
    r = writer.post("/v1/tickets", json=batch)
    assert r.status_code == 200 and r.json()["inserted"] == 40
    for i in (0, 17, 39):
        found = reader.post("/v1/search", json={"text": f"gizmo{i}", "method": "bm25", "k": 1}).json()
        assert found["hits"][0]["id"] == f"BATCH-{i}"


def test_versioned_writes_and_repeated_ids_are_named(reader: httpx.Client, writer: httpx.Client,
                                                     server: Server) -> None:
    from ticketsearch.client import Client

    def ticket(title: str, updated: str | None = None) -> dict:
        return {"id": "VER-1", "title": title, "created": "2025-05-01", **({"updated": updated} if updated else {})}

    r = writer.post("/v1/tickets", json=[ticket("zephyrine one", "2025-06-01T00:00:00Z"), ticket("zephyrine two"),
                                         ticket("zephyrine three", "2025-06-02T00:00:00Z")])
    assert r.status_code == 200 and (r.json()["inserted"], r.json()["repeated"], r.json()["stale"]) == (
        1, ["VER-1"], []), r.text
    assert reader.get("/v1/tickets/VER-1").json()["title"] == "zephyrine three"
    # an integration that retries an older write cannot go back in time: through the API and the client
    r = writer.post("/v1/tickets", json=ticket("zephyrine one", "2025-06-01T00:00:00Z"))
    assert r.status_code == 200 and (r.json()["stale"], r.json()["ids"], r.json()["updated"]) == (["VER-1"], [], 0)
    res = Client(server.url, WRITE_KEY).upsert(ticket("zephyrine two", "2025-06-02T00:00:00Z"))
    assert res.stale == ["VER-1"] and res.ids == []
    assert reader.get("/v1/tickets/VER-1").json()["title"] == "zephyrine three"
    hits = reader.post("/v1/search", json={"text": "zephyrine one", "method": "bm25", "k": 3}).json()["hits"]
    assert [h["title"] for h in hits if h["id"] == "VER-1"] == ["zephyrine three"]
    bad = writer.post("/v1/tickets", json=ticket("zephyrine", "yesterday"))
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "body.updated", bad.text


def test_duplicates_uses_the_stored_threshold(reader: httpx.Client, trained_index: Path) -> None:
    meta = json.loads((IndexDir(trained_index).reranker_path / "config.json").read_text())
    src = reader.get("/v1/tickets/SUP-900").json()
    r = reader.post("/v1/duplicates", json={"title": src["title"], "body": src["body"], "fields": src["fields"],
                                             "created": src["created"], "k": 3})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["threshold"] == pytest.approx(meta["duplicate_threshold"]) and out["target_precision"] == 0.9
    assert out["is_duplicate"] == (out["probability"] >= out["threshold"])
    assert all(c["created"] < src["created"] for c in out["candidates"])
    # a body of control characters only (ingest takes it) is no body: the title alone, not a 422 at body.text
    blank = reader.post("/v1/duplicates", json={"title": src["title"], "body": "\x00\x1b\n", "k": 3})
    alone = reader.post("/v1/duplicates", json={"title": src["title"], "k": 3})
    assert blank.status_code == alone.status_code == 200, blank.text
    assert [c["id"] for c in blank.json()["candidates"]] == [c["id"] for c in alone.json()["candidates"]]


def test_search_answers_its_threshold_and_snippets_on_request(reader: httpx.Client, trained_index: Path) -> None:
    meta = json.loads((IndexDir(trained_index).reranker_path / "config.json").read_text())
    plain = reader.post("/v1/search", json={"text": "charged twice for the subscription", "k": 5}).json()
    assert plain["threshold"] == pytest.approx(meta["duplicate_threshold"])
    assert all(h["snippet"] is None and h["highlight"] is None for h in plain["hits"])
    out = reader.post("/v1/search", json={"text": "charged twice for the subscription", "k": 5, "snippets": True})
    assert out.status_code == 200, out.text
    hits = out.json()["hits"]
    assert [h["id"] for h in hits] == [h["id"] for h in plain["hits"]]  # the same answer, with passages
    query_words = {"charged", "charge", "charges", "charging", "twice", "subscription", "subscriptions"}
    for h in hits:
        body = " ".join(reader.get(f"/v1/tickets/{h['id']}").json()["body"].split())
        assert h["snippet"] and h["snippet"].strip("…") in body
        assert set(h["highlight"]) <= query_words, h  # the query's words only (by stem), stopwords never
    # most hits share a word with the query (one may be a paraphrase: "Double payment taken from our card")
    assert sum(bool(query_words & set(h["highlight"])) for h in hits) >= 3, hits
    sim = reader.get("/v1/tickets/SUP-10/similar", params={"k": 3, "snippets": "true"}).json()
    for h in sim["hits"]:  # a passage of the hit's own body (a body-less ticket's passage is "")
        body = " ".join(reader.get(f"/v1/tickets/{h['id']}").json()["body"].split())
        assert isinstance(h["snippet"], str) and h["snippet"].strip("…") in body and (h["snippet"] or not body), h
    dup = reader.post("/v1/duplicates", json={"title": "charged twice", "k": 3, "snippets": True}).json()
    assert all(h["snippet"] for h in dup["candidates"])
    assert any(h["highlight"] for h in dup["candidates"]), dup  # "Customer charged twice for ..." is a template
    for h in dup["candidates"]:  # a query word in the title or passage is highlighted (whatever ranks the hit)
        words = {w.strip(".,:;!?'\"()").lower() for w in (h["title"] + " " + h["snippet"]).split()}
        assert words & {"charged", "twice"} <= {w.lower() for w in h["highlight"]}, h
        assert {w.lower() for w in h["highlight"]} <= {"charged", "charge", "charges", "charging", "twice"}, h
    assert reader.post("/v1/search", json={"text": "x", "snippets": 1}).status_code == 422  # a JSON boolean only


def test_schema_lists_fields_with_their_known_values(reader: httpx.Client, writer: httpx.Client) -> None:
    out = reader.get("/v1/schema").json()
    assert out == reader.get("/v1/collections/default/schema").json()
    assert out["name"] == "support" and out["text_fields"] == ["title", "body"]
    fields = {f["name"]: f for f in out["fields"]}
    assert fields["product"]["kind"] == "categorical" and "Billing Portal" in fields["product"]["values"]
    assert fields["affected_count"]["kind"] == "numeric" and fields["affected_count"]["values"] == []
    assert reader.get("/v1/collections/nope/schema").status_code == 404
    new = {"id": "SCHEMA-1", "title": "probe", "created": "2025-01-01T00:00:00", "fields": {"product": "Zeta Widget"}}
    assert writer.post("/v1/tickets", json=new).status_code == 200  # a write: the kept answer is stale
    def products() -> list[str]:
        return next(f for f in reader.get("/v1/schema").json()["fields"] if f["name"] == "product")["values"]

    assert "Zeta Widget" in products()
    assert writer.delete("/v1/tickets/SCHEMA-1").status_code == 200
    assert "Zeta Widget" not in products()


def test_metrics_count_routes_and_stages(reader: httpx.Client) -> None:
    reader.post("/v1/search", json={"text": "refund"})
    text = reader.get("/metrics").text
    assert ('ticketsearch_requests_total{collection="default",method="POST",route="/v1/search",status="200"}'
            in text)
    for stage in ("encode", "retrieve", "rerank", "fetch"):
        assert f'ticketsearch_stage_seconds_count{{collection="default",stage="{stage}"}}' in text
    assert 'ticketsearch_request_seconds_bucket{collection="default",le="0.05",route="/v1/search"}' in text


ODD_IDS = ["OWNER/REPO#12", "what?really", "100% sure", "a b  c", "Ünïcødé-票-42", "x/similar", "similar",
           "%2F-literal", "a/b/c?d=e#f"]


@pytest.mark.parametrize("tid", ODD_IDS)
def test_any_printable_id_is_reachable(reader: httpx.Client, writer: httpx.Client, tid: str) -> None:
    """An id is one path segment, percent-encoded: write, get, similar and delete reach the same ticket. An id
    ending in "/similar" is the ticket itself at .../x%2Fsimilar and its similar tickets at .../x%2Fsimilar/similar."""
    ticket = {"id": tid, "title": f"Odd id probe {tid}", "body": "refund not received for the odd id probe",
              "created": "2025-03-01T00:00:00Z"}
    r = writer.post("/v1/tickets", json=ticket)
    assert r.status_code == 200 and r.json()["ids"] == [tid], r.text
    path = "/v1/tickets/" + quote(tid, safe="")
    got = reader.get(path)
    assert got.status_code == 200 and got.json()["id"] == tid and got.json()["title"] == ticket["title"], got.text
    sim = reader.get(path + "/similar", params={"k": 5})
    assert sim.status_code == 200, sim.text
    assert sim.json()["hits"] and tid not in [h["id"] for h in sim.json()["hits"]]
    hits = reader.post("/v1/search", json={"text": ticket["title"], "method": "bm25", "k": 3}).json()["hits"]
    assert hits[0]["id"] == tid
    r = writer.delete(path)
    assert r.status_code == 200 and r.json()["deleted"] == tid, r.text
    assert reader.get(path).status_code == 404 and reader.get(path + "/similar").status_code == 404


def test_unencoded_slash_is_not_an_id(reader: httpx.Client) -> None:
    assert reader.get("/v1/tickets/SUP-10/similar").status_code == 200  # the similar route of SUP-10
    r = reader.get("/v1/tickets/SUP-10/other")
    assert r.status_code == 404 and r.json()["detail"][0]["field"] == "path"


def test_options_lists_every_method_of_a_path(reader: httpx.Client) -> None:
    for path, methods in (("/v1/tickets/SUP-10", {"GET", "DELETE"}), ("/v1/tickets", {"POST"}),
                          ("/v1/tickets/SUP-10/similar", {"GET"})):
        r = reader.options(path)
        assert r.status_code == 405, r.text
        assert {m.strip() for m in r.headers["allow"].split(",")} - {"HEAD"} == methods, (path, r.headers)


# One rule for an incoming ticket (requests.TicketIn + records.normalize_row): what the API refuses, a file's row
# is refused for, with the same field and message (the file adds its line); what one keeps, both keep.
T0 = {"id": "ONE-1", "title": "Refund missing", "body": "no refund yet", "created": "2025-02-01T10:00:00"}
TICKET_BATTERY = [
    ("good", {}),
    ("good with fields", {"fields": {"product": "Billing Portal", "affected_count": 3}}),
    ("no title", {"title": None}),
    ("blank title", {"title": "  "}),
    ("title over the limit", {"title": "t" * 2001}),
    ("body longer than a query may be", {"body": "b" * 60_000}),  # the server's body limit: 65536 bytes
    ("unknown field", {"fields": {"colour": "red"}}),
    ("no created", {"created": None}),
    ("bad created", {"created": "last tuesday"}),
    ("its own duplicate", {"duplicate_of": "ONE-1"}),
    ("object as a value", {"fields": {"product": {"x": 1}}}),
    ("long field value", {"fields": {"product": "p" * 2001}}),
    ("negative count", {"fields": {"affected_count": -1}}),
    ("too many values", {"fields": {"product": ["a"] * 101}}),
]


@pytest.mark.parametrize(("case", "change"), TICKET_BATTERY, ids=[c[0] for c in TICKET_BATTERY])
def test_a_ticket_has_one_rule_for_the_api_and_files(writer: httpx.Client, tmp_path: Path, case: str,
                                                      change: dict) -> None:
    from ticketsearch.index_data.records import read_tickets
    from ticketsearch.index_data.schema import load_schema

    ticket = {k: v for k, v in {**T0, "id": f"ONE-{case}", **change}.items() if v is not None}
    if case == "its own duplicate":
        ticket["duplicate_of"] = ticket["id"]
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps(ticket) + "\n")
    [row] = list(read_tickets(path, load_schema("support")))
    r = writer.post("/v1/tickets", json=ticket)
    if not isinstance(row, Exception):
        assert r.status_code == 200, (case, r.text)
        assert writer.get(f"/v1/tickets/{quote(ticket['id'], safe='')}").json()["body"] == row.body
        return
    assert r.status_code in (409, 422), (case, r.text, row)
    [item] = r.json()["detail"]
    assert row.line == 1 and str(row).startswith("line 1 ")
    assert (f"body.{row.field}" if row.field else "body") == item["field"], (case, item, row)
    assert row.detail == item["reason"], (case, item, row)


def test_a_large_refused_body_gets_a_413_the_client_can_read(server: Server, writer: httpx.Client) -> None:
    """4 MB against a 64 KiB limit, from a client that writes the whole body before it reads (a plain socket):
    it reads the JSON 413, not a broken pipe (uvicorn reads and drops the rest of a refused body here)."""
    import socket

    body = b"[" + b" " * 4_000_000 + b"]"
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as s:
        s.sendall(f"POST /v1/tickets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {WRITE_KEY}\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        answer = b""
        while b"too_large" not in answer:
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413") and b'"too_large"' in answer, answer[:300]
    assert writer.get("/v1/tickets/SUP-10").status_code == 200
