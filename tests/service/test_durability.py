"""Durability against a real server: SIGKILL at injected and random moments, corrupt files, a second writer.

After every restart: each acknowledged ticket is present and searchable, DuckDB's ids equal every derived
index's ids, and search results equal those of an index rebuilt from scratch out of the same DuckDB file.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from ticketsearch.errors import NotFoundError
from ticketsearch.index_data.store import TicketStore
from ticketsearch.index_dir import IndexDir
from ticketsearch.pipeline.ingest import build_index
from ticketsearch.pipeline.rerank_vectors import build_rerank_vectors
from ticketsearch.pipeline.search import SearchPipeline
from ticketsearch.retrieval.lexical import BM25Index
from ticketsearch.retrieval.manifest import Manifest
from ticketsearch.retrieval.vector_index import VectorIndex
from ticketsearch.settings import Settings

from .server import TICKETSEARCH, Server

QUERIES = ["customers were charged twice", "app crashes on start", "cannot log in after password reset",
           "export to csv is empty"]


def ticket(i: int, tag: str = "w") -> dict:
    return {"id": f"{tag.upper()}-{i}", "title": f"Crash probe {tag}{i} flux{i}",
            "body": f"Unique words {tag}word{i} and zeta{i}: the sync stalls.", "created": "2025-05-01T00:00:00",
            "fields": {"product": "Mobile App"}}


@pytest.fixture()
def index_copy(trained_index: Path, tmp_path: Path) -> Path:
    shutil.copytree(trained_index, tmp_path / "idx")
    return tmp_path / "idx"


def derived_ids(index_dir: Path) -> dict[str, list[int]]:
    d = IndexDir(index_dir)
    m = Manifest.load(index_dir)
    return {
        "vectors": sorted(VectorIndex.load(d.vectors_path("text"), m.index_kind, Settings()).ids().tolist()),
        "titles": sorted(VectorIndex.load(d.vectors_path("title"), m.index_kind, Settings()).ids().tolist()),
        "bm25": sorted(BM25Index.load(d.bm25_path).row_ids.tolist()),
        "rerank": sorted(np.load(d.rerank_rows_path).tolist()),
    }


def check_recovered(index_dir: Path, acked: list[str], encoder, tmp: Path) -> None:
    """The index, after a restart and a clean stop, against DuckDB and against a fresh rebuild."""
    with TicketStore(IndexDir(index_dir).store_path, read_only=True) as store:
        db_ids = store.row_ids().tolist()
        present = {t.id for t in store.get_rows(db_ids)}
        seq = store.change_seq
    missing = [i for i in acked if i not in present]
    assert not missing, f"acknowledged tickets lost: {missing[:5]}"
    for name, ids in derived_ids(index_dir).items():
        assert ids == db_ids, f"{name}: {len(ids)} ids vs {len(db_ids)} in DuckDB"
    assert Manifest.load(index_dir).change_seq == seq
    # a fresh rebuild of the derived files from the same DuckDB file
    fresh = tmp / f"fresh-{time.monotonic_ns()}"
    shutil.copytree(index_dir, fresh)
    fd = IndexDir(fresh)
    for path in (fd.vectors_path("text"), fd.vectors_path("title"), fd.rerank_vectors_path, fd.rerank_rows_path,
                 fd.rerank_tag_path):
        path.unlink()
    shutil.rmtree(fd.bm25_path)
    with TicketStore(IndexDir(fresh).store_path) as store:
        build_index(fresh, store, encoder, "minilm", settings=Settings(), progress=False)
        build_rerank_vectors(fd, store, encoder, progress=False)
    a = SearchPipeline(index_dir, Settings(), encoder=encoder)
    b = SearchPipeline(fresh, Settings(), encoder=encoder)
    try:
        extra = [f"flux{acked[-1].split('-')[1]}"] if acked else []
        for q in QUERIES + extra:
            ra, rb = a.search(q, k=10), b.search(q, k=10)
            assert [h.id for h in ra.hits] == [h.id for h in rb.hits], q
            assert np.allclose([h.score for h in ra.hits], [h.score for h in rb.hits], atol=1e-4), q
        for tid in acked[-5:]:  # searchable by their own words
            n = tid.split("-")[1]
            tag = tid.split("-")[0].lower()
            hit = a.search(f"{tag}word{n} zeta{n}", k=1, method="bm25", rerank=False).hits
            assert hit and hit[0].id == tid
    finally:
        a.close()
        b.close()


def post_until_dead(srv: Server, start: int, tag: str, acked: list[str], batch: int = 3) -> None:
    """Write batches of tickets until the server stops answering; record what was acknowledged."""
    i = start
    with srv.client() as c:
        while True:
            items = [ticket(j, tag) for j in range(i, i + batch)]
            try:
                r = c.post("/v1/tickets", json=items)
            except httpx.TransportError:
                return
            if r.status_code != 200:
                return
            acked.extend(t["id"] for t in items)
            i += batch


@pytest.mark.parametrize("point", ["after-commit", "mid-checkpoint", "before-manifest"])
def test_injected_crash_points(index_copy: Path, tmp_path: Path, encoder, point: str) -> None:
    srv = Server(index_copy, tmp_path / "server.log", env={"TICKETSEARCH_TEST_CRASH_AT": point}).start()
    acked: list[str] = []
    post_until_dead(srv, 0, "i", acked)
    srv.proc.wait(timeout=60)
    assert srv.proc.returncode == -9, srv.log()
    assert f"crash_at={point}" in srv.log()
    if point != "after-commit":
        assert acked, "the checkpoint crashed before any write was acknowledged"
    # restart without the fault: reconcile, then a clean stop
    srv2 = Server(index_copy, tmp_path / "server2.log").start()
    with srv2.client() as c:
        for tid in acked:
            assert c.get(f"/v1/tickets/{tid}").status_code == 200
    srv2.stop()
    check_recovered(index_copy, acked, encoder, tmp_path)


def test_sigkill_at_random_moments(index_copy: Path, tmp_path: Path, encoder) -> None:
    rng = random.Random(1234)
    acked: list[str] = []
    start = 0
    for cycle in range(2):
        srv = Server(index_copy, tmp_path / f"server{cycle}.log").start()
        before = len(acked)
        writer = threading.Thread(target=post_until_dead, args=(srv, start, "r", acked))
        writer.start()
        # a server is ready for searches before its fp32 model has loaded for writes: the random moment is
        # counted from the first acknowledged write, so that every kill lands while writes flow
        deadline = time.monotonic() + 120
        while len(acked) == before and writer.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.3, 3.0))
        srv.kill()
        writer.join(timeout=60)
        start += 1000
    srv = Server(index_copy, tmp_path / "final.log").start()
    with srv.client() as c:
        for tid in acked[-10:]:
            hits = c.post("/v1/search", json={"text": f"rword{tid.split('-')[1]}", "method": "bm25", "k": 1}).json()
            assert hits["hits"][0]["id"] == tid
    srv.stop()
    assert len(acked) > 3, "no write was acknowledged before the kills"
    check_recovered(index_copy, acked, encoder, tmp_path)


def test_sigkill_during_cli_ingest_then_serve(index_copy: Path, tmp_path: Path, encoder) -> None:
    import json

    data = tmp_path / "more.jsonl"
    data.write_text("".join(json.dumps(ticket(i, "c")) + "\n" for i in range(300)))
    proc = subprocess.Popen([TICKETSEARCH, "ingest", "--data", str(data), "--index", str(index_copy), "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(random.Random(99).uniform(4.0, 8.0))
    proc.kill()
    out = proc.communicate(timeout=30)[0].decode()
    acked = [f"C-{i}" for i in range(300)] if proc.returncode == 0 else []
    srv = Server(index_copy, tmp_path / "server.log").start()
    srv.stop()
    check_recovered(index_copy, acked, encoder, tmp_path)
    with TicketStore(IndexDir(index_copy).store_path, read_only=True) as store:
        n = sum(1 for i in range(300) if _has(store, f"C-{i}"))
    assert n in (0, 300), f"a killed ingest left {n} of 300 rows: {out}"


def _has(store: TicketStore, tid: str) -> bool:
    try:
        store.get(tid)
        return True
    except NotFoundError:  # absent; any other error (a broken store) fails the test
        return False


def test_truncated_index_file_is_rebuilt(index_copy: Path, tmp_path: Path, encoder) -> None:
    path = IndexDir(index_copy).vectors_path("text")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    (IndexDir(index_copy).bm25_path / "row_ids.npy").write_bytes(b"garbage")
    srv = Server(index_copy, tmp_path / "server.log").start()
    assert httpx.get(srv.url + "/readyz").json()["status"] == "ready"
    log = srv.log()
    assert f"rebuilding {path}" in log and "unreadable FAISS index" in log and "bm25" in log
    with srv.client() as c:
        assert c.post("/v1/search", json={"text": "refund", "k": 3}).status_code == 200
    srv.stop()
    check_recovered(index_copy, [], encoder, tmp_path)


def test_changes_made_while_stopped_are_reconciled(index_copy: Path, tmp_path: Path, encoder) -> None:
    """DuckDB changed behind the files' back (an ingest killed before its rebuild): start-up replays it."""
    from ticketsearch.index_data.records import normalize_row

    with TicketStore(IndexDir(index_copy).store_path) as store:
        store.upsert([normalize_row(store.schema, ticket(1, "s"), 1)])
        store.delete(["SUP-5", "SUP-6"])
    srv = Server(index_copy, tmp_path / "server.log").start()
    assert "reconciled the index files with DuckDB" in srv.log()
    with srv.client() as c:
        hits = c.post("/v1/search", json={"text": "sword1 zeta1", "method": "bm25", "k": 1}).json()["hits"]
        assert hits[0]["id"] == "S-1"
        ids = [h["id"] for h in c.get("/v1/tickets/SUP-7/similar", params={"k": 100}).json()["hits"]]
        assert "SUP-5" not in ids and "SUP-6" not in ids
    srv.stop()
    check_recovered(index_copy, ["S-1"], encoder, tmp_path)


def test_a_second_writer_gets_a_clear_error(index_copy: Path, tmp_path: Path) -> None:
    srv = Server(index_copy, tmp_path / "server.log").start()
    try:
        data = tmp_path / "one.jsonl"
        data.write_text('{"id": "X-1", "title": "t", "created": "2025-01-01"}\n')
        r = subprocess.run([TICKETSEARCH, "ingest", "--data", str(data), "--index", str(index_copy), "-q"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and "open for writing by another process" in r.stderr, r.stderr
        # a second service on the held index exits with one line (was: /healthz 200 and 503 forever)
        second = subprocess.run([TICKETSEARCH, "serve", "--index", str(index_copy), "--port", "0"],
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and "open for writing by another process" in second.stderr, second.stderr
        assert srv.client().get("/readyz").status_code == 200  # the first one serves on
    finally:
        srv.stop()
