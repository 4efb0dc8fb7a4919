"""Speed and scale: per-stage search latency at 10k / 100k / 1M tickets, index choice by size, and the cached
rerank against the article's re-encoding rerank.

    python scripts/bench_search.py --sizes 10000 100000 1000000 --out docs/bench_search.json

Parts (each can be skipped):
1. `sweep`: exact flat, HNSW and IVF over generated *clustered* embeddings (so that approximate recall means
   something), each with its search parameter swept: recall@100 against exact search, single-query latency,
   build time and memory per ticket. Flat search is also timed with 1 and 2 FAISS threads.
2. `stages`: a real index directory per size (DuckDB store of generated support tickets, FAISS index of the
   automatic kind over generated embeddings, BM25 over the tickets' text, the demo's trained reranker with
   cached candidate vectors), searched through the service engine: per-stage p50/p99 (query encode with the
   real MiniLM, first stage dense / BM25 / hybrid, rerank of the top 100, DuckDB fetch), for single queries
   and for 8 concurrent ones.
3. `rerank`: on a real index with a trained reranker (default: demo/index), the cached per-item vectors
   against the article's way (re-encode every candidate's text for every query), on the same 100 candidates,
   with the score agreement.
4. `hadoop`: recall@100 of the automatic index choice on the real embeddings of the shared hadoop set.
5. `fetch`: the DuckDB fetch of 100 hits by row id, with the row-id index and with the older semi-join.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ticketsearch.atomic import atomic_write_json  # noqa: E402
from ticketsearch.retrieval.recall import clustered, recall_at_k  # noqa: E402
from ticketsearch.retrieval.threads import apply_threads  # noqa: E402
from ticketsearch.retrieval.vector_index import VectorIndex, choose_kind  # noqa: E402
from ticketsearch.settings import Settings  # noqa: E402

DIM = 384


# ---- generated data -------------------------------------------------------------------------------------
def pct(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs) * 1000.0
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p99_ms": round(float(np.percentile(a, 99)), 3)}


def time_queries(index: VectorIndex, queries: np.ndarray, k: int = 100) -> tuple[dict[str, float], np.ndarray]:
    index.search(queries[:5], k)  # warm up
    lat, ids = [], []
    for q in queries:
        t0 = time.perf_counter()
        _, i = index.search(q[None, :], k)
        lat.append(time.perf_counter() - t0)
        ids.append(i[0])
    return pct(lat), np.stack(ids)


def index_bytes(index: VectorIndex) -> int:
    return len(faiss.serialize_index(index.index))


# ---- 1. index sweep -------------------------------------------------------------------------------------
def sweep(n: int, log: Any, keep: Path | None = None) -> dict[str, Any]:
    vecs, queries = clustered(n, DIM, seed=n)
    ids = np.arange(n, dtype=np.int64)
    out: dict[str, Any] = {"n": n, "auto_kind": choose_kind(n, Settings()), "rows": []}
    faiss.omp_set_num_threads(1)
    t0 = time.perf_counter()
    flat = VectorIndex.build(ids, vecs, kind="flat", settings=Settings())
    build = time.perf_counter() - t0
    lat1, truth = time_queries(flat, queries)
    faiss.omp_set_num_threads(2)
    lat2, _ = time_queries(flat, queries)
    faiss.omp_set_num_threads(1)
    fb = index_bytes(flat)
    out["rows"].append({"kind": "flat", "param": "-", "recall@100": 1.0, **lat1, "threads2": lat2,
                        "build_s": round(build, 2), "bytes_per_ticket": round(fb / n, 1)})
    log(f"  {n:>9,} flat: p50 {lat1['p50_ms']} ms (2 threads {lat2['p50_ms']} ms)")
    del flat
    sweeps = (("hnsw", "efSearch", (32, 64, 128, 256, 512)), ("ivf", "nprobe", (4, 8, 16, 32, 64, 128)))
    for kind, name, values in sweeps:
        t0 = time.perf_counter()
        faiss.omp_set_num_threads(2)  # building uses both cores; searching is timed on one
        idx = VectorIndex.build(ids, vecs, kind=kind, settings=Settings())
        build = time.perf_counter() - t0
        if keep is not None and kind == choose_kind(n, Settings()):
            idx.save(keep / f"{kind}-{n}.faiss")  # the 'stages' part reuses it (same vectors, same ids)
        faiss.omp_set_num_threads(1)
        size = index_bytes(idx)
        base = faiss.downcast_index(idx.index.index)
        for v in values:
            if kind == "hnsw":
                base.hnsw.efSearch = v
            else:
                base.nprobe = v
            lat, found = time_queries(idx, queries)
            r = recall_at_k(found, truth)
            out["rows"].append({"kind": kind, "param": f"{name}={v}", "recall@100": round(r, 4), **lat,
                                "build_s": round(build, 1), "bytes_per_ticket": round(size / n, 1)})
            log(f"  {n:>9,} {kind} {name}={v}: recall@100 {r:.4f}, p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms")
        del idx
    return out


# ---- 2. per-stage latency through the engine --------------------------------------------------------------
def build_stage_index(n: int, root: Path, reranker_dir: Path, log: Any, keep: Path | None = None) -> Path:
    """A real index directory of n generated tickets with generated (clustered) embeddings."""
    from ticketsearch.index_data.demo import generate
    from ticketsearch.index_data.features import FeatureSpace
    from ticketsearch.index_data.records import normalize_row
    from ticketsearch.index_data.schema import load_schema
    from ticketsearch.index_data.store import TicketStore
    from ticketsearch.index_dir import IndexDir
    from ticketsearch.pipeline.rerank_vectors import save_rerank_vectors
    from ticketsearch.rerank.runtime import Reranker
    from ticketsearch.retrieval.builder import build_bm25
    from ticketsearch.retrieval.live import RowVectors
    from ticketsearch.retrieval.manifest import Manifest

    d = root / f"idx{n}"
    out = IndexDir(d)
    schema = load_schema("support")
    t0 = time.perf_counter()
    with TicketStore(IndexDir(d).store_path, schema=schema) as store:
        for s in tqdm(range(0, n, 50_000), desc=f"store {n:,}", unit=" chunk"):
            rows = generate(min(50_000, n - s), seed=s)
            for r in rows:
                r["id"] = f"G{s}-{r['id']}"
                r["duplicate_of"] = None
            store.upsert([normalize_row(schema, r, i) for i, r in enumerate(rows)])
        log(f"  {n:,} tickets stored in {time.perf_counter() - t0:.0f}s")
        vecs, _ = clustered(n, DIM, seed=n)
        row_ids = store.row_ids()
        settings = Settings()
        t0 = time.perf_counter()
        kind = choose_kind(n, settings)
        cached = keep / f"{kind}-{n}.faiss" if keep is not None else None
        if cached is not None and cached.is_file() and np.array_equal(row_ids, np.arange(n)):
            out.derived.mkdir(parents=True, exist_ok=True)
            shutil.copy(cached, out.vectors_path("text"))
            vindex = VectorIndex.load(out.vectors_path("text"), kind, settings)
        else:
            vindex = VectorIndex.build(row_ids, vecs, kind="auto", settings=settings)
            vindex.save(out.vectors_path("text"))
        shutil.copy(out.vectors_path("text"), out.vectors_path("title"))  # the title index: same size and kind
        log(f"  {vindex.kind} index built in {time.perf_counter() - t0:.0f}s")
        t0 = time.perf_counter()
        build_bm25(out, store)
        log(f"  BM25 built in {time.perf_counter() - t0:.0f}s")
        features = FeatureSpace.fit(schema, store.field_rows())
        atomic_write_json(out.features_path, features.to_dict())
        shutil.copytree(reranker_dir, out.reranker_path)
        rr = Reranker(out.reranker_path)
        save_rerank_vectors(out, rr, RowVectors(row_ids, vecs), store.change_seq)
        enc_key = _encoder_key()
        Manifest(model="minilm", model_name="all-MiniLM-L6-v2", model_key=enc_key, dim=DIM, max_seq_length=256,
                 schema="support", index_kind=vindex.kind, counts={"tickets": n, "vectors": n},
                 change_seq=store.change_seq, built_at="bench").save(d)
    return d


_KEY: str | None = None


def _encoder_key() -> str:
    global _KEY
    if _KEY is None:
        from ticketsearch.retrieval.encoder import Encoder

        _KEY = Encoder("minilm", settings=Settings()).key
    return _KEY


def stages(index_dir: Path, texts: list[str], log: Any) -> dict[str, Any]:
    from ticketsearch.pipeline.engine import Engine

    settings = Settings()
    apply_threads(settings)  # as the CLI and the service set them
    engine = Engine(index_dir, settings)
    engine.start()
    if not engine.ready:
        raise SystemExit(f"engine failed: {engine.error}")
    out: dict[str, Any] = {}
    try:
        for method in ("dense", "bm25", "hybrid"):
            engine.search(text=texts[0], k=10, method=method)  # warm up
            timings: dict[str, list[float]] = {}
            for t in texts[:100]:
                t0 = time.perf_counter()
                res = engine.search(text=t, k=10, method=method)
                timings.setdefault("total", []).append(time.perf_counter() - t0)
                for stage, ms in res.timings_ms.items():
                    timings.setdefault(stage, []).append(ms / 1000.0)
            out[f"single/{method}"] = {s: pct(v) for s, v in timings.items()}
            log(f"    single {method}: "
                + ", ".join(f"{s} {v['p50_ms']:.1f}/{v['p99_ms']:.1f}" for s, v in out[f'single/{method}'].items()))
        # 8 concurrent queries (hybrid + rerank), each thread its own stream
        timings = {}
        lock = threading.Lock()

        def worker(w: int) -> None:
            for t in texts[w * 12 : w * 12 + 12]:
                t0 = time.perf_counter()
                res = engine.search(text=t, k=10)
                with lock:
                    timings.setdefault("total", []).append(time.perf_counter() - t0)
                    for stage, ms in res.timings_ms.items():
                        timings.setdefault(stage, []).append(ms / 1000.0)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - t0
        out["concurrent8/hybrid"] = {s: pct(v) for s, v in timings.items()}
        out["concurrent8/hybrid"]["throughput_qps"] = round(len(timings["total"]) / wall, 1)
        log("    8 concurrent hybrid: " + ", ".join(
            f"{s} {v['p50_ms']:.1f}/{v['p99_ms']:.1f}"
            for s, v in out["concurrent8/hybrid"].items() if isinstance(v, dict)))
    finally:
        engine.close()
    return out


# ---- 3. cached rerank against the article's re-encoding --------------------------------------------------
def rerank_compare(index_dir: Path, texts: list[str], log: Any) -> dict[str, Any]:
    """The search path's own rerank stage, timed three ways on the same query and the same 100 candidates:
    with the cached per-item vectors (the product), with every candidate's text re-encoded and fused again
    (the article's way), and with the cached vectors rounded to float16."""
    from ticketsearch.index_data.records import ticket_text
    from ticketsearch.pipeline.rerank_vectors import token_states
    from ticketsearch.pipeline.search import SearchPipeline

    settings = Settings()
    apply_threads(settings)  # as the CLI and the service set them
    s = SearchPipeline(index_dir, settings)
    if s.reranker is None:
        raise SystemExit(f"{index_dir}: no trained reranker with cached vectors")
    rr = s.reranker
    cached_target = s.target_vectors

    def naive_target(row_ids: list[int]) -> np.ndarray:
        stored = {t_.row_id: t_ for t_ in s.store.get_rows(row_ids)}
        texts_ = [ticket_text(s.store.schema, stored[r].title, stored[r].body) for r in row_ids]
        return rr.vectors_from_cache(token_states(s.encoder, texts_), [stored[r].values for r in row_ids], "target")

    def half_target(row_ids: list[int]) -> np.ndarray:
        return cached_target(row_ids).astype(np.float16).astype(np.float32)

    def run(target: Any, t: str) -> tuple[float, dict[str, float]]:
        s.target_vectors = target  # type: ignore[method-assign]  # the benchmark swaps the stage it times
        res = s.search(t, k=100)
        return res.timings_ms["rerank"] / 1000.0, {h.id: h.rerank_score for h in res.hits}

    timings: dict[str, list[float]] = {"cached": [], "naive": [], "float16": []}
    diffs: dict[str, list[float]] = {"naive": [], "float16": []}
    same: dict[str, list[float]] = {"naive": [], "float16": []}
    vec_diff: list[float] = []
    try:
        run(cached_target, texts[0])  # warm up
        for t in texts[:20]:
            tc, sc = run(cached_target, t)
            timings["cached"].append(tc)
            top_c = sorted(sc, key=lambda i: -sc[i])[:10]
            for name, fn in (("naive", naive_target), ("float16", half_target)):
                tn, sn = run(fn, t)
                timings[name].append(tn)
                common = [i for i in sc if i in sn]
                diffs[name].append(max(abs(sc[i] - sn[i]) for i in common))
                top_n = sorted(sn, key=lambda i: -sn[i])[:10]
                same[name].append(float(np.mean([a == b for a, b in zip(top_c, top_n)])))
            rows = [s.store.get(i).row_id for i in top_c]
            fresh, cached = naive_target(rows), cached_target(rows)
            vec_diff.append(float(np.max(np.abs(fresh - cached)) / max(float(np.max(np.abs(fresh))), 1e-9)))
    finally:
        s.target_vectors = cached_target  # type: ignore[method-assign]  # restores the stage swapped above
        s.close()
    out: dict[str, Any] = {"queries": len(timings["cached"]), "candidates": 100,
                           "model": rr.name, "model_best_epoch": rr.meta.get("train", {}).get("best_epoch"),
                           "max_rel_vector_diff_fresh_vs_cached": round(max(vec_diff), 6)}
    for name, v in timings.items():
        out[name] = pct(v)
    for name in ("naive", "float16"):
        out[name]["max_abs_logit_diff"] = round(max(diffs[name]), 6)
        out[name]["top10_positions_equal"] = round(float(np.mean(same[name])), 4)
    out["speedup_p50"] = round(out["naive"]["p50_ms"] / out["cached"]["p50_ms"], 1)
    log(f"  rerank stage, 100 candidates: cached p50 {out['cached']['p50_ms']} ms, the article's re-encoding "
        f"p50 {out['naive']['p50_ms']} ms ({out['speedup_p50']}x); "
        f"|logit diff| <= {out['naive']['max_abs_logit_diff']}; "
        f"float16 vectors: |logit diff| <= {out['float16']['max_abs_logit_diff']}, top-10 equal "
        f"{out['float16']['top10_positions_equal']}")
    return out


# ---- 5. the DuckDB fetch of 100 hits, with and without the row-id index ----------------------------------
def fetch_check(n: int, root: Path, log: Any) -> dict[str, Any]:
    from ticketsearch.index_data.demo import generate
    from ticketsearch.index_data.records import normalize_row
    from ticketsearch.index_data.schema import load_schema
    from ticketsearch.index_data.store import TicketStore

    schema = load_schema("support")
    out: dict[str, Any] = {"n": n}
    with TicketStore(root / f"fetch{n}.duckdb", schema=schema) as store:
        for s in range(0, n, 50_000):
            rows = generate(min(50_000, n - s), seed=s)
            for r in rows:
                r["id"] = f"G{s}-{r['id']}"
                r["duplicate_of"] = None
            store.upsert([normalize_row(schema, r, i) for i, r in enumerate(rows)])
        rng = np.random.default_rng(0)
        for label, indexed, body in (("row-id index, no bodies (what search fetches)", True, False),
                                     ("row-id index, with bodies", True, True), ("no index (semi-join)", False, True)):
            store._row_id_index = indexed
            lat = []
            for _ in range(50):
                ids = rng.choice(n, 100, replace=False).tolist()
                t0 = time.perf_counter()
                got = store.get_rows(ids, with_body=body)
                lat.append(time.perf_counter() - t0)
                assert len(got) == 100
            out[label] = pct(lat)
            log(f"  fetch 100 of {n:,}: {label} p50 {out[label]['p50_ms']} ms, p99 {out[label]['p99_ms']} ms")
    return out


# ---- 4. the automatic choice on real hadoop embeddings ---------------------------------------------------
def hadoop_check(index_dir: Path, log: Any) -> dict[str, Any]:
    from ticketsearch.index_data.store import TicketStore, read_texts
    from ticketsearch.index_dir import IndexDir
    from ticketsearch.retrieval.builder import embed_store
    from ticketsearch.retrieval.encoder import Encoder

    with TicketStore(IndexDir(index_dir).store_path, read_only=True) as store:
        enc = Encoder("minilm", settings=Settings())
        ids, vecs, _, _ = embed_store(store, enc, progress=False, texts_=read_texts(store))
    rng = np.random.default_rng(0)
    qi = rng.choice(len(ids), 200, replace=False)
    queries = vecs[qi]
    faiss.omp_set_num_threads(1)
    flat = VectorIndex.build(ids, vecs, kind="flat", settings=Settings())
    _, truth = time_queries(flat, queries)
    out = {"n": int(len(ids)), "rows": []}
    for kind in ("hnsw", "ivf"):
        idx = VectorIndex.build(ids, vecs, kind=kind, settings=Settings())
        lat, found = time_queries(idx, queries)
        r = recall_at_k(found, truth)
        out["rows"].append({"kind": kind, "recall@100": round(r, 4), **lat})
        log(f"  hadoop ({len(ids):,} real MiniLM embeddings) {kind} default params: "
            f"recall@100 {r:.4f}, p50 {lat['p50_ms']} ms")
    return out


def http_single(index_dir: Path, texts: list[str], log: Any, env: dict[str, str], n: int = 200) -> dict[str, Any]:
    """End to end: a real `ticketsearch serve` on the index, one client posting /v1/search (k 10, hybrid,
    rerank of the top 100) with a new query each time; client-side latency and the server's own stages."""
    import httpx

    sys.path.insert(0, str(ROOT))
    from tests.service.server import Server

    with tempfile.TemporaryDirectory() as logs:
        server = Server(index_dir, Path(logs) / "server.log", env=env).start(timeout=900)
        try:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                for t in texts[:10]:  # warm up
                    client.post("/v1/search", json={"text": t, "k": 10}).raise_for_status()
                total: list[float] = []
                stages: dict[str, list[float]] = {}
                notes: list[str] = []
                for i in range(n):
                    body = {"text": texts[(10 + i) % len(texts)], "k": 10}
                    t0 = time.perf_counter()
                    r = client.post("/v1/search", json=body)
                    total.append(time.perf_counter() - t0)
                    r.raise_for_status()
                    data = r.json()
                    notes = data.get("notes", notes)
                    for stage, ms in data["timings_ms"].items():
                        stages.setdefault(stage, []).append(ms / 1000.0)
        finally:
            server.stop()
    out = {"http_total": pct(total), **{s: pct(v) for s, v in stages.items()}, "requests": n, "env": env,
           "notes": notes}
    log("    HTTP single client: " + ", ".join(f"{s} {v['p50_ms']:.1f}/{v['p99_ms']:.1f}" for s, v in out.items()
                                             if isinstance(v, dict) and "p50_ms" in v))
    return out


def query_texts(index_dir: Path, n: int = 120) -> list[str]:
    from ticketsearch.index_data.store import TicketStore, read_texts
    from ticketsearch.index_dir import IndexDir

    with TicketStore(IndexDir(index_dir).store_path, read_only=True) as store:
        st = read_texts(store)
        rows = list(zip(st.titles, st.bodies))
    rng = np.random.default_rng(1)
    return [f"{rows[i][0]}. {rows[i][1][:200]}" for i in rng.choice(len(rows), min(n, len(rows)), replace=False)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--parts", nargs="+", default=["sweep", "stages", "rerank", "hadoop", "fetch", "http"],
                    choices=["sweep", "stages", "rerank", "hadoop", "fetch", "http"])
    ap.add_argument("--server-env", action="append", default=[],
                    help="Setting for the 'http' part's server, e.g. TICKETSEARCH_QUERY_ENCODER=fp32 (repeatable).")
    ap.add_argument("--demo-index", type=Path, default=ROOT / "demo" / "index",
                    help="A real index with a trained reranker (for 'rerank', and the reranker for 'stages').")
    ap.add_argument("--hadoop-index", type=Path, default=ROOT / "runs" / "hadoop" / "index")
    ap.add_argument("--workdir", type=Path, default=None, help="Where to build the 'stages' indexes (temp dir).")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    from ticketsearch.index_dir import IndexDir
    os.environ["TICKETSEARCH_DEVICE"] = args.device
    log = print
    result: dict[str, Any] = {
        "command": " ".join(["python", *sys.argv]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}, "
                   f"device {args.device}",
        "faiss": faiss.__version__,
    }
    texts = query_texts(args.demo_index)

    def save() -> None:  # after every part, so a long run keeps what it measured
        if args.out:
            atomic_write_json(args.out, result)

    if "rerank" in args.parts:
        result["rerank"] = rerank_compare(args.demo_index, texts, log)
        save()
    if "hadoop" in args.parts and IndexDir(args.hadoop_index).has_store():
        result["hadoop"] = hadoop_check(args.hadoop_index, log)
        save()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        keep = Path(tmp)
        if "fetch" in args.parts:
            result["fetch"] = [fetch_check(n, keep, log) for n in args.sizes]
            save()
        if "sweep" in args.parts:
            result["sweep"] = []
            for n in args.sizes:
                result["sweep"].append(sweep(n, log, keep))
                save()
        if "stages" in args.parts:
            result["stages"] = {}
            for n in args.sizes:
                log(f"stages at {n:,} tickets")
                d = build_stage_index(n, keep, IndexDir(args.demo_index).reranker_path, log, keep)
                result["stages"][str(n)] = stages(d, texts, log)
                shutil.rmtree(d)
                save()
        if "http" in args.parts:
            result["http"] = {}
            base_env = {"TICKETSEARCH_THREADS": "2", "TICKETSEARCH_DEVICE": args.device}
            variants = {"default": base_env}
            for kv in args.server_env:
                k, _, v = kv.partition("=")
                variants[kv] = {**base_env, k: v}
            for n in args.sizes:
                log(f"HTTP at {n:,} tickets")
                d = build_stage_index(n, keep, IndexDir(args.demo_index).reranker_path, log, keep)
                result["http"][str(n)] = {}
                for name, env in variants.items():
                    result["http"][str(n)][name] = http_single(d, texts, log, env)
                    save()
                shutil.rmtree(d)
    if args.out:
        log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
