"""How readable are the explanations? Over searches of an index with a trained reranker, the share of the
attention chart's top words (`attended`, the article's view) that are content words, against `matched`
(content words by construction): how many hits get at least one matched word, exact or near.

    python scripts/explain_words.py --index runs/hadoop/index --queries 100 --out docs/explain_words.json

Queries: the titles of the index's most recent tickets, each searched with `explain` (k 10) among the
tickets created before it (a new ticket looking for its earlier duplicates).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ticketsearch.api import TicketIndex  # noqa: E402
from ticketsearch.atomic import atomic_write_json  # noqa: E402
from ticketsearch.rerank.explain import is_content_word  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    idx = TicketIndex.open(args.index)
    try:
        store = idx.pipeline.store
        rows = store.newest_titles(args.queries)
        attended = content = hits = with_match = exact = near = 0
        top_attended: Counter[str] = Counter()
        for title, created in rows:
            res = idx.search(title, k=args.k, before=created, explain=True)
            for h in res.hits:
                hits += 1
                words = [a.word for a in h.attended or []]
                attended += len(words)
                content += sum(is_content_word(w) for w in words)
                top_attended.update(words[:3])
                matched = h.matched or []
                with_match += bool(matched)
                exact += sum(m.kind == "exact" for m in matched)
                near += sum(m.kind == "near" for m in matched)
    finally:
        idx.close()
    out = {
        "command": " ".join(sys.argv), "index": str(args.index), "queries": len(rows), "hits": hits,
        "attended_words": attended, "attended_content_share": round(content / max(attended, 1), 4),
        "hits_with_a_matched_word": round(with_match / max(hits, 1), 4),
        "matched_per_hit": {"exact": round(exact / max(hits, 1), 3), "near": round(near / max(hits, 1), 3)},
        "most_common_top3_attended": top_attended.most_common(15),
    }
    print(json.dumps(out, indent=2))
    if args.out:
        atomic_write_json(args.out, out)


if __name__ == "__main__":
    main()
