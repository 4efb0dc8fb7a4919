"""Atomic writes create files and folders as open() and mkdir() would: by the process's umask (mkstemp's 0600
made the index unreadable to a teammate who could read the store)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CODE = """
import os, stat, sys
from pathlib import Path
os.umask(int(sys.argv[2], 8))
from ticketsearch.atomic import atomic_write_dir, atomic_write_text, process_umask
root = Path(sys.argv[1])
assert process_umask() == int(sys.argv[2], 8)
atomic_write_text(root / "f.json", "{}")
atomic_write_dir(root / "d", lambda p: (p / "part.bin").write_bytes(b"x"))
print(oct(stat.S_IMODE((root / "f.json").stat().st_mode)), oct(stat.S_IMODE((root / "d").stat().st_mode)))
"""


def test_files_and_folders_follow_the_umask(tmp_path: Path) -> None:
    for umask, want in (("022", "0o644 0o755"), ("077", "0o600 0o700"), ("002", "0o664 0o775")):
        out = tmp_path / umask
        out.mkdir()
        res = subprocess.run([sys.executable, "-c", CODE, str(out), umask], capture_output=True, text=True,
                             timeout=60)
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == want, (umask, res.stdout)
