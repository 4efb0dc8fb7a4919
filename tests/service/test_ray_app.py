"""The service on Ray Serve (a local Ray instance, num_cpus=2): a collection split into 2 shards, each a Serve
deployment, answers as one index of the same tickets; a write is found by the next search; a killed shard
replica is replaced by Serve and no acknowledged write is lost."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.ray
QUERIES = ["customers were charged twice for their subscription", "login fails after password reset",
           "export to csv times out", "mobile app crashes on start"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(trained_index: Path, tmp_path_factory: pytest.TempPathFactory, settings) -> Iterator[httpx.Client]:
    try:
        import ray
        from ray import serve
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("Ray is not installed (the dev extra installs it)")
        pytest.skip("Ray is not installed: pip install 'ticketsearch[ray]'")
    from ticketsearch.service.ray_app import FRONT_APP, front_app
    from ticketsearch.sharding import split_index

    root = tmp_path_factory.mktemp("rayroot")
    split_index(trained_index, root / "collections" / "acme", 2, settings, progress=False)
    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(front_app(root, settings, shards=2, replicas=1), name=FRONT_APP, route_prefix="/")
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=180)
        deadline = time.monotonic() + 180
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the front never became ready"
            time.sleep(0.5)
        yield client
        client.close()
    finally:
        serve.shutdown()
        ray.shutdown()


def ids(res: dict) -> list[str]:
    return [h["id"] for h in res["hits"]]


def test_sharded_service_answers_as_one_index(served: httpx.Client, trained_index: Path, settings) -> None:
    from ticketsearch.api import TicketIndex

    with TicketIndex.open(trained_index, settings=settings) as one:
        info = served.get("/v1/collections/acme").json()
        assert info["shards"] == 2 and info["tickets"] == one.count()
        for q in QUERIES:
            r = served.post("/v1/collections/acme/search", json={"text": q, "k": 10})
            assert r.status_code == 200, r.text
            assert ids(r.json()) == [h.id for h in one.search(q, k=10).hits], q
            assert r.json()["reranked"]
        some = [h.id for h in one.search(QUERIES[0], k=3).hits]
        for tid in some:
            r = served.get(f"/v1/collections/acme/tickets/{tid}/similar", params={"k": 10})
            assert ids(r.json()) == [h.id for h in one.similar(tid, k=10).hits]
        ticket = {"title": "Charged twice", "body": "We were billed two times for one subscription this month"}
        r = served.post("/v1/collections/acme/duplicates", json={**ticket, "k": 5})
        want = one.duplicates(ticket, k=5)
        assert [h["id"] for h in r.json()["candidates"]] == [h.id for h in want.candidates]
        assert r.json()["is_duplicate"] == want.is_duplicate
    assert served.get("/v1/collections/acme/tickets/NOPE-1").status_code == 404  # the shard's error, as raised


def test_write_is_found_and_survives_a_killed_shard_replica(served: httpx.Client) -> None:
    import ray

    from ticketsearch.sharding import shard_of

    new = [{"id": f"RAY-{i}", "title": f"Quantum flux capacitor {i} overheats", "body": "The flux capacitor "
            "overheats and the quantum relay melts.", "created": "2025-01-01T00:00:00"} for i in range(6)]
    r = served.post("/v1/collections/acme/tickets", json=new)
    assert r.status_code == 200 and r.json()["inserted"] == 6, r.text
    assert {shard_of(t["id"], 2) for t in new} == {0, 1}  # both shards written
    found = served.post("/v1/collections/acme/search", json={"text": "quantum flux capacitor overheats", "k": 6})
    assert set(ids(found.json())) == {t["id"] for t in new}
    count = served.get("/v1/collections/acme").json()["tickets"]

    replicas = [a for a in ray.util.list_named_actors(all_namespaces=True)
                if "ts-acme-s000" in a["name"] and "SERVE_REPLICA" in a["name"]]
    assert len(replicas) == 1, replicas
    ray.kill(ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"]), no_restart=True)
    deadline, answer = time.monotonic() + 240, None
    while time.monotonic() < deadline:
        try:
            answer = served.post("/v1/collections/acme/search", json={"text": "quantum flux capacitor overheats",
                                                                      "k": 6})
        except httpx.HTTPError:
            answer = None
        if answer is not None and answer.status_code == 200 and len(ids(answer.json())) == 6:
            break
        time.sleep(1)
    assert answer is not None and answer.status_code == 200, answer.text if answer is not None else "no answer"
    assert set(ids(answer.json())) == {t["id"] for t in new}
    after = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if "ts-acme-s000" in a["name"] and "SERVE_REPLICA" in a["name"]]
    assert after and after != [replicas[0]["name"]]  # a new replica
    assert served.get("/v1/collections/acme/tickets/RAY-0").json()["title"] == "Quantum flux capacitor 0 overheats"
    r = served.get("/v1/collections/acme")
    assert r.json()["tickets"] == count
