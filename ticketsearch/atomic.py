"""Atomic file writes: write a temporary file in the same directory, fsync it, rename it over the target."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def fsync_dir(path: Path) -> None:
    """fsync a directory so that a rename inside it is durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def process_umask() -> int:
    """The process's umask, read without changing it (Linux: /proc/self/status; elsewhere set and restored)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_with(target: Path, writer: Callable[[Path], object]) -> None:
    """Call `writer(tmp_path)` to produce the file, then fsync and rename it to `target`.

    `writer` receives a path (not a handle) so that libraries that write by filename
    (FAISS, safetensors) can be used. On any failure the temporary file is removed and
    the previous `target`, if any, is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.fchmod(fd, 0o666 & ~process_umask())  # as open() would create it (mkstemp makes it 0600)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(target: Path, data: bytes) -> None:
    atomic_write_with(target, lambda p: p.write_bytes(data))


def atomic_write_text(target: Path, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: Path, obj: Any) -> None:
    atomic_write_text(target, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def atomic_write_dir(target: Path, writer: Callable[[Path], object]) -> None:
    """Produce a whole directory with `writer(tmp_dir)`, fsync its files, then swap it in for `target`.

    Readers see either the old directory or the new one. A crash between the two renames leaves
    `target` missing and `<target>.old` complete; `recover_dir` puts it back.
    """

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    tmp.chmod(0o777 & ~process_umask())  # as mkdir would create it (mkdtemp makes it 0700)
    try:
        writer(tmp)
        for p in tmp.rglob("*"):
            if p.is_file():
                with open(p, "rb+") as fh:
                    os.fsync(fh.fileno())
        fsync_dir(tmp)
        old = target.with_name(target.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        fsync_dir(target.parent)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def recover_dir(target: Path) -> None:
    """Undo a swap interrupted between its two renames."""
    old = Path(target).with_name(Path(target).name + ".old")
    if not Path(target).exists() and old.exists():
        os.replace(old, target)


def atomic_write_npy(target: Path, arr: Any) -> None:
    """Write a numpy array (no pickle) atomically; through a handle, so numpy adds no ".npy" suffix."""

    def write(p: Path) -> None:
        with open(p, "wb") as fh:
            np.save(fh, arr, allow_pickle=False)

    atomic_write_with(target, write)
