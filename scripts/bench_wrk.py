"""The served index under a real load generator (issue 30 items 2-3): `serve`'s time to ready, then reranked
searches (k 10) at 1 and at 32 connections for 20 s each with `wrk` (the OS package), on the same server.

    python scripts/bench_wrk.py --index demo/index --out docs/bench_wrk.json

The server is a real `ticketsearch serve` process on 127.0.0.1 (`tests/service/server.py`) with one read key,
`TICKETSEARCH_THREADS=2` (`--threads`); wrk runs with one thread on the same two cores (so both figures
include its cost).
Time to ready: from the process's start to the first 200 from /readyz, polled every 20 ms, three starts; then
the first search's latency (it may still wait for nothing: the fp32 model loads in the background).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.bench_sharded import wait_quiet  # noqa: E402  (the same wait for a quiet machine)
from tests.service.server import Server  # noqa: E402
from ticketsearch.atomic import atomic_write_json  # noqa: E402

KEY = "bench-wrk-read-key-0001"
QUERIES = ["customers were charged twice for their subscription", "app crashes when I open it",
           "refund not received after cancelling the order", "password reset email never arrives",
           "export to csv times out for large reports", "cannot log in after changing my email"]
LUA = """
local bodies = {%s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("POST", "/v1/search", {["Content-Type"] = "application/json",
                    ["Authorization"] = "Bearer %s"}, bodies[(i %% #bodies) + 1])
end
"""


def lua_script(path: Path) -> Path:
    bodies = ", ".join("[[" + json.dumps({"text": q, "k": 10}) + "]]" for q in QUERIES)
    path.write_text(LUA % (bodies, KEY))
    return path


def ms(value: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", value)
    assert m, value
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


def wrk(url: str, script: Path, connections: int, seconds: int) -> dict:
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s",
                          "-s", str(script), url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pct = {p: ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, flags=re.M)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    return {"connections": connections, "seconds": seconds, "searches_per_s": rps,
            "p50_ms": pct.get("50"), "p90_ms": pct.get("90"), "p99_ms": pct.get("99"),
            "non_2xx": int(errors.group(1)) if errors else 0, "socket_errors": sock.group(1) if sock else None}


def machine_cpu() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far (/proc/stat)."""
    v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(v) - v[3] - v[4], sum(v)


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def with_cpu(pid: int, run: Callable[[], dict]) -> dict:
    """A wrk run with where the CPU went: the server's CPU per search and cores in use, the machine's busy share
    (wrk's own included)."""
    b0, t0 = machine_cpu()
    p0, w0 = process_cpu_s(pid), time.monotonic()
    out = run()
    b1, t1 = machine_cpu()
    used, wall = process_cpu_s(pid) - p0, time.monotonic() - w0
    searches = out["searches_per_s"] * out["seconds"]
    return {**out, "server_cpu_ms_per_search": round(used / max(searches, 1) * 1000, 2),
            "server_cores_busy": round(used / wall, 2), "machine_busy_share": round((b1 - b0) / max(1, t1 - t0), 3)}


def time_to_ready(srv: Server) -> dict:
    t0 = time.monotonic()
    srv.start(wait_ready=False)
    while True:
        try:
            if httpx.get(srv.url + "/readyz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if srv.proc is not None and srv.proc.poll() is not None:
            raise RuntimeError(srv.log())
        time.sleep(0.02)
    ready = time.monotonic() - t0
    t1 = time.monotonic()
    r = httpx.post(srv.url + "/v1/search", json={"text": QUERIES[0], "k": 10},
                   headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    r.raise_for_status()
    return {"ready_s": round(ready, 2), "first_search_ms": round((time.monotonic() - t1) * 1000, 1),
            "reranked": r.json()["reranked"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2, help="the server's TICKETSEARCH_THREADS")
    ap.add_argument("--out", type=Path, default=Path("docs/bench_wrk.json"))
    ap.add_argument("--baseline-tree", type=Path,
                    help="another checkout of this repository (e.g. `git archive REV | tar -x -C DIR`): measured in "
                         "the same run, its server importing the package from there (PYTHONPATH), for ratios")
    a = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("error: wrk is not installed (apt-get install wrk)")
    env = {"TICKETSEARCH_API_KEYS": f"{KEY}:read", "TICKETSEARCH_THREADS": str(a.threads), "HF_HUB_OFFLINE": "1"}
    report: dict[str, Any] = {"command": f"python scripts/bench_wrk.py --index {a.index} --seconds {a.seconds} "
                                         f"--threads {a.threads}"
                         + (f" --baseline-tree {a.baseline_tree}" if a.baseline_tree else ""),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores", "index": str(a.index),
              "this_tree": measure(a.index, env, a.seconds)}
    if a.baseline_tree:
        base = measure(a.index, {**env, "PYTHONPATH": str(a.baseline_tree.resolve())}, a.seconds)
        report["baseline_tree"] = {"path": str(a.baseline_tree), **base}
        report["this_over_baseline"] = {
            k: round(report["this_tree"][k]["searches_per_s"] / base[k]["searches_per_s"], 3)
            for k in ("one", "thirty_two")}
    print(json.dumps(report, indent=1))
    atomic_write_json(a.out, report)


def measure(index: Path, env: dict[str, str], seconds: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copytree(index, work / "idx")
        starts = []
        for i in range(3):
            srv = Server(work / "idx", work / f"server{i}.log", env=env)
            try:
                starts.append(time_to_ready(srv))
            finally:
                srv.stop()
        srv = Server(work / "idx", work / "server.log", env=env).start()
        try:
            script = lua_script(work / "search.lua")
            quiet = wait_quiet()  # the write encoder loads in the background after ready: not timed as searches
            wrk(srv.url, script, 4, 3)  # warm
            assert srv.proc is not None
            one = with_cpu(srv.proc.pid, lambda: wrk(srv.url, script, 1, seconds))
            many = with_cpu(srv.proc.pid, lambda: wrk(srv.url, script, 32, seconds))
        finally:
            srv.stop()
    return {"serve_starts": starts, "waited_for_quiet_s": quiet, "one": one, "thirty_two": many,
            "ratio_32_over_1": round(many["searches_per_s"] / one["searches_per_s"], 2)}


if __name__ == "__main__":
    main()
