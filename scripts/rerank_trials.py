"""Try reranker settings on an existing experiment index, without re-ingesting or re-encoding.

Mines the train / validation / test lists once (as `ticketsearch experiment` does, with the index's chosen
fusion), then trains each trial and prints validation and test MRR / RR@10, writing JSON after each trial.

    python scripts/rerank_trials.py --index runs/hadoop/index --out runs/hadoop/trials.json \
        --trial 'base:{"arch":"cross","pair":true}' \
        --trial 'prior:{"arch":"cross","pair":true,"cosine_prior":true}'

A trial is NAME:JSON with keys: arch (cross|concat), pair (bool), any RerankConfig field, and any
TrainConfig field under "train" (for example {"train": {"lr": 3e-4}}).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from experiment_args import experiment_index_parser, mined_index

from ticketsearch.atomic import atomic_write_json
from ticketsearch.index_data.records import parse_datetime
from ticketsearch.pipeline.training import DROPOUT
from ticketsearch.rerank.calibration import lowest_threshold_for_precision
from ticketsearch.rerank.model import RerankConfig
from ticketsearch.rerank.pair_features import pair_dim
from ticketsearch.rerank.train import TrainConfig, TrainData, rerank_scores, reranked_ranks, train
from ticketsearch.results import MAX_VALIDATION_FOLDS
from ticketsearch.retrieval.encoder import Encoder
from ticketsearch.retrieval.evaluation import metrics_from_ranks


def int8_query_data(store, inp, encoder, mined, data: TrainData, with_pair: bool) -> TrainData:  # noqa: ANN001
    """`data` with every test query seen through the int8 ONNX query encoder: its token states (the source
    side of the reranker) and the dense / title cosines among its pair inputs. Candidates keep their fp32
    vectors and token states, as in the service; the candidate lists stay the fp32 first stage's."""
    from ticketsearch.index_data.records import ticket_text
    from ticketsearch.rerank.token_cache import Tokens
    from ticketsearch.retrieval.quantized import query_encoder_for

    settings = encoder.settings.model_copy(update={"query_encoder": "onnx-int8"})
    # the int8 encoder gives token states too (`encode_with_tokens`), beyond the QueryEncoder protocol
    qenc: Any = query_encoder_for(Encoder(manifest_model(encoder), settings=settings))
    ev = inp.ev
    tokens: dict[int, Tokens] = {}
    first = dict(mined.first_stage)
    for r in mined.test:
        q = r.query
        tb = qenc.encode_with_tokens([ticket_text(store.schema, ev.titles[q], ev.bodies[q])])
        n = int(tb.attention_mask[0].sum())
        tokens[q] = Tokens(tb.tokens[0, :n].numpy().astype(np.float16), tb.input_ids[0, :n].numpy())
        qv = tb.pooled[0].numpy()
        tv = qenc.encode([ev.titles[q]])[0] if ev.titles[q] else qv
        for c in r.candidates:
            if (q, c) in first:
                first[(q, c)] = {**first[(q, c)], "dense": float(inp.dense[c] @ qv), "title": float(inp.title[c] @ tv)}
    saved = mined.first_stage
    pair = None
    if with_pair and data.pair is not None:
        def pair(q: int, c: int, _orig=data.pair):  # noqa: ANN001, ANN202
            mined.first_stage = first
            try:
                return _orig(q, c)
            finally:
                mined.first_stage = saved
    return TrainData(tokens=lambda i: tokens[i] if i in tokens else data.tokens(i), feats=data.feats, pair=pair,
                     groups=data.groups, valid=data.valid)


def manifest_model(encoder: Encoder) -> str:
    return "minilm" if encoder.name == "all-MiniLM-L6-v2" else str(encoder.model_dir)


