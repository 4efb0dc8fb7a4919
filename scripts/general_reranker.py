"""The general reranker: trained on some indexes' duplicate links, applied to another index's test period
without training on it (transfer), against that index's first stage and its own trained reranker.

Uses indexes `ticketsearch experiment` built (their fusion chosen), mining each as the experiment does.

    python scripts/general_reranker.py --train runs/hadoop/index --apply runs/hive/index \
        --out docs/general_hadoop_to_hive.json
    python scripts/general_reranker.py --train runs/hadoop/index --train runs/hive/index \
        --save rerank/general_model --out docs/general_shipped.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from ticketsearch.atomic import atomic_write_json
from ticketsearch.index_data.records import parse_datetime
from ticketsearch.index_dir import IndexDir
from ticketsearch.pipeline.general import GeneralInputs, fit_general, general_inputs, list_scores
from ticketsearch.pipeline.parts import index_settings, load_manifest, open_store
from ticketsearch.pipeline.training import first_stage_ranks, mine
from ticketsearch.rerank.general import save_general
from ticketsearch.rerank.train import reranked_ranks
from ticketsearch.retrieval.encoder import Encoder
from ticketsearch.retrieval.eval_index import load_eval_inputs
from ticketsearch.retrieval.evaluation import metrics_from_ranks, paired_bootstrap
from ticketsearch.settings import get_settings


def mined_inputs(index: Path, train_before: str, test_since: str, first_queries: int | None = None,
                 text: bool = False) -> GeneralInputs:
    d = IndexDir(index)
    manifest = load_manifest(d)
    settings = index_settings(manifest, get_settings())
    with open_store(d, read_only=True) as store:
        encoder = Encoder(manifest.model, settings=settings)
        inp = load_eval_inputs(index, store, encoder)
        mined = mine(store, inp, manifest.fusion, settings.fusion_depth, parse_datetime(train_before),
                     parse_datetime(test_since))
        if first_queries is not None:  # a young project: only its first N train duplicates
            mined.groups = sorted(mined.groups, key=lambda g: inp.ev.created[g.query])[:first_queries]
        return general_inputs(store, inp, encoder, index, mined, text=text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=Path, action="append", required=True, help="an index to train on")
    ap.add_argument("--apply", type=Path, action="append", default=[], help="an index to score (test period)")
    ap.add_argument("--train-before", default="2015-01-01")
    ap.add_argument("--test-since", default="2016-01-01")
    ap.add_argument("--save", type=Path, help="write the trained model here (config.json + model.safetensors)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--text", action="store_true", help="with the text columns (`pairs.TextScores`)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    sources = [mined_inputs(i, args.train_before, args.test_since, text=args.text) for i in args.train]
    names = [i.parent.name for i in args.train]
    model, meta = fit_general(sources, names, text=args.text)
    out: dict[str, Any] = {"train": names, "weights": model.weights.tolist(), "bias": model.bias,
                           "meta": meta, "applied": {}}
    print(f"trained on {names}: {meta['train_queries']} queries, {meta['train_pairs']} pairs; weights "
          f"{np.round(model.weights, 3).tolist()} bias {model.bias:.3f}", flush=True)
    for index in [*args.train, *args.apply]:
        g = sources[args.train.index(index)] if index in args.train else mined_inputs(
            index, args.train_before, args.test_since, text=args.text)
        row: dict[str, Any] = {}
        for part, lists in (("valid", g.mined.valid), ("test", g.mined.test)):
            first = first_stage_ranks(lists)
            general = reranked_ranks(lists, list_scores(model, g, lists))
            row[part] = {"first_stage": metrics_from_ranks(first), "general": metrics_from_ranks(general),
                         "general vs first stage": {m: paired_bootstrap(first, general, m) for m in ("MRR", "RR@10")}}
        out["applied"][index.parent.name] = row
        t = row["test"]
        print(f"{index.parent.name} test ({t['general']['queries']} queries): first stage RR@10 "
              f"{t['first_stage']['RR@10']:.3f} MRR {t['first_stage']['MRR']:.3f} | general RR@10 "
              f"{t['general']['RR@10']:.3f} MRR {t['general']['MRR']:.3f}", flush=True)
    if args.save:
        save_general(args.save, model, meta)
        print(f"saved {args.save}")
    out["seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(args.out, out)


if __name__ == "__main__":
    main()
