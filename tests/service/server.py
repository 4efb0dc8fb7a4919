"""A real `ticketsearch serve` process on 127.0.0.1 for the end-to-end and fault tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

TICKETSEARCH = str(Path(sys.executable).parent / "ticketsearch")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`ticketsearch serve --index DIR`, or `--root DIR` with `root=True`."""

    def __init__(self, index_dir: Path, log_path: Path, env: dict[str, str] | None = None, root: bool = False,
                 args: tuple[str, ...] = ()) -> None:
        self.index_dir = Path(index_dir)
        self.root = root
        self.log_path = Path(log_path)
        self.env = {**os.environ, "TICKETSEARCH_THREADS": "1", "TICKETSEARCH_CHECKPOINT_INTERVAL_S": "0.5",
                    **(env or {})}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.args = args  # more `serve` options

    def start(self, wait_ready: bool = True, timeout: float = 180) -> Server:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [TICKETSEARCH, "serve", "--root" if self.root else "--index", str(self.index_dir), "--port", str(self.port),
             "--log-level", "info", *self.args],
            stdout=log, stderr=subprocess.STDOUT, env=self.env,
        )
        log.close()
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                r = httpx.get(self.url + "/readyz", timeout=2)
                if r.status_code == 200:
                    return
                if r.json().get("status") == "failed":
                    raise RuntimeError(f"server failed to load: {r.text}\n{self.log()}")
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server not ready in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers, no final checkpoint."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)
