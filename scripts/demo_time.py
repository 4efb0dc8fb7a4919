"""What a reranker trained on the demo data learns (issue 29 item 3): its gain over the first stage with and
without the time-gap pair input, on the demo data of this checkout and (optionally) of an earlier one, in one run.

    git archive <rev> | tar -x -C /tmp/base_tree
    python scripts/demo_time.py --baseline-tree /tmp/base_tree --out docs/demo_time.json

For each generator: `ticketsearch demo-data` (N tickets, one seed; this checkout's dates end at --end), then
`ticketsearch experiment --no-rerank --no-tune-encoder` (ingest, encode, fusion tuned on validation), then
`scripts/rerank_trials.py` on that index with three trials, each trained on the train links and scored on the test
period's queries (held out): the text-only cross model, cross + pair inputs, and cross + pair inputs with the gap
column zeroed in training and test. Model code is this checkout's for both data sets: only the data differ.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ticketsearch.atomic import atomic_write_json
from ticketsearch.rerank.pair_features import FIRST_STAGE

ROOT = Path(__file__).resolve().parents[1]
GAP_COLUMN = len(FIRST_STAGE)  # the pair inputs: first-stage scores, then the time gap (pair_features.pair_matrix)
TRIALS = {
    "text only (cross)": {"arch": "cross", "pair": False, "cosine_prior": True},
    "cross + pair inputs": {"arch": "cross", "pair": True, "cosine_prior": True},
    "cross + pair inputs, no gap": {"arch": "cross", "pair": True, "cosine_prior": True,
                                    "drop_pair_inputs": [GAP_COLUMN]},
}


def cli(args: list[str], cwd: Path, pythonpath: Path | None = None) -> None:
    """The CLI in a fresh process, run from `cwd` (with `-c` the working directory is first on the path: not
    this checkout's root, or it would shadow `pythonpath`)."""
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath.resolve())
    cmd = [sys.executable, "-c", "from ticketsearch.service.cli import app; app()", *args]
    subprocess.run(cmd, check=True, env=env, cwd=cwd)


def run_one(work: Path, tree: Path | None, a: argparse.Namespace) -> dict:
    data = work / "tickets.jsonl"
    cli(["demo-data", "--out", str(data), "-n", str(a.n), "--seed", str(a.seed)]
        + ([] if tree is not None else ["--end", a.end]), work, tree)
    cli(["experiment", "--data", str(data), "--schema", "support", "--train-before", a.train_before,
         "--test-since", a.test_since, "--out", str(work / "exp"), "-q", "--no-rerank", "--no-tune-encoder"], work)
    out = work / "trials.json"
    cmd = [sys.executable, str(ROOT / "scripts" / "rerank_trials.py"), "--index", str(work / "exp" / "index"),
           "--out", str(out), "--train-before", a.train_before, "--test-since", a.test_since,
           "--budget", str(a.budget)]
    for name, spec in TRIALS.items():
        cmd += ["--trial", f"{name}:{json.dumps(spec)}"]
    subprocess.run(cmd, check=True)
    res = json.loads(out.read_text())
    hybrid = res["hybrid"]
    rows = {"first stage (hybrid)": {k: round(hybrid[k], 4) for k in ("MRR", "RR@10")}}
    for name, t in res["trials"].items():
        rows[name] = {k: round(t["test"][k], 4) for k in ("MRR", "RR@10")}
        rows[name]["MRR gain"] = round(t["test"]["MRR"] - hybrid["MRR"], 4)
        rows[name]["best_epoch"] = t["best_epoch"]
    return {"test_queries": res["trials"][next(iter(TRIALS))]["test"].get("queries"), "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-tree", type=Path, help="an earlier checkout whose demo generator to compare")
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--end", default="2025-06-30", help="this checkout's last ticket (the baseline's are fixed)")
    ap.add_argument("--train-before", default="2024-12-01")
    ap.add_argument("--test-since", default="2025-03-01")
    ap.add_argument("--budget", type=float, default=180.0, help="seconds of training per trial")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    report: dict = {"command": "python scripts/demo_time.py " + " ".join(sys.argv[1:]), "n": a.n, "seed": a.seed,
                    "train_before": a.train_before, "test_since": a.test_since}
    with tempfile.TemporaryDirectory() as tmp:
        runs = [("this checkout's demo data", None)]
        if a.baseline_tree is not None:
            runs.insert(0, ("baseline's demo data", a.baseline_tree))
        for label, tree in runs:
            work = Path(tmp) / ("base" if tree else "this")
            work.mkdir()
            report[label] = run_one(work, tree, a)
            print(json.dumps({label: report[label]}, indent=1), flush=True)
            atomic_write_json(a.out, report)


if __name__ == "__main__":
    main()
