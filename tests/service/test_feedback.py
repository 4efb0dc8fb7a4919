"""Agents' feedback against a real server: stored, listed, the latest decision on a pair wins, it survives a
restart, bad pairs are refused, and training uses it: the counts it logs change, and the retrained model
scores a confirmed pair higher."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from .server import Server

C = "/v1/collections/fb"


def wait_done(c: httpx.Client, job_id: str) -> dict:
    deadline = time.monotonic() + 600
    while True:
        job = c.get(f"{C}/jobs/{job_id}").json()
        if job["state"] in ("done", "failed") or time.monotonic() > deadline:
            assert job["state"] == "done", job
            return job
        time.sleep(0.5)


def probability(c: httpx.Client, query: str, candidate: str) -> float:
    hits = c.get(f"{C}/tickets/{query}/similar", params={"k": 100}).json()["hits"]
    (p,) = [h["probability"] for h in hits if h["id"] == candidate]
    return float(p)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, demo_rows: list[dict]) -> Server:
    root = tmp_path_factory.mktemp("feedback")
    srv = Server(root / "root", root / "server.log", root=True).start()
    c = srv.client()
    assert c.put(C, json={"schema": "support"}).status_code == 201
    assert c.post(f"{C}/tickets", json=demo_rows).status_code == 200
    yield srv
    srv.stop()


def test_decisions_are_stored_listed_and_the_latest_wins(server: Server) -> None:
    c = server.client()
    r = c.post(f"{C}/feedback", json={"ticket_id": "SUP-100", "candidate_id": "SUP-7", "label": "not_duplicate",
                                      "by": "ana"})
    assert r.status_code == 200, r.text
    assert r.json()["label"] == "not_duplicate" and r.json()["by"] == "ana" and r.json()["at"].endswith("Z")
    listed = c.get(f"{C}/tickets/SUP-100/feedback").json()
    assert [(d["ticket_id"], d["candidate_id"], d["label"]) for d in listed] == [("SUP-100", "SUP-7", "not_duplicate")]
    # the same pair from the other side: one pair, the latest decision
    assert c.post(f"{C}/feedback", json={"ticket_id": "SUP-7", "candidate_id": "SUP-100",
                                         "label": "duplicate"}).status_code == 200
    for tid in ("SUP-7", "SUP-100"):
        listed = c.get(f"{C}/tickets/{tid}/feedback").json()
        assert [d["label"] for d in listed] == ["duplicate"] and listed[0]["by"] is None
    assert c.get(f"{C}/tickets/SUP-8/feedback").json() == []
    assert c.post("/v1/collections/fb/feedback", json={"ticket_id": "SUP-7", "candidate_id": "NOPE-1",
                                                       "label": "duplicate"}).status_code == 404
    assert c.get(f"{C}/tickets/NOPE-1/feedback").status_code == 404
    r = c.post(f"{C}/feedback", json={"ticket_id": "SUP-7", "candidate_id": "SUP-7", "label": "duplicate"})
    assert r.status_code == 422 and "itself" in r.text
    assert c.post(f"{C}/feedback", json={"ticket_id": "SUP-7", "candidate_id": "SUP-8",
                                         "label": "maybe"}).status_code == 422
    # and it is undone, for the training test below: a decision on this pair says "not a duplicate" again
    assert c.post(f"{C}/feedback", json={"ticket_id": "SUP-7", "candidate_id": "SUP-100",
                                         "label": "not_duplicate"}).status_code == 200


def test_feedback_survives_a_restart(server: Server) -> None:
    # the decision to outlive the restart (the state the test above leaves, whatever ran before)
    assert server.client().post(f"{C}/feedback", json={"ticket_id": "SUP-7", "candidate_id": "SUP-100",
                                                       "label": "not_duplicate"}).status_code == 200
    server.stop()
    server.start()
    listed = server.client().get(f"{C}/tickets/SUP-100/feedback").json()
    assert [(d["ticket_id"], d["candidate_id"], d["label"]) for d in listed] == [("SUP-7", "SUP-100", "not_duplicate")]


def feedback_pairs(rows: list[dict]) -> tuple[tuple[str, str], tuple[str, str]]:
    """From the demo tickets' train period (the first 70% by time): a pair to confirm (a ticket that duplicates
    nothing and an earlier one on its topic, unlinked) and a pair to reject (a duplicate and its master, in a
    group of three or more)."""
    train = rows[: int(len(rows) * 0.7)]
    in_group = {r["id"] for r in train if r["duplicate_of"]} | {r["duplicate_of"] for r in train if r["duplicate_of"]}
    topic = {r["id"]: (r["fields"]["product"], r["fields"]["component"]) for r in train}
    single = [r["id"] for r in train[len(train) // 3:] if r["id"] not in in_group]
    q = next(i for i in single if any(topic[o["id"]] == topic[i] and o["id"] != i for o in train))
    earlier = [o["id"] for o in train[: [r["id"] for r in train].index(q)]]
    confirm = (q, next(o for o in reversed(earlier) if topic[o] == topic[q] and o not in in_group))
    # in a group of three or more: the rejected query keeps another positive, so it stays a train query
    dups_of: dict[str, list[str]] = {}
    for r in train:
        if r["duplicate_of"]:
            dups_of.setdefault(r["duplicate_of"], []).append(r["id"])
    master = next(m for m, ds in dups_of.items() if len(ds) >= 2)
    return confirm, (dups_of[master][-1], master)


# installed whatever validation says, no folds; the fusion model (the linear one's use of feedback: test_linear)
AS_ASKED = {"epochs": 8, "install": "always", "validation_folds": 0, "variant": "rerank-cross+pair"}


def test_training_uses_confirmed_and_rejected_pairs(server: Server, demo_rows: list[dict]) -> None:
    c = server.client()
    first = wait_done(c, c.post(f"{C}/train", json=AS_ASKED).json()["id"])
    assert first["result"]["installed"], first["result"]
    confirm, reject = feedback_pairs(demo_rows)
    before = {pair: probability(c, *pair) for pair in (confirm, reject)}
    # the first pair is not linked: an agent confirms it; the second is (one group): rejected
    assert c.post(f"{C}/feedback", json={"ticket_id": confirm[0], "candidate_id": confirm[1],
                                         "label": "duplicate"}).status_code == 200
    assert c.post(f"{C}/feedback", json={"ticket_id": reject[0], "candidate_id": reject[1],
                                         "label": "not_duplicate"}).status_code == 200
    second = wait_done(c, c.post(f"{C}/train", json=AS_ASKED).json()["id"])
    assert second["result"]["installed"], second["result"]
    fb1, fb2 = first["result"]["feedback"], second["result"]["feedback"]
    assert fb2["confirmed"] == fb1["confirmed"] + 1 and fb2["rejected"] == fb1["rejected"] + 1
    t1, t2 = first["result"]["train_pairs"], second["result"]["train_pairs"]
    assert t2["rejected_by_agents"] >= t1["rejected_by_agents"] + 1
    # the confirmed ticket is a train query now, with its one positive; the rejected pair is one positive fewer
    # (its query keeps the others of its group)
    assert t2["queries"] == t1["queries"] + 1 and t2["positives"] == t1["positives"], (t1, t2)
    assert any("rejected pairs" in line for line in second["progress"])
    after = {pair: probability(c, *pair) for pair in before}
    assert after[confirm] > before[confirm], (before, after)
    # Not asserted: the rejected pair's score (in a group of three or more, every other query of the group still
    # teaches that they are alike).


def test_writes_after_a_training_job_are_answered(server: Server, demo_rows: list[dict]) -> None:
    # the train route counts the links on a service thread; a count left unfinished there made that thread's
    # next ticket write answer 500 (DuckDB: "connection has an unfinished result")
    c = server.client()
    wait_done(c, c.post(f"{C}/train", json={"epochs": 1}).json()["id"])
    for i in range(6):
        row = {**demo_rows[i], "id": f"AFTER-{i}", "title": f"kestrel turbine {i} after the model swap"}
        r = c.post(f"{C}/tickets", json=[row])
        assert r.status_code == 200, r.text
    hits = c.post(f"{C}/search", json={"text": "kestrel turbine after the model swap", "k": 10}).json()["hits"]
    assert {h["id"] for h in hits} >= {f"AFTER-{i}" for i in range(6)}
    # the log at INFO holds the project's own lines: no library's (onnx_ir logged dozens per model swap)
    ours = re.compile(r"^\S+ \S+ (INFO|DEBUG) (ticketsearch|uvicorn)")
    others = [line for line in server.log().splitlines()
              if re.match(r"^\S+ \S+ (INFO|DEBUG) ", line) and not ours.match(line)]
    assert not others, others[:5]
