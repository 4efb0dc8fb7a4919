"""Benchmark quantised QUERY encoders against fp32 MiniLM: latency, agreement, and hadoop retrieval quality.

    HF_HUB_OFFLINE=1 python scripts/bench_encode.py [--index runs/hadoop/index] [--test-since 2016-01-01]
        [--texts 300] [--repeats 3] [--threads 1,2] [--kinds torch-int8,torch-int8-pc,onnx-fp32,onnx-int8]
        [--onnx-dir DIR] [--out docs/bench_encode.json]

(a) Latency: `--texts` real ticket texts (title + "\\n" + body, what a pasted-ticket or `like` search encodes)
    and their titles (search encodes the title too, for the title-dense signal), drawn from the index's
    test period, encoded ONE AT A TIME after a warm-up, per variant and torch/ORT thread count. Each repeat
    visits every variant in turn (so background load hits them alike); the report is the median over repeats
    of each repeat's p50 / p99. Batch throughput: the same ticket texts through `encode` in batches of 64.
(b) Agreement: cosine between each variant's single-query vectors and fp32's, on those texts.
(c) Quality: the index's own chronological protocol (`retrieval.eval_index` / `retrieval.evaluation`) on the
    test period, no window: documents keep their cached fp32 embeddings, and only each query ticket's vectors
    (full text and title) are re-encoded, one at a time, by the variant. Reported for dense, title-dense and the
    index's tuned hybrid fusion, with paired bootstrap differences to fp32 (the cached vectors).

The index is opened read-only and nothing in it is written. ONNX models go to `--onnx-dir` (default: a
temporary directory removed at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np

FP32 = "fp32"
FP32_REENCODED = "fp32 (re-encoded)"  # fp32 query vectors encoded one at a time here: the noise floor


def pct(xs: list[float] | np.ndarray, p: float) -> float:
    return float(np.percentile(np.asarray(xs, dtype=np.float64), p))


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def single_latencies(encode: Callable[[list[str]], np.ndarray], texts: list[str]) -> tuple[list[float], np.ndarray]:
    """Milliseconds per single-text encode, and the vectors."""
    times: list[float] = []
    vecs = []
    for t in texts:
        t0 = time.perf_counter()
        v = encode([t])
        times.append((time.perf_counter() - t0) * 1000)
        vecs.append(v[0])
    return times, np.vstack(vecs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", type=Path, default=Path("runs/hadoop/index"))
    ap.add_argument("--test-since", default="2016-01-01", help="start of the test period (the experiment's split)")
    ap.add_argument("--texts", type=int, default=300, help="query texts for latency and agreement")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts for single-query latency")
    ap.add_argument("--kinds", default="torch-int8,torch-int8-pc,onnx-fp32,onnx-int8")
    ap.add_argument("--onnx-dir", type=Path, default=None, help="keep the exported ONNX models here")
    ap.add_argument("--eval-threads", type=int, default=1, help="threads while encoding the evaluation queries")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-eval", action="store_true", help="latency and agreement only")
    ap.add_argument("--out", type=Path, default=Path("docs/bench_encode.json"))
    args = ap.parse_args()

    import torch

    from ticketsearch.atomic import atomic_write_json
    from ticketsearch.index_data.records import parse_datetime, ticket_text
    from ticketsearch.index_data.store import TicketStore
    from ticketsearch.index_dir import IndexDir
    from ticketsearch.retrieval.encoder import Encoder
    from ticketsearch.retrieval.eval_index import fusion_fn, load_eval_inputs, scorers
    from ticketsearch.retrieval.evaluation import build_pools, evaluate, paired_bootstrap
    from ticketsearch.retrieval.manifest import Manifest
    from ticketsearch.retrieval.quantized import QUANT_KINDS, build_query_encoder
    from ticketsearch.settings import get_settings

    kinds = [k for k in args.kinds.split(",") if k]
    for k in kinds:
        if k not in QUANT_KINDS:
            ap.error(f"unknown kind {k!r}; expected some of {', '.join(QUANT_KINDS)}")
    thread_counts = [int(t) for t in args.threads.split(",") if t]
    settings = get_settings()
    test_since = parse_datetime(args.test_since)
    manifest = Manifest.load(args.index)
    started = time.perf_counter()
    load_start = os.getloadavg()

    encoder = Encoder(manifest.model, settings=settings, device="cpu")
    if encoder.key != manifest.model_key:
        raise SystemExit(f"encoder {encoder.key} does not match the index's {manifest.model_key}")

    results: dict[str, Any] = {
        "machine": {
            "cpu": cpu_model(), "cores": os.cpu_count(), "gpu": torch.cuda.is_available(),
            "torch": torch.__version__, "default_torch_threads": torch.get_num_threads(),
        },
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "model": encoder.key,
        "batch_size": settings.encode_batch_size,
    }
    try:
        import onnxruntime as ort

        results["machine"]["onnxruntime"] = ort.__version__
    except ImportError:
        if any(k.startswith("onnx") for k in kinds):
            raise SystemExit("onnxruntime is not installed: drop the onnx kinds with --kinds") from None

    with TicketStore(IndexDir(args.index).store_path, read_only=True) as store, tempfile.TemporaryDirectory() as tmp:
        print(f"loading {args.index} (read-only; cached fp32 embeddings)")
        inp = load_eval_inputs(args.index, store, encoder)
        ev = inp.ev
        schema = store.schema
        full_text = [ticket_text(schema, t, b) for t, b in zip(ev.titles, ev.bodies)]

        # ---- query texts for latency: random tickets of the test period ----
        rng = np.random.default_rng(args.seed)
        test_idx = np.flatnonzero(ev.created >= np.datetime64(test_since, "s"))
        pick = np.sort(rng.choice(test_idx, size=min(args.texts, len(test_idx)), replace=False))
        sets = {
            "ticket": [full_text[i] for i in pick],
            "title": [ev.titles[i] or full_text[i] for i in pick],
        }
        tok_len = {
            name: [len(encoder.tokenize([t])["input_ids"][0]) for t in texts] for name, texts in sets.items()
        }
        results["texts"] = {
            "source": f"{len(pick)} random tickets (seed {args.seed}) created since {args.test_since} in {args.index}",
            "tokens": {n: {"p50": pct(v, 50), "mean": float(np.mean(v)), "max": int(np.max(v)),
                           f"at_{encoder.max_seq_length}": int(sum(x >= encoder.max_seq_length for x in v))}
                       for n, v in tok_len.items()},
        }
        print(f"latency texts: {len(pick)}; tokens p50 ticket {pct(tok_len['ticket'], 50):.0f}, "
              f"title {pct(tok_len['title'], 50):.0f}")

        # ---- the variants: name -> threads -> encode function ----
        onnx_dir = args.onnx_dir or Path(tmp) / "onnx"
        variants: dict[str, dict[int, Callable[[list[str]], np.ndarray]]] = {
            FP32: {t: encoder.encode for t in thread_counts}
        }
        build_s: dict[str, float] = {}
        for kind in kinds:
            t0 = time.perf_counter()
            if kind.startswith("onnx"):
                variants[kind] = {
                    t: build_query_encoder(encoder, kind, onnx_dir, threads=t).encode for t in thread_counts
                }
            else:
                q = build_query_encoder(encoder, kind)
                variants[kind] = {t: q.encode for t in thread_counts}
            build_s[kind] = round(time.perf_counter() - t0, 2)
            print(f"built {kind} in {build_s[kind]:.1f}s")
        results["build_seconds"] = build_s
        if any(k.startswith("onnx") for k in kinds):
            results["onnx_files_mb"] = {p.name: round(p.stat().st_size / 2**20, 1) for p in onnx_dir.glob("*.onnx")}

        def use_threads(t: int) -> None:
            torch.set_num_threads(t)

        # warm-up
        for by_t in variants.values():
            for t, enc in by_t.items():
                use_threads(t)
                for text in sets["ticket"][:10] + sets["title"][:10]:
                    enc([text])
                enc(sets["ticket"][:64])

        # ---- (a) latency and throughput, (b) vectors for agreement ----
        lat: dict[tuple[str, int, str], list[tuple[float, float]]] = {}
        thr: dict[tuple[str, int], list[float]] = {}
        vecs: dict[tuple[str, str], np.ndarray] = {}
        for rep in range(args.repeats):
            for name, by_t in variants.items():
                for t, enc in by_t.items():
                    use_threads(t)
                    for set_name, texts in sets.items():
                        times, v = single_latencies(enc, texts)
                        lat.setdefault((name, t, set_name), []).append((pct(times, 50), pct(times, 99)))
                        if rep == 0 and t == thread_counts[0]:
                            vecs[(name, set_name)] = v
                    t0 = time.perf_counter()
                    enc(sets["ticket"])
                    thr.setdefault((name, t), []).append(len(sets["ticket"]) / (time.perf_counter() - t0))
            print(f"timing repeat {rep + 1}/{args.repeats} done ({time.perf_counter() - started:.0f}s)")
        use_threads(results["machine"]["default_torch_threads"])

        latency: dict[str, Any] = {}
        for (name, t, set_name), reps in lat.items():
            latency.setdefault(name, {}).setdefault(f"threads_{t}", {})[set_name] = {
                "p50_ms": float(np.median([r[0] for r in reps])),
                "p99_ms": float(np.median([r[1] for r in reps])),
                "p50_ms_repeats": [round(r[0], 3) for r in reps],
                "p99_ms_repeats": [round(r[1], 3) for r in reps],
            }
        throughput = {
            name: {f"threads_{t}": {"texts_per_s": float(np.median(v)), "repeats": [round(x, 2) for x in v]}
                   for (n2, t), v in thr.items() if n2 == name}
            for name in variants
        }
        agreement: dict[str, Any] = {}
        for name in variants:
            if name == FP32:
                continue
            agreement[name] = {}
            for set_name in sets:
                cos = (vecs[(name, set_name)] * vecs[(FP32, set_name)]).sum(axis=1)
                agreement[name][set_name] = {"mean": float(cos.mean()), "min": float(cos.min()),
                                             "p1": pct(cos, 1), "p5": pct(cos, 5)}
        results["latency"] = latency
        results["throughput_batch64"] = throughput
        results["cosine_vs_fp32"] = agreement

        # ---- (c) hadoop quality with quantised query vectors ----
        if not args.skip_eval:
            queries = ev.queries(test_since)
            base = scorers(inp)
            bm25_cache: dict[int, np.ndarray] = {}

            def bm25(q: int, pool: np.ndarray) -> np.ndarray:
                if q not in bm25_cache:
                    bm25_cache[q] = base["bm25"](q, pool)
                return bm25_cache[q]

            depth = settings.fusion_depth
            methods = {"dense": lambda p: p.scores["dense"], "title-dense": lambda p: p.scores["title"],
                       "hybrid": fusion_fn(inp.manifest.fusion, depth)}

            def run(qvec: np.ndarray, tvec: np.ndarray) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
                sc = {
                    "dense": lambda q, pool: inp.dense[pool] @ qvec[q],
                    "title": lambda q, pool: inp.title[pool] @ tvec[q],
                    "bm25": bm25,
                    "recency": base["recency"],
                }
                pools = build_pools(ev, queries, sc)
                out, ranks = {}, {}
                for m, fn in methods.items():
                    out[m], ranks[m] = evaluate(pools, fn)
                return out, ranks

            evals: dict[str, dict[str, Any]] = {}
            ranks: dict[str, dict[str, np.ndarray]] = {}
            evals[FP32], ranks[FP32] = run(inp.dense, inp.title)
            t_eval = args.eval_threads
            for name in [FP32] + kinds:  # ONNX sessions have their thread count fixed when built
                if t_eval not in variants[name]:
                    variants[name][t_eval] = (
                        build_query_encoder(encoder, name, onnx_dir, threads=t_eval).encode
                        if name.startswith("onnx") else next(iter(variants[name].values()))
                    )
            use_threads(t_eval)
            qtexts = [full_text[int(q)] for q in queries]
            qtitles = [ev.titles[int(q)] for q in queries]
            enc_by_name = {FP32_REENCODED: variants[FP32]} | {k: variants[k] for k in kinds}
            for name, by_t in enc_by_name.items():
                enc = by_t[t_eval]
                qvec = np.zeros_like(inp.dense)
                tvec = np.zeros_like(inp.title)
                qvec[queries] = np.vstack([enc([t]) for t in qtexts])
                # as the cache does: an empty title is encoded as "" (Encoder gives the [CLS][SEP] vector)
                tvec[queries] = np.vstack([enc([t]) for t in qtitles])
                evals[name], ranks[name] = run(qvec, tvec)
                print(f"evaluated {name} ({time.perf_counter() - started:.0f}s)")
            use_threads(results["machine"]["default_torch_threads"])
            diffs = {
                name: {m: {metric: paired_bootstrap(ranks[FP32][m], ranks[name][m], metric=metric)
                           for metric in ("RR@10", "MRR")} for m in methods}
                for name in evals if name != FP32
            }
            # sanity: the cached fp32 run must reproduce the experiment's own numbers
            sanity: dict[str, Any] = {}
            res_path = args.index.parent / "results.json"
            if res_path.is_file():
                prior = json.loads(res_path.read_text(encoding="utf-8"))["methods"]
                for m, prior_name in (("dense", "dense"), ("title-dense", "title-dense"), ("hybrid", "hybrid")):
                    if prior_name in prior:
                        sanity[m] = {k: [prior[prior_name][k], evals[FP32][m][k]] for k in ("queries", "RR@10", "MRR")}
                        sanity[m]["match"] = all(abs(float(a) - float(b)) < 1e-9 for a, b in sanity[m].values())
            results["hadoop_eval"] = {
                "protocol": f"test period since {args.test_since}, no window; documents: cached fp32 embeddings; "
                            f"queries re-encoded one at a time with {t_eval} threads",
                "fusion": inp.manifest.fusion,
                "metrics": evals,
                "diff_vs_fp32": diffs,
                "sanity_vs_results_json": sanity,
            }

    results["seconds"] = round(time.perf_counter() - started, 1)
    results["loadavg"] = {"start": load_start, "end": os.getloadavg()}
    results["finished"] = datetime.now().isoformat(timespec="seconds")
    atomic_write_json(args.out, results)
    print_report(results, thread_counts)
    print(f"wrote {args.out}")


def print_report(r: dict[str, Any], thread_counts: list[int]) -> None:
    names = list(r["latency"])
    print("\nsingle-query encode latency, ms (median over repeats of p50 / p99)")
    head = ["variant"] + [f"{s} t{t}" for t in thread_counts for s in ("ticket", "title")] + \
        [f"batch64 t{t} /s" for t in thread_counts]
    print(" | ".join(f"{h:>17}" for h in head))
    for n in names:
        cells = [n]
        for t in thread_counts:
            for s in ("ticket", "title"):
                d = r["latency"][n][f"threads_{t}"][s]
                cells.append(f"{d['p50_ms']:.1f} / {d['p99_ms']:.1f}")
        for t in thread_counts:
            cells.append(f"{r['throughput_batch64'][n][f'threads_{t}']['texts_per_s']:.1f}")
        print(" | ".join(f"{c:>17}" for c in cells))
    print("\ncosine to fp32 (single-query vectors): ticket mean/min, title mean/min")
    for n, a in r["cosine_vs_fp32"].items():
        print(f"{n:>17}: {a['ticket']['mean']:.4f} / {a['ticket']['min']:.4f}   "
              f"{a['title']['mean']:.4f} / {a['title']['min']:.4f}")
    ev = r.get("hadoop_eval")
    if ev:
        print("\nhadoop test period, no window")
        ks = ["RR@1", "RR@5", "RR@10", "RR@20", "RR@100", "MRR"]
        print(f"{'variant':>17} {'method':>12} {'q':>4} " + " ".join(f"{k:>7}" for k in ks) + "   dRR@10   dMRR")
        for n, ms in ev["metrics"].items():
            for m, met in ms.items():
                d = ev["diff_vs_fp32"].get(n, {}).get(m)
                dd = f"{d['RR@10']['diff'] * 100:+7.1f} {d['MRR']['diff'] * 100:+6.1f}" if d else ""
                print(f"{n:>17} {m:>12} {met['queries']:>4} " + " ".join(f"{met[k]:7.3f}" for k in ks) + "  " + dd)
        print(f"sanity vs results.json: {json.dumps(ev['sanity_vs_results_json'])}")


if __name__ == "__main__":
    main()
