"""Errors keep their type across layers: a start-up failure is raised as itself by the library, and as
'unavailable' with the failure as its cause by the layers that serve collections (never only as a string)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ticketsearch.api import TicketIndex
from ticketsearch.errors import StoreLockedError, TicketsearchError, UnavailableError, one_line, reraise
from ticketsearch.index_dir import IndexDir
from ticketsearch.pipeline.collections import DEFAULT, Collections
from ticketsearch.settings import Settings


@pytest.fixture
def locked_index(built_index: Path, tmp_path: Path) -> Iterator[Path]:
    """A copy of the built index whose store another process holds open for writing."""
    target = tmp_path / "idx"
    shutil.copytree(built_index, target)
    code = ("import sys\nfrom ticketsearch.index_data.store import TicketStore\n"
            f"s = TicketStore({str(IndexDir(target).store_path)!r})\nprint('held', flush=True)\nsys.stdin.read()\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield target
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=60)


def test_a_locked_store_keeps_its_type_through_the_library_and_collections(locked_index: Path,
                                                                            settings: Settings) -> None:
    with pytest.raises(StoreLockedError, match="another process"):
        TicketIndex.open(locked_index, writable=True, settings=settings)
    collections = Collections.for_index(locked_index, settings)
    try:
        with pytest.raises(UnavailableError, match="cannot be opened: .*another process") as info:
            collections.acquire(DEFAULT)
        assert isinstance(info.value.__cause__, StoreLockedError)
    finally:
        collections.close()


def test_a_second_serve_on_a_held_index_exits_with_one_line(locked_index: Path) -> None:
    res = subprocess.run([str(Path(sys.executable).parent / "ticketsearch"), "serve", "--index", str(locked_index),
                          "--port", "0"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 2, (res.returncode, res.stderr[-500:])
    lines = [x for x in res.stderr.splitlines() if not x.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "another process" in lines[0], res.stderr


def test_a_foreign_failure_is_named_by_its_class_and_chained() -> None:
    cause = OSError("No space left on device")
    err = reraise(cause)
    assert type(err) is TicketsearchError and err.__cause__ is cause
    assert str(err) == one_line(cause) == "OSError: No space left on device"
    own = StoreLockedError("held")
    assert reraise(own) is own and one_line(own) == "held"
