"""Backlog dedupe as a team would meet it, scored against the true groups.

    python scripts/dedupe_eval.py --index /tmp/hd/idx --truth ../shared/data/apache_hadoop.jsonl.gz \
        --since 2016-01-01 --calibrate-since 2015-01-01 --calibrate-until 2016-01-01 --out docs/dedupe_hadoop.json

The index holds the file with the `duplicate_of` of every ticket created since --since removed, its reranker
trained before the calibration period and validated on it (`ticketsearch train --train-before 2015-01-01
--valid-before 2016-01-01`). Every ticket since --since is compared with the earlier ones (its reranked top
10) once; the pairs are then cut at each target's threshold: the one training stored (chosen on validation
lists whose queries are all duplicates) and one calibrated on the calibration period with every ticket a query,
as dedupe meets them (`pipeline.dedupe.calibrated_threshold`). Scored against the file's true groups: pairwise
precision and recall of the proposed links (a link is right when both tickets are in one true group; the true
pairs are each test-period duplicate with each earlier member of its group), and how many test-period
duplicates end up in a cluster with an earlier member of their group.
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import sys
import time
from datetime import datetime
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def true_groups(path: Path) -> tuple[dict[str, str], dict[str, datetime]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    dup, created = {}, {}
    with opener(path, "rt", encoding="utf-8") as fh:  # type: ignore[operator]
        for line in fh:
            r = json.loads(line)
            dup[r["id"]] = r.get("duplicate_of")
            created[r["id"]] = datetime.fromisoformat(r["created"]).replace(tzinfo=None)

    def root(x: str) -> str:
        seen = 0
        while dup.get(x) and seen < 100:
            x, seen = dup[x], seen + 1
        return x

    return {k: root(k) for k in dup}, created


def score(pairs: list[dict], threshold: float, group: dict[str, str], created: dict[str, datetime],
          test_ids: list[str]) -> dict:
    from ticketsearch.pipeline.dedupe import clusters

    kept = [p for p in pairs if p["probability"] >= threshold]
    right = sum(group[p["a"]] == group[p["b"]] for p in kept)
    members: dict[str, list[str]] = {}
    for t in created:
        members.setdefault(group[t], []).append(t)
    true_pairs = {(a, b) for b in test_ids for a in members[group[b]] if created[a] < created[b]}
    found = {(p["a"], p["b"]) for p in kept} & true_pairs
    dups = [b for b in test_ids if any(created[a] < created[b] for a in members[group[b]])]
    cl = clusters(kept, created)
    where = {m: i for i, c in enumerate(cl) for m in c["members"]}
    clustered = sum(1 for b in dups if b in where and any(
        group[m] == group[b] and created[m] < created[b] for m in cl[where[b]]["members"]))
    return {"threshold": round(threshold, 4), "links": len(kept),
            "pairwise_precision": round(right / len(kept), 3) if kept else None,
            "pairwise_recall": round(len(found) / len(true_pairs), 3) if true_pairs else None,
            "true_pairs": len(true_pairs), "duplicates": len(dups), "duplicates_clustered_with_earlier": clustered,
            "clusters": len(cl)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--truth", type=Path, required=True)
    ap.add_argument("--since", required=True)
    ap.add_argument("--calibrate-since", required=True)
    ap.add_argument("--calibrate-until", required=True)
    ap.add_argument("--precisions", default="0.8,0.9,0.95")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    from ticketsearch.api import TicketIndex
    from ticketsearch.pipeline.dedupe import SLACK, compare, groups_of, threshold_on_pairs

    group, created = true_groups(args.truth)
    since, cal0, cal1 = (datetime.fromisoformat(x) for x in (args.since, args.calibrate_since, args.calibrate_until))
    out: dict = {"machine": f"{platform.machine()}, 2 cores", "index": str(args.index), "since": args.since,
                 "calibration": [args.calibrate_since, args.calibrate_until], "k": args.k, "targets": {}}
    with TicketIndex.open(args.index) as idx:
        store = idx.pipeline.store
        linked = groups_of(store)  # the links the index holds (none since --since)
        rows = store.ids_by_created()
        cal_ids = [(t, c) for t, c in rows if cal0 <= c < cal1]
        test_ids = [(t, c) for t, c in rows if c >= since]
        t0 = time.perf_counter()
        cal_pairs = [p for t, c in tqdm(cal_ids, desc="calibration period") for p in compare(idx, t, c, args.k, 0.0,
                                                                                               linked)]
        t1 = time.perf_counter()
        test_pairs = [p for t, c in tqdm(test_ids, desc="dedupe period") for p in compare(idx, t, c, args.k, 0.0,
                                                                                           linked)]
        t2 = time.perf_counter()
        reranker = idx.pipeline.reranker
        out["tickets"] = {"calibration": len(cal_ids), "dedupe": len(test_ids)}
        out["tickets_per_s"] = round(len(test_ids) / (t2 - t1), 1)
        out["calibration_s"] = round(t1 - t0, 1)
        probs = [p["probability"] for p in cal_pairs]
        labels = [p["known"] for p in cal_pairs]
        tids = [t for t, _ in test_ids]
        for target in (float(x) for x in args.precisions.split(",")):
            row: dict = {}
            stored = reranker.duplicate_threshold(target)
            if stored is not None:
                row["stored_threshold"] = score(test_pairs, stored, group, created, tids)
            t, how = threshold_on_pairs(probs, labels, target)
            if t is not None:
                row["calibrated_threshold"] = {**score(test_pairs, t, group, created, tids),
                                               "calibration_precision": round(float(how["precision"]), 3),
                                               "calibration_pairs_behind": how["behind"],
                                               "calibration_lower_bound": how["lower_bound"],
                                               "established": how["lower_bound"] >= target - SLACK}
            out["targets"][str(target)] = row
    print(json.dumps(out, indent=2))
    if args.out:
        args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
