"""Many collections on one service: search latency in an open collection against a service that holds that
collection alone, the latency of a search that must first open its collection, and resident memory at 1, 20 and
100 collections touched.

    python scripts/bench_collections.py --collections 100 --max-open 20 --out docs/bench_collections.json

Each collection holds 300 generated demo tickets (`ticketsearch demo-data`; --distinct different seeds, each
built once and copied, so that 100 collections do not take 100 encoding runs). Two real `ticketsearch serve
--root` processes run side by side: MANY (every collection, at most --max-open open) and ALONE (one collection).
Queries (titles of tickets from another seed, as an agent would type them) alternate between the two services,
one at a time, so that both see the same machine; latency is measured by the client, over HTTP.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.service.server import Server  # noqa: E402  (the same real-server helper the tests use)

TICKETS = 300
reranked: list[bool] = []  # whether each answer was reranked (every collection's own model, with --rerankers)


def build_base(out: Path, seed: int, rerankers: bool) -> Path:
    """One collection directory of 300 demo tickets, built through the library (and its reranker trained)."""
    from ticketsearch.index_data.demo import generate
    from ticketsearch.index_data.ingest import ingest_file
    from ticketsearch.index_data.schema import load_schema
    from ticketsearch.index_data.store import TicketStore
    from ticketsearch.index_dir import IndexDir
    from ticketsearch.pipeline.ingest import build_index
    from ticketsearch.retrieval.encoder import Encoder
    from ticketsearch.retrieval.threads import apply_threads
    from ticketsearch.settings import Settings

    settings = Settings()
    apply_threads(settings)  # as the CLI and the service set them
    folder = out / f"seed{seed}"
    data = out / f"seed{seed}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in generate(TICKETS, seed=seed)))
    encoder = Encoder("minilm", settings=settings)
    with TicketStore(IndexDir(folder).store_path, schema=load_schema("support")) as store:
        ingest_file(store, data, progress=False)
        build_index(folder, store, encoder, "minilm", settings=settings, progress=False)
    if rerankers:
        from ticketsearch.pipeline.training import train_index
        from ticketsearch.rerank.train import TrainConfig

        train_index(folder, None, None, "rerank-cross+pair", settings, TrainConfig(epochs=8), progress=False,
                    log=lambda _: None)
    else:
        IndexDir(folder).save_rerank_decision({"install": False, "use": "first_stage", "reason": "benchmark"})
    return folder


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def timed(c: httpx.Client, name: str, text: str) -> float:
    t0 = time.perf_counter()
    r = c.post(f"/v1/collections/{name}/search", json={"text": text, "k": 10})
    ms = (time.perf_counter() - t0) * 1000
    r.raise_for_status()
    reranked.append(r.json()["reranker"] is not None)
    return ms


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def summary(xs: list[float]) -> dict[str, float]:
    return {"n": len(xs), "p50_ms": round(statistics.median(xs), 2), "p90_ms": round(pct(xs, 0.9), 2),
            "mean_ms": round(statistics.fmean(xs), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--collections", type=int, default=100)
    ap.add_argument("--max-open", type=int, default=20)
    ap.add_argument("--distinct", type=int, default=10, help="Distinct demo datasets (copied round robin).")
    ap.add_argument("--queries", type=int, default=300, help="Searches per service in the open-collection phase.")
    ap.add_argument("--rerankers", action=argparse.BooleanOptionalAction, default=True,
                    help="Train each dataset's reranker (default), or leave first-stage order.")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--work", type=Path, default=None, help="Working folder (default: a temporary one).")
    args = ap.parse_args()
    from ticketsearch.index_data.demo import generate

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-collections-"))
    base = work / "base"
    base.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    bases = [build_base(base, seed, args.rerankers) for seed in range(args.distinct)]
    build_s = time.perf_counter() - t0
    many, alone = work / "many", work / "alone"
    names = [f"c{i:03d}" for i in range(args.collections)]
    for i, name in enumerate(names):
        shutil.copytree(bases[i % len(bases)], many / "collections" / name)
    shutil.copytree(bases[0], alone / "collections" / names[0])
    texts = [r["title"] for r in generate(200, seed=9999)]
    rng = random.Random(0)
    env = {"TICKETSEARCH_MAX_OPEN_COLLECTIONS": str(args.max_open), "TICKETSEARCH_COLLECTION_IDLE_S": "3600",
           "TICKETSEARCH_CHECKPOINT_INTERVAL_S": "5"}
    srv_many = Server(many, work / "many.log", env=env, root=True).start()
    srv_alone = Server(alone, work / "alone.log", env=env, root=True).start()
    out: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "python": platform.python_version(),
                 "collections": args.collections, "tickets_each": TICKETS, "max_open": args.max_open,
                 "distinct_datasets": args.distinct, "build_s": round(build_s, 1), "rerankers": args.rerankers}
    try:
        assert srv_many.proc is not None and srv_alone.proc is not None
        a, m = srv_alone.client(), srv_many.client()
        out["rss_mb"] = {"alone_idle": round(rss_mb(srv_alone.proc.pid), 1),
                         "many_idle": round(rss_mb(srv_many.proc.pid), 1)}
        cold: list[float] = []
        cold.append(timed(m, names[0], texts[0]))  # the first open of all
        timed(a, names[0], texts[0])
        out["rss_mb"]["alone_1"] = round(rss_mb(srv_alone.proc.pid), 1)
        out["rss_mb"]["many_1"] = round(rss_mb(srv_many.proc.pid), 1)
        for name in names[1 : args.max_open]:
            cold.append(timed(m, name, rng.choice(texts)))
        out["rss_mb"][f"many_{args.max_open}"] = round(rss_mb(srv_many.proc.pid), 1)
        # warm: each open collection searched a few times, then the open-collection phase, interleaved
        for name in names[: args.max_open]:
            timed(m, name, rng.choice(texts))
        for _ in range(20):
            timed(a, names[0], rng.choice(texts))
        lat_alone, lat_many = [], []
        for i in range(args.queries):
            text = rng.choice(texts)
            name = names[rng.randrange(args.max_open)]
            if i % 2:
                lat_alone.append(timed(a, names[0], text))
                lat_many.append(timed(m, name, text))
            else:
                lat_many.append(timed(m, name, text))
                lat_alone.append(timed(a, names[0], text))
        out["open_search"] = {"alone": summary(lat_alone), "many": summary(lat_many),
                              "p50_ratio_many_over_alone": round(statistics.median(lat_many)
                                                                 / statistics.median(lat_alone), 3)}
        # cold: every other collection, each search first opening its collection (and closing the LRU one)
        opening = [timed(m, name, rng.choice(texts)) for name in names[args.max_open :]]
        out["opening_search"] = summary(opening) if opening else None
        out["first_opens"] = summary(cold)
        out["rss_mb"][f"many_{args.collections}"] = round(rss_mb(srv_many.proc.pid), 1)
        listed = m.get("/v1/collections").json()
        out["open_at_end"] = sum(c["open"] for c in listed)
        out["listed"] = len(listed)
        out["answers_reranked"] = f"{sum(reranked)}/{len(reranked)}"
    finally:
        srv_many.stop()
        srv_alone.stop()
    print(json.dumps(out, indent=2))
    if args.out:
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
