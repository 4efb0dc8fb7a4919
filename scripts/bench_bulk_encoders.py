"""What a bigger bi-encoder would cost to index a shared project on this box: bulk encoding throughput of
MiniLM against another sentence-transformers model directory (all-mpnet-base-v2, for instance), on a random
sample of an index's own tickets (title and body as indexed), and the whole project's encode projected.

    python scripts/bench_bulk_encoders.py --index runs/hive/index --model /tmp/mpnet/model/all-mpnet-base-v2 \
        --sample 200 --out docs/bench_bulk_encoders.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from ticketsearch.atomic import atomic_write_json
from ticketsearch.index_data.records import ticket_text
from ticketsearch.index_data.store import TicketStore
from ticketsearch.index_dir import IndexDir
from ticketsearch.retrieval.encoder import Encoder
from ticketsearch.retrieval.manifest import Manifest
from ticketsearch.settings import get_settings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--model", action="append", required=True, help="a model directory to time beside minilm")
    ap.add_argument("--sample", type=int, default=200)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    manifest = Manifest.load(args.index)
    with TicketStore(IndexDir(args.index).store_path, read_only=True) as store:
        rows = [(t, b) for _, _, ts, bs in store.iter_index_rows() for t, b in zip(ts, bs)]
        schema = store.schema
    rng = np.random.default_rng(0)
    pick = rng.choice(len(rows), size=min(args.sample, len(rows)), replace=False)
    texts = [ticket_text(schema, rows[i][0], rows[i][1]) for i in pick]
    titles = [rows[i][0] for i in pick]
    out: dict[str, Any] = {"index": str(args.index), "tickets": len(rows), "sample": len(texts),
                           "max_seq_length": manifest.max_seq_length, "models": {}}
    for model in ["minilm", *args.model]:
        settings = get_settings().model_copy(update={"max_seq_length": manifest.max_seq_length})
        enc = Encoder(model, settings=settings)
        enc.encode(texts[:8])  # warm up
        t0 = time.perf_counter()
        enc.encode(texts)
        t_text = time.perf_counter() - t0
        t0 = time.perf_counter()
        enc.encode(titles)
        t_title = time.perf_counter() - t0
        per_ticket = (t_text + t_title) / len(texts)
        out["models"][enc.name] = {"dim": enc.dim, "tickets_per_s": len(texts) / t_text,
                                   "titles_per_s": len(texts) / t_title,
                                   "projected_minutes_texts_and_titles": per_ticket * len(rows) / 60}
        print(enc.name, {k: round(v, 1) for k, v in out["models"][enc.name].items()}, flush=True)
    atomic_write_json(args.out, out)


if __name__ == "__main__":
    main()
