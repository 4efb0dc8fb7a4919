"""Interleaved A/B of search between two checkouts of ticketsearch, on one index, in one run.

    git worktree add /tmp/before 869e3f7
    python scripts/ab_requests.py --before /tmp/before --index demo/index --queries demo/tickets.jsonl \
        --out docs/ab_requests.json

Each checkout is served by its own worker process (a view of its folders laid out as installed, first on the
path, so that `import ticketsearch` is that checkout's code), which opens the index read-only and answers
searches read from its standard input. Queries alternate which worker goes first; each query is a ticket's
title plus words, a ticket's whole text with its fields, a `like` search, and a filtered one. Reported: how
often the top 10s agree (ids in order; scores within 1e-6), the largest score difference, and each side's
in-process latency (p50/p90).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

WORKER = r"""
import json, sys, time
from ticketsearch.api import TicketIndex
idx = TicketIndex.open(sys.argv[1])
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    opts = json.loads(line)
    text = opts.pop("text", None)
    t0 = time.perf_counter()
    res = idx.search(text, **opts)
    ms = (time.perf_counter() - t0) * 1000
    print(json.dumps({"ms": ms, "hits": [[h.id, h.score] for h in res.hits]}), flush=True)
"""


def layout(checkout: Path, into: Path) -> Path:
    """`into/ticketsearch/` laid out as installed: the package's files and the card's folders under it."""
    pkg = into / "ticketsearch"
    pkg.mkdir(parents=True)
    for f in (checkout / "ticketsearch").iterdir():
        os.symlink(f, pkg / f.name)
    for d in ("index_data", "retrieval", "rerank", "service"):
        if not (pkg / d).exists():  # a checkout whose ticketsearch/ links to them already
            os.symlink(checkout / d, pkg / d)
    return into


class Worker:
    def __init__(self, checkout: Path, index: Path, tmp: Path, name: str) -> None:
        path = layout(checkout, tmp / name)
        env = {**os.environ, "PYTHONPATH": str(path), "HF_HUB_OFFLINE": "1", "TICKETSEARCH_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, str(index)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
                                     cwd=tmp)
        assert json.loads(self.ask_line())["ready"]

    def ask_line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the worker died")
        return line

    def search(self, opts: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(opts) + "\n")
        self.proc.stdin.flush()
        return dict(json.loads(self.ask_line()))

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def requests(rows: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for r in rows[:n]:
        kind = len(out) % 4
        if kind == 0:
            out.append({"text": f"{r['title']} - still happening for us", "k": 10})
        elif kind == 1:
            out.append({"text": r["body"] or r["title"], "title": r["title"], "k": 10,
                        "fields": {k: v for k, v in r.get("fields", {}).items() if k == "product"},
                        "before": r["created"]})
        elif kind == 2:
            out.append({"like": r["id"], "k": 10})
        else:
            out.append({"text": r["title"], "k": 10, "filters": {"product": [r.get("fields", {}).get("product")]}})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", type=Path, required=True, help="A checkout of the code before the change.")
    ap.add_argument("--after", type=Path, default=Path(__file__).resolve().parents[1], help="Default: this one.")
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--queries", type=Path, required=True, help="The index's tickets (JSONL).")
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rows = [json.loads(line) for line in args.queries.read_text().splitlines()]
    batch = requests(rows, args.n)
    with tempfile.TemporaryDirectory() as tmp:
        workers = {"before": Worker(args.before.resolve(), args.index.resolve(), Path(tmp), "before"),
                   "after": Worker(args.after.resolve(), args.index.resolve(), Path(tmp), "after")}
        for w in workers.values():  # warm both
            w.search(dict(batch[0]))
        ms: dict[str, list[float]] = {"before": [], "after": []}
        same_ids = same_scores = 0
        worst = 0.0
        differ: list[dict[str, Any]] = []
        t0 = time.perf_counter()
        for i, opts in enumerate(batch):
            order = ["before", "after"] if i % 2 == 0 else ["after", "before"]
            got = {name: workers[name].search(dict(opts)) for name in order}
            for name in ms:
                ms[name].append(got[name]["ms"])
            a, b = got["before"]["hits"], got["after"]["hits"]
            if [h[0] for h in a] == [h[0] for h in b]:
                same_ids += 1
                diff = max((abs(x[1] - y[1]) for x, y in zip(a, b)), default=0.0)
                worst = max(worst, diff)
                same_scores += diff <= 1e-6
                if diff > 1e-6:
                    differ.append({"request": opts, "max_diff": diff})
        for w in workers.values():
            w.close()
    report = {
        "requests": len(batch), "same_top10_ids": same_ids, "same_top10_scores_1e-6": same_scores,
        "max_score_diff_when_ids_agree": worst, "wall_s": round(time.perf_counter() - t0, 1),
        **{f"{name}_ms": {"p50": round(float(np.percentile(v, 50)), 2), "p90": round(float(np.percentile(v, 90)), 2)}
           for name, v in ms.items()},
        "scores_differ": differ[:10], "index": str(args.index), "before": str(args.before),
        "machine": f"{os.cpu_count()} cores",
    }
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
