"""Agents' feedback into training, measured on generated demo tickets.

    python scripts/feedback_eval.py --n 1000 --queries 20 --out docs/feedback_demo.json

An index of N demo tickets (`generate(N, seed)`) with a reranker trained on its links (80/10/10 time split).
For Q train-period duplicates, an agent looks at the ticket's reranked top 10 among the earlier tickets: the
highest-ranked ticket that is not in its group is rejected ("not_duplicate"), and its highest-ranked group
member confirmed ("duplicate"). The reranker is trained again on the same split with that feedback, and both
models are scored on those Q queries and on the held-out (test-period) duplicates: MRR of the first group member
in the top 10, and how often a false candidate is ranked first.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def ranks(idx, queries: list[str], group: dict[str, str], created: dict) -> dict:  # noqa: ANN001
    rr, false_first = [], 0
    for q in queries:
        hits = idx.search(like=q, before=created[q], k=10).hits
        first = next((i for i, h in enumerate(hits, 1) if group[h.id] == group[q]), None)
        rr.append(1.0 / first if first else 0.0)
        false_first += bool(hits) and group[hits[0].id] != group[q]
    return {"queries": len(queries), "MRR@10": round(sum(rr) / max(1, len(rr)), 3), "false_first": false_first}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    from ticketsearch.api import TicketIndex
    from ticketsearch.index_data.demo import generate
    from ticketsearch.index_data.ingest import ingest_file
    from ticketsearch.index_data.schema import load_schema
    from ticketsearch.index_data.store import TicketStore
    from ticketsearch.index_dir import IndexDir
    from ticketsearch.pipeline.dedupe import groups_of
    from ticketsearch.pipeline.ingest import build_index
    from ticketsearch.pipeline.training import train_index
    from ticketsearch.rerank.train import TrainConfig
    from ticketsearch.retrieval.encoder import Encoder
    from ticketsearch.settings import Settings

    settings = Settings()
    work = Path(tempfile.mkdtemp(prefix="feedback-eval-"))
    data = work / "t.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in generate(args.n, seed=args.seed)))
    index = work / "idx"
    with TicketStore(IndexDir(index).store_path, schema=load_schema("support")) as store:
        ingest_file(store, data, progress=False)
        build_index(index, store, Encoder("minilm", settings=settings), "minilm", settings=settings, progress=False)
        rows = store.ids_by_created()
        group = groups_of(store)
    created = dict(rows)
    n = len(rows)
    train_before, valid_before = rows[int(0.8 * n)][1], rows[int(0.9 * n)][1]
    first_seen: dict[str, str] = {}
    dups = []
    for tid, _ in rows:
        if group[tid] in first_seen:
            dups.append(tid)
        first_seen.setdefault(group[tid], tid)
    train_q = [q for q in dups if created[q] < train_before]
    test_q = [q for q in dups if created[q] >= valid_before]

    def train(log: list[str]) -> dict:
        return train_index(index, train_before, valid_before, "rerank-cross+pair", settings,
                           TrainConfig(epochs=args.epochs), progress=False, log=log.append)

    log1: list[str] = []
    res1 = train(log1)
    out: dict = {"machine": f"{platform.machine()}, 2 cores", "tickets": n, "seed": args.seed,
                 "first_model": res1.get("installed"), "train_pairs_before": res1.get("train_pairs")}
    chosen, decisions = [], []
    with TicketIndex.open(index, writable=True, settings=settings) as idx:
        for q in train_q:
            hits = idx.search(like=q, before=created[q], k=10).hits
            false = next((h.id for h in hits if group[h.id] != group[q]), None)
            true = next((h.id for h in hits if group[h.id] == group[q]), None)
            if false is None or true is None:
                continue
            idx.feedback(q, false, "not_duplicate", by="feedback_eval")
            idx.feedback(q, true, "duplicate", by="feedback_eval")
            chosen.append(q)
            decisions.append({"query": q, "rejected": false, "confirmed": true})
            if len(chosen) == args.queries:
                break
    with TicketIndex.open(index) as idx:
        before = {"feedback_queries": ranks(idx, chosen, group, created),
                  "held_out": ranks(idx, test_q, group, created)}
    log2: list[str] = []
    res2 = train(log2)
    with TicketIndex.open(index) as idx:
        after = {"feedback_queries": ranks(idx, chosen, group, created),
                 "held_out": ranks(idx, test_q, group, created)}
    out.update({"second_model": res2.get("installed"), "feedback": res2.get("feedback"),
                "train_pairs_after": res2.get("train_pairs"), "before": before, "after": after,
                "decisions": decisions, "log": [line for line in log2 if "feedback" in line or "mined" in line]})
    print(json.dumps({k: v for k, v in out.items() if k != "decisions"}, indent=2))
    if args.out:
        args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
