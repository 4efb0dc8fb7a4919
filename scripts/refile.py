"""The refiling test (issue 29): tickets of an index sent again as new tickets, word for word with their fields,
dated some days after their original (and with no date), and tickets on topics the index never saw. Reported per
checkout, in one run on one index: how many are flagged duplicates, how many find their source first, and how
many strangers are flagged.

    git worktree add /tmp/before HEAD~3
    python scripts/refile.py --index demo/index --data demo/tickets.jsonl --before /tmp/before \
        --out docs/refile_demo.json

Each checkout runs in its own process (`ab_requests.layout`: that checkout's code first on the path), opening
the index read-only. The sample is seeded: 25 tickets that have a body, spread over the index's period.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ab_requests import layout  # noqa: E402

from ticketsearch.atomic import atomic_write_json  # noqa: E402
from ticketsearch.index_data.demo import UNSEEN_TOPICS as STRANGERS  # noqa: E402

GAPS = [1, 90, 365, 1000]

WORKER = r"""
import json, sys
from ticketsearch.api import TicketIndex
cases = json.loads(sys.stdin.read())
out = []
with TicketIndex.open(sys.argv[1]) as idx:
    names = set(idx.pipeline.store.schema.field_names)  # a tracker row's other fields are not the schema's
    for c in cases:
        if "ticket" in c:
            c["ticket"]["fields"] = {k: v for k, v in c["ticket"].get("fields", {}).items() if k in names}
        if "like" in c:  # a look-alike check: the near copies a like search finds
            res = idx.search(like=c["like"], k=5)
            out.append({"copies": [h.id for h in res.hits if getattr(h, "near_copy", False)]})
            continue
        res = idx.duplicates(c["ticket"], k=5)
        out.append({"flagged": res.is_duplicate, "first": res.candidates[0].id if res.candidates else None,
                    "probability": res.probability})
print(json.dumps(out))
"""


def cases(rows: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    with_body = [r for r in rows if r.get("body")]
    picked = random.Random(seed).sample(with_body, min(n, len(with_body)))
    out: list[dict[str, Any]] = []
    for r in picked:
        base = {"title": r["title"], "body": r["body"], "fields": r.get("fields", {})}
        created = datetime.fromisoformat(r["created"].replace("Z", "+00:00")).replace(tzinfo=None)
        for gap in GAPS:
            out.append({"kind": f"+{gap}d", "source": r["id"],
                        "ticket": {**base, "created": (created + timedelta(days=gap)).isoformat()}})
        out.append({"kind": "no date", "source": r["id"], "ticket": base})
        # the same subject in other words, no date: a zero gap (as before issue 29) reads as "filed with it"
        out.append({"kind": "its title, other words, no date", "source": r["id"],
                    "ticket": {"title": r["title"], "body": "Seeing this again on our side, please advise."}})
    for r in random.Random(seed + 1).sample(rows, min(200, len(rows))):
        out.append({"kind": "like", "source": r["id"], "like": r["id"]})
    for title, body in STRANGERS:
        for when in (None, rows[-1]["created"]):
            t = {"title": title, "body": body, **({"created": when} if when else {})}
            out.append({"kind": "stranger" + (" dated" if when else ""), "source": None, "ticket": t})
    return out


def run(checkout: Path, index: Path, batch: list[dict[str, Any]], tmp: Path, name: str) -> list[dict[str, Any]]:
    path = layout(checkout, tmp / name)
    env = {**os.environ, "PYTHONPATH": str(path), "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-c", WORKER, str(index)], input=json.dumps(batch), capture_output=True,
                         text=True, env=env, cwd=tmp, timeout=3600)
    if res.returncode != 0:
        raise SystemExit(f"{name}: {res.stderr[-2000:]}")
    return list(json.loads(res.stdout.strip().splitlines()[-1]))


def summary(batch: list[dict[str, Any]], got: list[dict[str, Any]], group: dict[str, str]) -> dict[str, Any]:
    """Per kind: flagged and source-first counts; for the like searches, the near copies found and how many of
    them the data labels duplicates (the same duplicate group)."""
    out: dict[str, Any] = {}
    likes = {"searches": 0, "near_copies": 0, "labelled_duplicates": 0}
    for c, g in zip(batch, got):
        if c["kind"] == "like":
            likes["searches"] += 1
            likes["near_copies"] += len(g["copies"])
            likes["labelled_duplicates"] += sum(group[x] == group[c["source"]] for x in g["copies"])
            continue
        row = out.setdefault(c["kind"], {"n": 0, "flagged": 0, "source_first": 0, "mean_probability": 0.0})
        row["n"] += 1
        row["mean_probability"] += (g["probability"] or 0.0)
        row["flagged"] += g["flagged"] is True
        row["source_first"] += c["source"] is not None and g["first"] == c["source"]
    for row in out.values():
        row["mean_probability"] = round(row["mean_probability"] / row["n"], 4)
    out["like searches: near copies"] = likes
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True, help="The index's tickets (JSONL).")
    ap.add_argument("--before", type=Path, help="A checkout of the code before the change (optional).")
    ap.add_argument("--after", type=Path, default=Path(__file__).resolve().parents[1], help="Default: this one.")
    ap.add_argument("-n", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    # lines split on newlines only: splitlines() also splits at a U+2028 inside a JSON string (a JIRA body has one)
    rows = [json.loads(line) for line in args.data.read_text().split("\n") if line.strip()]
    rows.sort(key=lambda r: r["created"])
    batch = cases(rows, args.n, args.seed)
    group = {r["id"]: r.get("duplicate_of") or r["id"] for r in rows}  # a duplicate's group: its master
    report: dict[str, Any] = {"index": str(args.index), "tickets": len(rows), "sample": args.n, "gaps_days": GAPS,
                              "strangers": len(STRANGERS), "machine": f"{os.cpu_count()} cores"}
    with tempfile.TemporaryDirectory() as tmp:
        for name, checkout in (("before", args.before), ("after", args.after)):
            if checkout is not None:
                got = run(checkout.resolve(), args.index.resolve(), batch, Path(tmp), name)
                report[name] = {"checkout": str(checkout), **summary(batch, got, group)}
    print(json.dumps(report, indent=2))
    if args.out:
        atomic_write_json(args.out, report)


if __name__ == "__main__":
    main()
