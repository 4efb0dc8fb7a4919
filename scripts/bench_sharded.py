"""The sharded service against the plain one, on one box: the cost of the scatter-gather, in process and on Ray
Serve, and a sizing table for 10M and 100M tickets from the measured per-shard figures.

    python scripts/bench_sharded.py --index /tmp/sd/idx --out docs/bench_sharded.json

One run, the same queries (each ticket's title, as a few-word query, then `similar` for the same tickets):
1. in process: `SearchPipeline` over the index against `ShardedEngine` over a 1-shard and a 2-shard split of it
   (shards in this process, `LocalShards`), and the 2-shard split with a read replica per shard (2 copies):
   the front's own cost;
2. over HTTP: `ticketsearch serve --index` (uvicorn) against `serve --ray` with the same splits (a local Ray
   instance, one front replica, one Serve application per shard copy): what a caller sees.
Every system answers every query; answers are compared with the plain one's (ids in order). Latencies are the
median and p90 of sequential requests after a warm-up. Sizing: bytes per ticket from the shard directories on
disk, encode throughput measured here (MiniLM on this machine's CPUs, and on its GPU where it has one); the
expected query latency at 5M tickets per shard extrapolated from `scripts/bench_search.py`'s per-stage figures at
100k and 1M tickets (`--stages`) plus the scatter-gather cost measured here (`--latency-only` recomputes it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TICKETSEARCH = str(Path(sys.executable).parent / "ticketsearch")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))], 2)


def timed(fn: Any, calls: list[Any], warm: int = 3) -> tuple[list[float], list[list[str]]]:
    for c in calls[:warm]:
        fn(c)
    ms, answers = [], []
    for c in calls:
        t0 = time.perf_counter()
        answers.append(fn(c))
        ms.append((time.perf_counter() - t0) * 1000)
    return ms, answers


def summary(ms: list[float], answers: list[list[str]], base: list[list[str]],
            kinds: list[str] | None = None) -> dict[str, Any]:
    """p50 / p90 of every call, and (`kinds`: each call's) the p50 of each kind apart."""
    out: dict[str, Any] = {"p50_ms": pct(ms, 0.5), "p90_ms": pct(ms, 0.9), "n": len(ms),
                           "same_answers": sum(a == b for a, b in zip(answers, base))}
    for kind in sorted(set(kinds or [])):
        out[f"p50_ms_{kind}"] = pct([m for m, k in zip(ms, kinds or []) if k == kind], 0.5)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(client: Any, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if client.get("/readyz").status_code == 200:
                return
        except Exception:  # noqa: BLE001 - not listening yet
            pass
        if time.monotonic() > deadline:
            raise SystemExit("service never became ready")
        time.sleep(0.5)


@contextmanager
def plain_service(index: Path, timeout: float = 300) -> Iterator[Any]:
    """`ticketsearch serve --index` on a free port, and a client once it is ready; stopped on leaving."""
    import httpx

    port = free_port()
    proc = subprocess.Popen([TICKETSEARCH, "serve", "--index", str(index), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=timeout) as c:
            wait_ready(c)
            yield c
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def busy_share(window_s: float = 1.0) -> float:
    """The machine's CPU time in use over `window_s` (all cores, from /proc/stat)."""
    def sample() -> tuple[int, int]:
        vals = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = vals[3] + vals[4]
        return sum(vals) - idle, sum(vals)

    b0, t0 = sample()
    time.sleep(window_s)
    b1, t1 = sample()
    return (b1 - b0) / max(1, t1 - t0)


def wait_quiet(limit_s: float = 90.0, share: float = 0.1) -> float:
    """Wait until the machine is quiet (under `share` of its CPUs busy for a second): a service is ready for
    searches before it has loaded the model it writes with (a background thread, in every process that opens an
    index), and that load must not be timed as searches. Returns the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s and busy_share() > share:
        pass
    return round(time.monotonic() - t0, 1)


def http_calls(client: Any, prefix: str, calls: list[Any]) -> tuple[list[float], list[list[str]]]:
    def one(c: Any) -> list[str]:
        kind, arg = c
        if kind == "search":
            r = client.post(f"{prefix}/search", json={"text": arg, "k": 10})
        else:
            r = client.get(f"{prefix}/tickets/{arg}/similar", params={"k": 10})
        r.raise_for_status()
        return [h["id"] for h in r.json()["hits"]]

    return timed(one, calls)


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


MEMORY_PARTS = ("index/vectors.faiss", "index/titles.faiss", "index/rerank_vectors.npy", "index/bm25")


STAGES = ("encode", "retrieve", "rerank", "fetch")


def expected_query_ms(stages: dict[str, Any], tickets: int, overhead: dict[str, float]) -> dict[str, Any]:
    """One shard's search time at `tickets`, extrapolated per stage from the measured single hybrid queries at
    100k and 1M tickets (`scripts/bench_search.py --parts stages`: p50 per stage), as a power law through those
    two points (BM25's cost grows with the postings it scores, nearly linearly; HNSW's and the fetch's slowly),
    plus the measured scatter-gather cost of the front. An extrapolation from measured figures, not a
    measurement at that size."""
    lo, hi = stages["100000"]["single/hybrid"], stages["1000000"]["single/hybrid"]
    per_stage = {}
    for name in STAGES:
        a, b = lo[name]["p50_ms"], hi[name]["p50_ms"]
        exponent = max(0.0, math.log(b / a) / math.log(10))
        per_stage[name] = {"ms_100k": a, "ms_1m": b, "exponent": round(exponent, 2),
                           "ms_at_shard_size": round(b * (tickets / 1_000_000) ** exponent, 1)}
    shard_ms = sum(v["ms_at_shard_size"] for v in per_stage.values())
    return {"tickets_per_shard": tickets, "per_stage_p50": per_stage, "one_shard_ms": round(shard_ms, 1),
            **{f"expected_p50_ms_{k}": round(shard_ms + v, 1) for k, v in overhead.items()}}


def encode_rates(model: str, texts: list[str], settings: Any) -> dict[str, float | None]:
    """Tickets per second of a bulk encode (batches as a build makes them), on this machine's CPUs and, where
    there is one, on its GPU (the text list repeated to 20x, after a warm-up, so that the GPU is measured busy)."""
    import torch

    from ticketsearch.retrieval.encoder import Encoder

    rates: dict[str, float | None] = {"cpu": None, "gpu": None}
    for device in ("cpu", "cuda"):
        if device == "cuda" and not torch.cuda.is_available():
            continue
        enc = Encoder(model, settings=settings, device=device)
        batch = texts * (20 if device == "cuda" else 1)
        enc.encode(texts[:64])
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        enc.encode(batch)
        if device == "cuda":
            torch.cuda.synchronize()
        rates["gpu" if device == "cuda" else "cpu"] = len(batch) / (time.perf_counter() - t0)
        del enc
    return rates


def sizing_table(coll: Path, tickets: int, enc_rate: float, front_ms: float, ray_ms: float,
                 gpu_rate: float | None = None) -> dict[str, Any]:
    """Shards, memory and disk per shard, encode hours, from the parts of a 2-shard split of the index: what a
    shard holds in memory (both FAISS indexes, the reranker's candidate vectors, BM25 with term frequencies)
    and what it keeps on disk (DuckDB, the token states). Latency: the measured scatter-gather cost on top of
    one index's (the expected latency at 5M tickets per shard: `expected_latency`)."""
    shards = sorted(coll.glob("shard-*"))
    mem = sum(dir_bytes(d / part) if (d / part).is_dir() else (d / part).stat().st_size
              for d in shards for part in MEMORY_PARTS) / tickets
    disk = sum(dir_bytes(d) for d in shards) / tickets
    per_shard = 5_000_000
    rows = []
    for total in (10_000_000, 100_000_000):
        rows.append({"tickets": total, "shards": -(-total // per_shard),
                     "memory_gib_per_shard": round(mem * per_shard / 2**30, 1),
                     "disk_gib_per_shard": round(disk * per_shard / 2**30, 1),
                     "encode_hours_one_cpu_node_like_this": round(total / enc_rate / 3600, 1),
                     "encode_hours_one_gpu": round(total / gpu_rate / 3600, 1) if gpu_rate
                     else "not measured (no GPU here)"})
    return {"memory_bytes_per_ticket": round(mem), "disk_bytes_per_ticket": round(disk),
            "cpu_encode_tickets_per_s": round(enc_rate, 1),
            "gpu_encode_tickets_per_s": round(gpu_rate, 1) if gpu_rate else None,
            "tickets_per_shard": per_shard, "rows": rows,
            "scatter_gather_ms_in_process_2_shards": round(front_ms, 1),
            "scatter_gather_ms_ray_2_shards": round(ray_ms, 1)}


def expected_latency(out: dict[str, Any], stages_path: Path) -> dict[str, Any]:
    """The expected p50 of a query at 5M tickets per shard: one shard's extrapolated search plus what the front
    added over the plain engine in this run with 2 shards (in process, and over HTTP on Ray Serve)."""
    stages = json.loads(stages_path.read_text())["stages"]
    overhead = {"in_process": out["in_process"]["2_shards"]["p50_ms"] - out["in_process"]["plain"]["p50_ms"],
                "ray_serve": (out["http"].get("ray_2_shards") or out["http"]["ray_2_shards_serve_batching"])["p50_ms"]
                - out["http"]["plain"]["p50_ms"]}
    return {"stages_from": str(stages_path.relative_to(ROOT) if stages_path.is_relative_to(ROOT) else stages_path),
            **expected_query_ms(stages, out["sizing"]["tickets_per_shard"], overhead)}


def main() -> None:
    import httpx

    from ticketsearch.pipeline.search import SearchPipeline
    from ticketsearch.pipeline.sharded import LocalShards, ShardedEngine
    from ticketsearch.pipeline.sharding import split_index
    from ticketsearch.pipeline.shared_models import SharedModels
    from ticketsearch.retrieval.threads import apply_threads
    from ticketsearch.settings import Settings

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--encode-per-s", type=float, default=None, help="CPU encode rate (tickets/s) for the sizing "
                    "table; default: measured here on 200 of the index's tickets")
    ap.add_argument("--stages", type=Path, default=ROOT / "docs" / "bench_search_stages.json",
                    help="per-stage search latency at 100k and 1M tickets, for the expected query latency per shard")
    ap.add_argument("--latency-only", action="store_true",
                    help="only recompute the expected query latency in --out from its measured figures")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.latency_only:
        saved = json.loads(args.out.read_text())
        saved["sizing"]["expected_latency"] = expected_latency(saved, args.stages)
        args.out.write_text(json.dumps(saved, indent=2) + "\n")
        print(json.dumps(saved["sizing"]["expected_latency"], indent=2))
        return
    settings = Settings()
    apply_threads(settings)  # as the CLI and the service set them
    tmp = Path(tempfile.mkdtemp(prefix="bench-sharded-"))
    out: dict[str, Any] = {"index": str(args.index), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                           "command": " ".join(sys.argv)}
    try:
        roots = {}
        for n in (1, 2):
            roots[n] = tmp / f"root{n}"
            split_index(args.index, roots[n] / "collections" / "c", n, settings, progress=False)
        one = SearchPipeline(args.index, settings)
        rows = one.store.get_rows(one.store.row_ids().tolist()[: args.queries], with_body=False)
        calls: list[Any] = [("search", t.title) for t in rows] + [("similar", t.id) for t in rows]
        kinds = [c[0] for c in calls]
        tickets = one.store.count()

        def plain(c: Any) -> list[str]:
            res = one.search(c[1], k=10) if c[0] == "search" else one.search(like=c[1], k=10)
            return [h.id for h in res.hits]

        wait_quiet()
        ms, base = timed(plain, calls)
        inproc: dict[str, Any] = {"plain": summary(ms, base, base, kinds)}
        per_shard: dict[str, Any] = {}
        for n, copies in ((1, 1), (2, 1), (2, 2)):
            root = roots[n]
            models = SharedModels(settings)
            eng = ShardedEngine(root / "collections" / "c", settings, models,
                                connect=partial(LocalShards, replicas=copies))
            eng.start()
            assert eng.searcher is not None
            eng.searcher._query_encoder = one.query_encoder  # the same query path as the plain pipeline

            def sharded(c: Any, eng: ShardedEngine = eng) -> list[str]:
                res = eng.search(text=c[1], k=10) if c[0] == "search" else eng.search(like=c[1], k=10)
                return [h.id for h in res.hits]

            wait_quiet()
            ms, ans = timed(sharded, calls)
            name = f"{n}_shards" + (f"_{copies}_copies" if copies > 1 else "")
            inproc[name] = summary(ms, ans, base, kinds)
            t = eng.search(text=calls[0][1], k=10).timings_ms
            inproc[name]["stage_ms_example"] = t
            eng.close()
            models.close()
            if copies == 1:
                per_shard[str(n)] = {"bytes_per_ticket_on_disk": round(dir_bytes(root / "collections" / "c") / tickets)}
        inproc["ratio_1_shard_to_plain_p50"] = round(inproc["1_shards"]["p50_ms"] / inproc["plain"]["p50_ms"], 2)
        inproc["ratio_2_shards_to_plain_p50"] = round(inproc["2_shards"]["p50_ms"] / inproc["plain"]["p50_ms"], 2)
        inproc["ratio_2_copies_to_1_p50"] = round(inproc["2_shards_2_copies"]["p50_ms"]
                                                  / inproc["2_shards"]["p50_ms"], 2)
        out["in_process"] = inproc
        texts = [t.title + "\n" + t.body for t in one.store.get_rows(one.store.row_ids().tolist()[:200])]
        model = one.manifest.model
        one.close()
        rates = encode_rates(model, texts, settings) if args.encode_per_s is None else {"cpu": args.encode_per_s,
                                                                                          "gpu": None}
        enc_rate = float(rates["cpu"] or 0.0)

        http: dict[str, Any] = {}
        with plain_service(args.index) as c:
            quiet = wait_quiet()
            ms, hbase = http_calls(c, "/v1", calls)
            http["plain"] = {**summary(ms, hbase, hbase, kinds), "waited_for_quiet_s": quiet}
        import inspect

        import ray
        from ray import serve

        from ticketsearch.service.ray_app import FRONT_APP, front_app

        # which batching a tree's front has: its own encoder thread (this tree), Serve's only (trees before
        # 2395256), or either (the sixth session's trees: measured the same, then Serve's was removed)
        params = inspect.signature(front_app).parameters
        both = "serve_batching" in params
        serve_only = not both and "make_batcher" in inspect.getsource(front_app)
        configs = ((1, 1, False), (1, 1, True), (2, 1, False), (2, 2, False)) if both else (
            ((1, 1, True), (2, 1, True), (2, 2, True)) if serve_only else ((1, 1, False), (2, 1, False), (2, 2, False)))
        for n, copies, serve_batching in configs:
            root = roots[n]
            port = free_port()
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
            try:
                serve.start(http_options={"host": "127.0.0.1", "port": port})
                t0 = time.perf_counter()
                options: dict[str, Any] = {"serve_batching": serve_batching} if both else {}
                serve.run(front_app(root, settings, n, 1, shard_replicas=copies, **options), name=FRONT_APP,
                          route_prefix="/")
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as c:
                    wait_ready(c)
                    c.post("/v1/collections/c/search", json={"text": "warm up", "k": 1}).raise_for_status()
                    start_s = time.perf_counter() - t0
                    quiet = wait_quiet()
                    ms, ans = http_calls(c, "/v1/collections/c", calls)
                    name = (f"ray_{n}_shards" + (f"_{copies}_copies" if copies > 1 else "")
                            + ("_serve_batching" if serve_batching else ""))
                    http[name] = {**summary(ms, ans, hbase, kinds), "start_s": round(start_s, 1),
                                  "waited_for_quiet_s": quiet}
            finally:
                serve.shutdown()
                ray.shutdown()
        for name in [n for n in http if n.startswith("ray_")]:
            http[f"ratio_{name}_to_plain_p50"] = round(http[name]["p50_ms"] / http["plain"]["p50_ms"], 2)
        ray2 = "ray_2_shards_serve_batching" if serve_only else "ray_2_shards"
        out["http"] = http

        out["sizing"] = sizing_table(roots[2] / "collections" / "c", tickets, enc_rate,
                                     inproc["2_shards"]["p50_ms"] - inproc["plain"]["p50_ms"],
                                     http[ray2]["p50_ms"] - http["plain"]["p50_ms"], rates["gpu"])
        out["sizing"]["expected_latency"] = expected_latency(out, args.stages)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