def main() -> None:
    ap = experiment_index_parser(__doc__)
    ap.add_argument("--budget", type=float, default=300.0, help="seconds of training per trial")
    ap.add_argument("--trial", action="append", default=[])
    ap.add_argument("--experiment", nargs="*", default=None, metavar="VARIANT",
                    help="run `ticketsearch experiment`'s reranker step itself (these variants; none = its defaults): "
                    "train, compare with paired bootstrap, install the best in the index")
    ap.add_argument("--validation-folds", type=int, default=0, choices=range(MAX_VALIDATION_FOLDS + 1),
                    help="with --experiment: earlier periods pooled with validation for the decision (pipeline.folds)")
    ap.add_argument("--no-install", action="store_true",
                    help="with --experiment: measure only; the index keeps the reranker it has")
    ap.add_argument("--general", type=Path, default=None,
                    help="with --experiment: the general model to compare with (default: the shipped one)")
    ap.add_argument("--int8-queries", action="store_true",
                    help="also score the test queries with the int8 ONNX query encoder's token states and vectors")
    args = ap.parse_args()
    trials = []
    for t in args.trial:
        name, _, spec = t.partition(":")
        trials.append((name, json.loads(spec)))

    out: dict = {"index": str(args.index), "trials": {}}
    t0 = time.perf_counter()
    from ticketsearch.pipeline.variants import needs_tokens

    # token states only when a trial (a fusion model) or a variant of the experiment reads them
    tokens = bool(trials) or not args.experiment or needs_tokens(args.experiment)
    with mined_index(args, progress=True, tokens=tokens) as mi:
        manifest, settings, store, encoder, inp = mi.manifest, mi.settings, mi.store, mi.encoder, mi.inp
        mined, base, fs = mi.mined, mi.base, mi.fs
        print(f"mined {len(mined.groups)} train / {len(mined.valid)} valid / {len(mined.test)} test queries "
              f"in {time.perf_counter() - t0:.0f} s", flush=True)
        first = reranked_ranks(mined.test, [-np.arange(len(r.candidates), dtype=float) for r in mined.test])
        out["hybrid"] = metrics_from_ranks(first)
        if args.experiment is not None:
            from ticketsearch.pipeline.training import run_rerankers

            t_rr = time.perf_counter()
            rr = run_rerankers(store, inp, encoder, args.index, manifest.fusion, settings.fusion_depth,
                               parse_datetime(args.train_before), parse_datetime(args.test_since),
                               args.index.parent / "rerankers", variants=args.experiment or None,
                               tcfg=TrainConfig(time_budget_s=args.budget), progress=False,
                               validation_folds=args.validation_folds, general_dir=args.general,
                               install=not args.no_install)
            out["experiment"] = rr
            out["experiment_seconds"] = round(time.perf_counter() - t_rr, 1)  # folds: `rr["folds"][i]["seconds"]`
            atomic_write_json(args.out, out)
            for name, m in rr["test"].items():
                v = rr["valid"][name]
                print(f"   {name}: test RR@10 {m['RR@10']:.3f} MRR {m['MRR']:.3f} | valid RR@10 {v['RR@10']:.3f} "
                      f"MRR {v['MRR']:.3f}", flush=True)
            for name, c in rr["comparisons"].items():
                print(f"   {name}: {json.dumps(c)}", flush=True)
            for key in ("decision_without_folds", "decision"):
                if key in rr:
                    print(f"   {key}: {rr[key]['reason']}", flush=True)
        for name, spec in trials:
            spec = dict(spec)
            with_pair = bool(spec.pop("pair", False))
            tspec = spec.pop("train", {})
            drop = spec.pop("drop_pair_inputs", [])  # ablation: zero these pair-input columns
            tcfg = TrainConfig(**{"time_budget_s": args.budget, **tspec})
            cfg = RerankConfig(feat_dim=fs.dim, text_dim=encoder.dim, pair_dim=pair_dim(fs.schema) if with_pair else 0,
                               dropout=DROPOUT, **spec)
            pair_fn = base.pair if with_pair else None
            if pair_fn is not None and drop:
                def pair_fn(
                    q: int, c: int, _f=base.pair, _drop=np.asarray(drop, dtype=np.intp)
                ) -> np.ndarray:
                    v = _f(q, c).copy()
                    v[_drop] = 0.0
                    return v
            data = TrainData(tokens=base.tokens, feats=base.feats, pair=pair_fn, groups=base.groups, valid=base.valid)
            print(f"== {name}: {cfg.to_dict()} {tcfg.__dict__}", flush=True)
            res = train(data, cfg, tcfg, progress=False)
            perm = np.random.default_rng(tcfg.seed).permutation(len(data.feats)) if tcfg.shuffle_features else None
            vscores = rerank_scores(res.model, data, mined.valid, perm)
            valid = metrics_from_ranks(reranked_ranks(mined.valid, vscores))
            logits = np.concatenate(vscores)
            labels = np.concatenate([r.hits for r in mined.valid]).astype(np.float64)
            # can a duplicate threshold reach these precisions on validation? (ranking only: Platt is monotone)
            valid["threshold_reaches"] = {f"{t:.2f}": lowest_threshold_for_precision(logits, labels, t)[0] is not None
                                          for t in (0.8, 0.85, 0.9, 0.95)}
            test = metrics_from_ranks(reranked_ranks(mined.test, rerank_scores(res.model, data, mined.test, perm)))
            out["trials"][name] = {"spec": spec, "train": tspec, "pair": with_pair, "best_epoch": res.best_epoch,
                                   "history": res.history, "seconds": round(res.seconds, 1), "valid": valid,
                                   "test": test}
            if args.int8_queries:
                int8 = int8_query_data(store, inp, encoder, mined, data, with_pair)
                t8 = metrics_from_ranks(reranked_ranks(mined.test, rerank_scores(res.model, int8, mined.test, perm)))
                out["trials"][name]["test_int8_queries"] = t8
                print(f"   {name} with int8 query encoding: test MRR {t8['MRR']:.3f} RR@10 {t8['RR@10']:.3f}",
                      flush=True)
            print(f"   {name}: best epoch {res.best_epoch}, valid MRR {valid['MRR']:.3f} RR@10 {valid['RR@10']:.3f} "
                  f"thresholds {valid['threshold_reaches']} | "
                  f"test MRR {test['MRR']:.3f} RR@10 {test['RR@10']:.3f} (hybrid {out['hybrid']['MRR']:.3f} / "
                  f"{out['hybrid']['RR@10']:.3f})", flush=True)
            atomic_write_json(args.out, out)


if __name__ == "__main__":
    main()
