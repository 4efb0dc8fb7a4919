"""A CLI search's wall time in fresh processes (issue 30 items 1-2): the default path (no torch: the int8 ONNX
query encoder, the `tokenizers` tokenizer, the reranker's exported ONNX parts) against the torch path (the fp32
query encoder and the torch reranker, `TICKETSEARCH_QUERY_ENCODER=fp32 TICKETSEARCH_RERANK_RUNTIME=torch`),
in one run, on the same index; and what the default path imports (`python -X importtime`).

    python scripts/bench_cli.py --index demo/index --out docs/bench_cli.json

Each figure is the median of `--runs` fresh `ticketsearch search` processes (reranked, k 5), after one warm-up
run per path (the OS file cache, and the machine's ONNX exports made by ingest/train beforehand).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ticketsearch.atomic import atomic_write_json  # noqa: E402

QUERY = "customers were charged twice for their subscription"
HEAVY = ("torch", "transformers", "sentence_transformers", "sklearn")


def exe() -> str:
    return str(Path(sys.executable).parent / "ticketsearch")


def timed(args: list[str], env: dict[str, str], runs: int) -> dict:
    subprocess.run(args, env=env, capture_output=True, check=True, timeout=600)  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = subprocess.run(args, env=env, capture_output=True, text=True, check=True, timeout=600)
        times.append(time.perf_counter() - t0)
    ids = re.findall(r"^\s+\d+\.\s+\S+\s+p=\S+\s+(\S+)", out.stdout, flags=re.M)
    return {"runs": runs, "median_s": round(float(np.median(times)), 3), "min_s": round(min(times), 3),
            "max_s": round(max(times), 3), "ids": ids, "reranked": "reranked the top" in out.stdout}


def imports(args: list[str], env: dict[str, str]) -> dict:
    """Top-level modules by cumulative import time (ms), and whether a heavy one was imported at all."""
    cmd = [sys.executable, "-X", "importtime", "-c",
           "import sys; from ticketsearch.service.cli import main; sys.argv = ['ticketsearch', *sys.argv[1:]]; "
           "main()", *args[1:]]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    top: dict[str, float] = {}
    loaded = set()
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if not m:
            continue
        name = m.group(3)
        loaded.add(name.split(".")[0])
        if len(m.group(2)) == 1:  # a top-level import
            top[name] = round(int(m.group(1)) / 1000, 1)
    biggest = dict(sorted(top.items(), key=lambda kv: -kv[1])[:12])
    return {"total_ms": round(sum(top.values()), 1), "biggest_ms": biggest,
            "heavy_loaded": sorted(h for h in HEAVY if h in loaded)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("docs/bench_cli.json"))
    ap.add_argument("--baseline-tree", type=Path, help="another checkout (`git archive REV | tar -x -C DIR`): its "
                    "default path measured in the same run (PYTHONPATH), for a ratio")
    a = ap.parse_args()
    args = [exe(), "search", "--index", str(a.index), QUERY, "-k", "5"]
    base = {**os.environ, "HF_HUB_OFFLINE": "1"}
    torch_env = {**base, "TICKETSEARCH_QUERY_ENCODER": "fp32", "TICKETSEARCH_RERANK_RUNTIME": "torch"}
    default = timed(args, base, a.runs)
    torch_path = timed(args, torch_env, a.runs)
    result = {
        "command": " ".join(["python", "scripts/bench_cli.py", "--index", str(a.index), "--runs", str(a.runs)]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "query": QUERY,
        "default": default,
        "torch_path": torch_path,
        "speedup": round(torch_path["median_s"] / default["median_s"], 2),
        "same_top5": default["ids"] == torch_path["ids"],
        "imports_default": imports(args, base),
    }
    if a.baseline_tree:
        result["command"] += f" --baseline-tree {a.baseline_tree}"
        other = timed(args, {**base, "PYTHONPATH": str(a.baseline_tree.resolve())}, a.runs)
        result["baseline_tree"] = {"path": str(a.baseline_tree), "default": other,
                                   "this_over_baseline": round(default["median_s"] / other["median_s"], 3),
                                   "same_top5": other["ids"] == default["ids"]}
    atomic_write_json(a.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
