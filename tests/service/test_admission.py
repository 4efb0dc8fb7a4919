"""Bounded admission over a real server: beyond TICKETSEARCH_MAX_PENDING requests the service answers 503 with
Retry-After and the JSON error body at once, and serves again when the load is gone."""

from __future__ import annotations

import re
import select
import shutil
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from .server import Server

CLIENTS = 24


@pytest.fixture(scope="module")
def small_server(trained_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Server:
    root = tmp_path_factory.mktemp("admission")
    shutil.copytree(trained_index, root / "idx")
    srv = Server(root / "idx", root / "server.log",
                 env={"TICKETSEARCH_MAX_PENDING": "2", "TICKETSEARCH_WORKERS": "1", "TICKETSEARCH_RETRY_AFTER_S": "3",
                      # this test is about admission: costly searches are not bounded apart here
                      "TICKETSEARCH_COSTLY_PER_KEY": "64", "TICKETSEARCH_COSTLY_TOTAL": "64"}
                 ).start()
    yield srv
    srv.stop()


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert found, name
    return float(found.group(1))


def test_overload_is_shed_with_503_and_the_service_recovers(small_server: Server) -> None:
    clients = [small_server.client() for _ in range(CLIENTS)]
    for c in clients:  # connect first, so that every request below arrives at once
        assert c.get("/healthz").status_code == 200
    start = threading.Barrier(CLIENTS)

    def slow_search(c: httpx.Client) -> httpx.Response:
        start.wait()
        # explained hits (as many as explain covers): each request keeps the one worker busy
        return c.post("/v1/search", json={"text": "refund not received after cancelling the order", "k": 20,
                                          "explain": True})

    with ThreadPoolExecutor(CLIENTS) as pool:
        answers = list(pool.map(slow_search, clients))
    codes = sorted(r.status_code for r in answers)
    assert set(codes) == {200, 503}, codes
    shed = [r for r in answers if r.status_code == 503]
    assert 2 <= codes.count(200) and len(shed) <= CLIENTS - 2, codes
    for r in shed:
        assert r.headers["retry-after"] == "3"
        assert r.headers["content-type"].startswith("application/json")
        (detail,) = r.json()["detail"]
        assert detail["field"] == "service" and detail["type"] == "overloaded" and "at capacity" in detail["reason"]

    # the load is gone: every route answers again, and the metrics saw the shed requests and nothing in flight
    with small_server.client() as c:
        for _ in range(3):
            r = c.post("/v1/search", json={"text": "refund not received", "k": 5})
            assert r.status_code == 200 and len(r.json()["hits"]) == 5, r.text
        assert c.get("/v1/tickets/SUP-10").status_code == 200
        text = c.get("/metrics").text
    assert metric(text, "ticketsearch_shed_total") == len(shed)
    assert metric(text, "ticketsearch_in_flight") == 0
    for c in clients:
        c.close()


KEY = "admission-reader-key"
STALLED = 8


def stalled_post(port: int, path: str, key: str | None = None) -> socket.socket:
    """A connection that sends a POST's headers and one byte of its 500-byte body, then nothing."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{auth}"
              "Content-Length: 500\r\n\r\n{".encode())
    return s


def answer(s: socket.socket, timeout: float) -> str:
    s.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        pass
    return data.decode("latin-1")


@pytest.fixture
def keyed_server(trained_index: Path, tmp_path: Path) -> Server:
    shutil.copytree(trained_index, tmp_path / "idx")
    srv = Server(tmp_path / "idx", tmp_path / "server.log",
                 env={"TICKETSEARCH_API_KEYS": f"{KEY}:read", "TICKETSEARCH_MAX_PENDING": "4",
                      "TICKETSEARCH_WORKERS": "1", "TICKETSEARCH_BODY_TIMEOUT_S": "5"}).start()
    yield srv
    srv.stop()


def test_anonymous_and_stalled_clients_hold_no_slot(keyed_server: Server) -> None:
    """Twice as many stalled, unsigned webhook deliveries as there are slots, and as many anonymous searches that
    never finish their body: a keyed search is answered at once; the anonymous ones get 401 before their body
    is read, and the stalled ones 408 when their time is up (each JSON)."""
    port = keyed_server.port
    hooks = [stalled_post(port, "/v1/hooks/github") for _ in range(STALLED)]
    anonymous = [stalled_post(port, "/v1/search") for _ in range(STALLED)]
    wrong = stalled_post(port, "/v1/search", key="not-a-key-of-ours")
    try:
        for s in [*anonymous, wrong]:
            text = answer(s, 5)
            assert text.startswith("HTTP/1.1 401"), text[:200]
            assert '"header.authorization"' in text and "www-authenticate: bearer" in text.lower()
        with keyed_server.client(KEY) as c:
            r = c.post("/v1/search", json={"text": "refund not received", "k": 5})
        assert r.status_code == 200, r.text  # the stalled deliveries hold no slot (before: 503 at capacity)
        # answered while they still hang: none of them has had its answer yet (order, not a wall-clock bound)
        waiting, _, _ = select.select(hooks, [], [], 0)
        assert waiting == [], "a stalled delivery was answered before the keyed search"
        for s in hooks:
            text = answer(s, 15)
            assert text.startswith("HTTP/1.1 408"), text[:200]
            assert '"type":"timeout"' in text.replace(" ", "") and "did not arrive within 5 seconds" in text
    finally:
        for s in [*hooks, *anonymous, wrong]:
            s.close()


OTHER = "admission-other-key"
WRITER = "admission-writer-key"
LONG = " ".join(["refund not received after cancelling the order, charged twice on the card"] * 150)  # 11k chars


@pytest.fixture(scope="module")  # its two tests leave the bound as they found it (nothing in progress)
def costly_server(trained_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Server:
    tmp_path = tmp_path_factory.mktemp("costly")
    shutil.copytree(trained_index, tmp_path / "idx")
    srv = Server(tmp_path / "idx", tmp_path / "server.log",
                 env={"TICKETSEARCH_API_KEYS": f"{KEY}:read,{OTHER}:read,{WRITER}:write",
                      "TICKETSEARCH_WORKERS": "2",
                      "TICKETSEARCH_COSTLY_PER_KEY": "1", "TICKETSEARCH_COSTLY_TOTAL": "1",
                      "TICKETSEARCH_RETRY_AFTER_S": "2"}).start()
    yield srv
    srv.stop()


def test_costly_requests_are_bounded_and_ordinary_ones_go_on(costly_server: Server) -> None:
    """Six explained searches of a long query from one key at once: one runs, the rest are 429 with Retry-After
    (the JSON error shape); another key's costly search meanwhile is 429 too (the service's bound), and its
    ordinary searches are answered; over the explain limit is 422 before anything runs."""
    clients = [costly_server.client(KEY) for _ in range(6)]
    for c in clients:
        assert c.get("/healthz").status_code == 200
    start = threading.Barrier(len(clients) + 1)
    costly = {"text": LONG, "k": 20, "explain": True}

    def send(c: httpx.Client) -> httpx.Response:
        start.wait()
        return c.post("/v1/search", json=costly)

    with ThreadPoolExecutor(len(clients)) as pool, costly_server.client(OTHER) as other:
        answers = [pool.submit(send, c) for c in clients]
        start.wait()
        ordinary = [other.post("/v1/search", json={"text": "refund not received", "k": 5}) for _ in range(3)]
        theirs = other.post("/v1/duplicates", json={"title": "refund", "body": LONG})
        codes = sorted(a.result().status_code for a in answers)
    assert codes.count(200) >= 1 and codes.count(429) >= 3 and set(codes) == {200, 429}, codes
    for r in (a.result() for a in answers):
        if r.status_code == 429:
            assert r.headers["retry-after"] == "2", r.headers
            (detail,) = r.json()["detail"]
            assert detail["type"] == "rate_limited" and "costly" in detail["reason"], detail
    assert [r.status_code for r in ordinary] == [200] * 3
    assert theirs.status_code in (200, 429), theirs.text  # 429 only while the first key's one still runs
    too_many = clients[0].post("/v1/search", json={"text": "refund", "k": 21, "explain": True})
    assert too_many.status_code == 422 and "explain covers at most 20 hits" in too_many.text, too_many.text
    with costly_server.client(KEY) as c:
        assert metric(c.get("/metrics").text, "ticketsearch_limited_total") >= codes.count(429)
        assert c.post("/v1/search", json=costly).status_code == 200  # the budget is back
    for c in clients:
        c.close()


def test_a_search_like_a_long_ticket_is_costly_as_the_long_query_would_be(costly_server: Server) -> None:
    """A search `like` an indexed ticket reads all of its text, as a query of that text would: like a ticket of
    over 10,000 characters (POST /search with like, GET /similar) counts against the costly bound, so six at
    once from one key are mostly 429; like a short ticket is an ordinary search and is never refused so."""
    with costly_server.client(WRITER) as w:
        long = {"id": "LONG-LIKE", "title": "Refund missing after the order was cancelled", "body": LONG,
                "created": "2025-01-01T00:00:00Z"}
        short = {**long, "id": "SHORT-LIKE", "body": "charged twice"}
        assert w.post("/v1/tickets", json=[long, short]).status_code == 200
    for like in ("LONG-LIKE", "SHORT-LIKE"):
        clients = [costly_server.client(KEY) for _ in range(6)]
        start = threading.Barrier(len(clients))

        def send(i: int, c: httpx.Client, like: str, start: threading.Barrier) -> httpx.Response:
            start.wait()
            if i % 2:
                return c.get(f"/v1/tickets/{like}/similar", params={"k": 20})
            return c.post("/v1/search", json={"like": like, "k": 20})

        with ThreadPoolExecutor(len(clients)) as pool:
            futures = [pool.submit(send, i, c, like, start) for i, c in enumerate(clients)]
            codes = sorted(f.result().status_code for f in futures)
        for c in clients:
            c.close()
        if like == "LONG-LIKE":
            assert codes.count(200) >= 1 and codes.count(429) >= 3 and set(codes) == {200, 429}, codes
        else:
            assert codes == [200] * 6, codes
    with costly_server.client(KEY) as c:
        assert c.get("/v1/tickets/NOPE-1/similar").status_code == 404  # measured first: an unknown id is still 404


def test_without_keys_only_loopback_names_are_answered(small_server: Server) -> None:
    """No keys: the service binds the loopback address, and a request for another host name (a page that had its
    name resolve to 127.0.0.1: DNS rebinding) is refused before anything runs, page and API alike."""
    port = small_server.port
    with small_server.client() as c:
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.nip.io", "10.0.0.8"):
            for path in ("/v1/tickets/SUP-10", "/"):
                r = c.get(path, headers={"Host": host})
                assert r.status_code == 400 and r.json()["detail"][0]["field"] == "header.host", (host, r.text)
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}"):
            assert c.get("/v1/tickets/SUP-10", headers={"Host": host}).status_code == 200, host


def listening_addresses(port: int) -> set[str]:
    """The local addresses a TCP socket listens on at `port` (from /proc/net/tcp and tcp6; state 0A: LISTEN)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                found.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(addr)[::-1]) if len(addr) == 8 else addr)
    return found


def test_without_keys_the_service_binds_the_loopback_address_whatever_host_is_asked(
        trained_index: Path, tmp_path: Path) -> None:
    if not Path("/proc/net/tcp").exists():
        pytest.skip("no /proc/net/tcp to read the listening address from")
    shutil.copytree(trained_index, tmp_path / "idx")
    srv = Server(tmp_path / "idx", tmp_path / "server.log", args=("--host", "0.0.0.0")).start()
    try:
        assert listening_addresses(srv.port) == {"127.0.0.1"}, listening_addresses(srv.port)
        assert "binding 127.0.0.1, not 0.0.0.0" in srv.log()
    finally:
        srv.stop()
