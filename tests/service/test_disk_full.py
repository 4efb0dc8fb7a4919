"""A full disk against a real server (issue 28 item 5): a write that finds no room answers a JSON 503 and writes
nothing (the ticket store, its embedding cache and the indexes agree), /readyz says read-only until there is room
again, writes then go on by themselves, and after a kill -9 and a restart every acknowledged write is there and
searchable by BM25 and by its vector. The disk is a real 48 MB tmpfs where this machine lets the test mount one;
elsewhere the store's fault-injection flag makes every commit fail as a full disk does."""

from __future__ import annotations

import errno
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ticketsearch.index_data.store import DISK_FULL_ENV

from .server import Server


class Disk:
    """A small filesystem to fill (a tmpfs), or the fault-injection flag where none can be mounted."""

    def __init__(self, root: Path) -> None:
        self.root = root / "disk"
        self.root.mkdir()
        self.flag = root / "disk-full.flag"
        mount = shutil.which("mount")
        done = mount and subprocess.run([mount, "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(self.root)],
                                        capture_output=True, text=True)
        self.mounted = bool(done) and done.returncode == 0
        self.filler = self.root / "filler"

    def fill(self) -> None:
        if not self.mounted:
            self.flag.touch()
            return
        with open(self.filler, "wb") as fh:
            try:
                while True:
                    fh.write(b"\0" * (1 << 16))
                    fh.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC

    def free(self) -> None:
        self.flag.unlink(missing_ok=True)
        self.filler.unlink(missing_ok=True)

    def close(self) -> None:
        if self.mounted:  # a lazy unmount where a process still holds a file there: never left behind
            if subprocess.run(["umount", str(self.root)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(self.root)], capture_output=True, check=False)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    d = Disk(tmp_path)
    yield d
    d.close()


def dense_first(c, text: str) -> str:  # noqa: ANN001
    return c.post("/v1/search", json={"text": text, "method": "dense", "k": 1, "rerank": False}).json()["hits"][0]["id"]


def bm25_ids(c, text: str) -> list[str]:  # noqa: ANN001
    return [h["id"] for h in c.post("/v1/search", json={"text": text, "method": "bm25", "k": 3}).json()["hits"]]


def test_a_full_disk_loses_nothing_acknowledged(built_index: Path, disk: Disk, tmp_path: Path) -> None:
    shutil.copytree(built_index, disk.root / "idx")
    srv = Server(disk.root / "idx", tmp_path / "server.log", env={DISK_FULL_ENV: str(disk.flag)}).start()
    try:
        c = srv.client()
        old = c.get("/v1/tickets/SUP-1").json()
        new = {"id": "FULL-1", "title": "quokka telemetry exporter drops frames", "created": "2025-06-01",
               "body": "the quokka exporter loses every third frame"}
        edit = {**old, "title": "wombat gateway rejects signed uploads", "body": "wombat uploads fail with 403",
                "fields": {k: v for k, v in old["fields"].items() if v is not None}}
        assert c.post("/v1/tickets", json=new).status_code == 200  # room: written
        disk.fill()
        for batch in ([{**new, "title": "quokka exporter drops frames (edited)"}], [edit]):
            r = c.post("/v1/tickets", json=batch)
            assert r.status_code == 503 and r.headers["content-type"] == "application/json", r.text
            (detail,) = r.json()["detail"]
            assert detail["type"] == "disk_full" and "nothing of this write was written" in detail["reason"]
            assert str(disk.root) not in r.text and "retry-after" in r.headers
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "read-only", ready.text
        # nothing of the refused writes anywhere: the store, BM25 and the vectors hold what was acknowledged
        assert c.get("/v1/tickets/FULL-1").json()["title"] == new["title"]
        assert c.get("/v1/tickets/SUP-1").json()["title"] == old["title"]
        assert "SUP-1" not in bm25_ids(c, "wombat gateway signed uploads")
        assert c.post("/v1/search", json={"text": "refund", "k": 3}).status_code == 200  # reads go on
        disk.free()
        assert c.get("/readyz").status_code == 200
        assert c.post("/v1/tickets", json=[edit]).status_code == 200  # writes go on by themselves
        assert bm25_ids(c, "wombat gateway signed uploads")[0] == "SUP-1"
        srv.kill()  # no final checkpoint: start-up replays what the index files missed
        srv.start()
        c = srv.client()
        assert c.get("/v1/tickets/SUP-1").json()["title"] == edit["title"]
        assert c.get("/v1/tickets/FULL-1").json()["title"] == new["title"]
        assert bm25_ids(c, "wombat gateway signed uploads")[0] == "SUP-1"
        assert bm25_ids(c, "quokka telemetry exporter frames")[0] == "FULL-1"
        assert dense_first(c, edit["title"] + "\n" + edit["body"]) == "SUP-1"
        assert dense_first(c, new["title"] + "\n" + new["body"]) == "FULL-1"
    finally:
        srv.stop()
    assert "cannot rollback" not in srv.log()  # the failed commit's own error is reported, not the rollback's
