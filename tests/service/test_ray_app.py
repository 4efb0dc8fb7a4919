"""The service on Ray Serve (a local Ray instance, num_cpus=2): a collection split into 2 shards, each a Serve
application with a read replica of its own, answers as one index of the same tickets; a write is found by the
next search (whichever copy answers); a killed primary and a killed read replica are replaced by Serve and no
acknowledged write is lost."""

from __future__ import annotations

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


@pytest.fixture
def served(local_ray, trained_index: Path, tmp_path: Path, settings) -> Iterator[httpx.Client]:  # noqa: ANN001
    """The front over a fresh split of the trained index, for each test (one writes; another compares the
    answers with the index as it was split)."""
    from ray import serve

    from ticketsearch.pipeline.sharding import split_index
    from ticketsearch.service.ray_app import FRONT_APP, front_app

    root = tmp_path / "rayroot"
    split_index(trained_index, root / "collections" / "acme", 2, settings, progress=False)
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(front_app(root, settings, shards=2, replicas=1, shard_replicas=2), name=FRONT_APP, route_prefix="/")
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=180)
        deadline = time.monotonic() + 180
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the front never became ready"
            time.sleep(0.5)
        yield client
        client.close()
    finally:
        serve.shutdown()


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

    from ticketsearch.pipeline.sharding import shard_of

    new = [{"id": f"RAY-{i}", "title": f"Quantum flux capacitor {i} overheats", "body": "The flux capacitor "
            "overheats and the quantum relay melts.", "created": "2025-01-01T00:00:00"} for i in range(6)]
    r = served.post("/v1/collections/acme/tickets", json=new)
    assert r.status_code == 200 and r.json()["inserted"] == 6, r.text
    assert {shard_of(t["id"], 2) for t in new} == {0, 1}  # both shards written
    # first-stage order: which model reranks is not what this test is about (the words are the new tickets' own)
    found = served.post("/v1/collections/acme/search", json={"text": "quantum flux capacitor overheats", "k": 6,
                                                             "rerank": False})
    assert set(ids(found.json())) == {t["id"] for t in new}
    count = served.get("/v1/collections/acme").json()["tickets"]
    pair = next((a["id"], b["id"]) for a in new for b in new if shard_of(a["id"], 2) == 0 != shard_of(b["id"], 2))
    r = served.post("/v1/collections/acme/feedback", json={"ticket_id": pair[0], "candidate_id": pair[1],
                                                            "label": "duplicate"})
    assert r.status_code == 200, r.text  # a decision across the two shards: kept in both

    def actors(app: str) -> list[dict]:
        return [a for a in ray.util.list_named_actors(all_namespaces=True)
                if "SERVE_REPLICA" in a["name"] and f"{app}#" in a["name"]]

    killed = actors("ts-acme-s000") + actors("ts-acme-s001-r1")  # shard 0's primary, shard 1's read replica
    assert len(killed) == 2, ray.util.list_named_actors(all_namespaces=True)
    for a in killed:
        ray.kill(ray.get_actor(a["name"], namespace=a["namespace"]), no_restart=True)
    deadline, answer = time.monotonic() + 240, None
    while time.monotonic() < deadline:
        try:
            answer = served.post("/v1/collections/acme/search", json={"text": "quantum flux capacitor overheats",
                                                                      "k": 6, "rerank": False})
        except httpx.HTTPError:
            answer = None
        if answer is not None and answer.status_code == 200 and len(ids(answer.json())) == 6:
            break
        time.sleep(1)
    assert answer is not None and answer.status_code == 200, answer.text if answer is not None else "no answer"
    assert set(ids(answer.json())) == {t["id"] for t in new}
    after = actors("ts-acme-s000") + actors("ts-acme-s001-r1")
    assert len(after) == 2 and not {a["name"] for a in after} & {a["name"] for a in killed}  # new replicas
    assert served.get("/v1/collections/acme/tickets/RAY-0").json()["title"] == "Quantum flux capacitor 0 overheats"
    r = served.get("/v1/collections/acme")
    assert r.json()["tickets"] == count
    for t in pair:  # the decision outlived shard 0's primary, listed from either ticket
        listed = served.get(f"/v1/collections/acme/tickets/{t}/feedback").json()
        assert [(d["ticket_id"], d["candidate_id"], d["label"]) for d in listed] == [(*pair, "duplicate")]
    late = {"id": "RAY-LATE", "title": "Quantum flux capacitor written after the restarts", "body": "overheats",
            "created": "2025-01-02T00:00:00"}
    assert served.post("/v1/collections/acme/tickets", json=[late]).status_code == 200
    for _ in range(4):  # the primary and the read replica in turn, each seeing the write
        r = served.post("/v1/collections/acme/search", json={"text": late["title"], "k": 3})
        assert ids(r.json())[0] == "RAY-LATE"
