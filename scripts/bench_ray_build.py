"""An index build with the encoding on Ray against the plain build, on one box: the overhead of Ray when it has
nothing to spread over, and whether the two indexes are the same.

    python scripts/bench_ray_build.py --data demo/tickets.jsonl --out docs/bench_ray_build.json

Both builds start from an empty index directory and encode every ticket (full text and title) with MiniLM: the
plain build in this process (`ticketsearch ingest`), the Ray build on a local Ray instance with one encoder per
CPU (`ticketsearch ingest --executor ray`). The order alternates over --repeats runs. Reported: wall seconds of
the whole command (Ray's start included), the ratio, and the largest difference between the two indexes'
cached vectors.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ticketsearch.pipeline.parts import open_store

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TICKETSEARCH = str(Path(sys.executable).parent / "ticketsearch")


def vectors(index: Path) -> dict[tuple[str, str], np.ndarray]:
    from ticketsearch.index_dir import IndexDir

    with open_store(IndexDir(index)) as store:
        return store.all_embeddings()


def run(data: Path, index: Path, ray: bool) -> float:
    cmd = [TICKETSEARCH, "ingest", "--data", str(data), "--index", str(index), "-q"]
    if ray:
        cmd += ["--executor", "ray"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    times: dict[str, list[float]] = {"plain": [], "ray": []}
    diff = 0.0
    try:
        for r in range(args.repeats):
            for kind in (("plain", "ray") if r % 2 == 0 else ("ray", "plain")):
                shutil.rmtree(tmp / kind, ignore_errors=True)
                times[kind].append(round(run(args.data, tmp / kind, kind == "ray"), 2))
                print(kind, times[kind][-1], flush=True)
            a, b = vectors(tmp / "plain"), vectors(tmp / "ray")
            assert set(a) == set(b)
            diff = max(diff, max(float(np.abs(a[k] - b[k]).max()) for k in a))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    tickets = sum(1 for _ in args.data.open())
    out = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "data": str(args.data), "tickets": tickets,
        "seconds": times, "median_s": {k: statistics.median(v) for k, v in times.items()},
        "ray_over_plain": round(statistics.median(times["ray"]) / statistics.median(times["plain"]), 2),
        "max_vector_difference": diff,
    }
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
