"""The tuned encoder against the frozen one it was tuned from, on the test period of one index, in one run.

For an index where `ticketsearch tune-encoder` installed a tuned encoder (both encoders' embeddings are cached
in its store, so nothing is re-encoded): the frozen first stage's rows (`dense`, `hybrid`, ... with the fusion
chosen for the frozen encoder), the tuned rows (`dense-tuned`, `hybrid-tuned`, with the re-tuned fusion) per
query kind, their paired differences, and the reranker that `tune-encoder` retrained on the tuned first stage
(from DIR/tune_decision.json). Uses the experiment's own functions (`add_tuned_rows`).

    python scripts/tuned_encoder.py --index runs/hadoop/index --out docs/tuned_encoder_hadoop.json \\
        --query full,title
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from experiment_args import experiment_index_parser

from ticketsearch.atomic import atomic_write_json
from ticketsearch.index_data.records import parse_datetime
from ticketsearch.index_dir import IndexDir
from ticketsearch.pipeline.experiment import ExperimentConfig, add_tuned_rows, evaluate_methods
from ticketsearch.pipeline.parts import index_settings, load_manifest, open_encoder, open_store
from ticketsearch.retrieval.encoder import Encoder
from ticketsearch.retrieval.eval_index import first_stage_methods, kind_pools, load_eval_inputs
from ticketsearch.retrieval.evaluation import markdown_table
from ticketsearch.retrieval.query_kinds import parse_kinds
from ticketsearch.settings import get_settings


def main() -> None:
    ap = experiment_index_parser(__doc__)
    ap.add_argument("--query", action="append", default=None, help="evaluated kinds (full,title,words:N)")
    args = ap.parse_args()
    d = IndexDir(args.index)
    manifest = load_manifest(d)
    if not manifest.tuned:
        raise SystemExit(f"{args.index}: no tuned encoder installed (run ticketsearch tune-encoder)")
    decision = json.loads(d.tune_decision_path.read_text())
    frozen_fusion = decision["tune"]["validation"]["current"]["fusion"]
    settings = index_settings(manifest, get_settings())
    depth = settings.fusion_depth
    kinds = parse_kinds(args.query)
    cfg = ExperimentConfig(data=Path(""), out=args.out.parent, schema=manifest.schema,
                           train_before=parse_datetime(args.train_before), test_since=parse_datetime(args.test_since),
                           progress=False, queries=kinds)
    results: dict[str, Any] = {"index": str(args.index), "fusion": {"config": frozen_fusion},
                               "tuned_fusion": manifest.fusion, "tuning": decision["tune"],
                               "rerank_on_tuned": decision.get("rerank"), "queries": {"kinds": {}}}
    with open_store(d, read_only=True) as store:
        frozen = Encoder(str(manifest.extra["tuned_from"]), settings=settings)
        tuned = open_encoder(d, settings, manifest)
        finp = load_eval_inputs(args.index, store, frozen)
        tinp = load_eval_inputs(args.index, store, tuned)
        ev = finp.ev
        val_q, test_q = ev.queries(cfg.train_before, cfg.test_since), ev.queries(cfg.test_since)
        methods = first_stage_methods(frozen_fusion, depth)

        def rows(kind: Any, queries: Any, **a: Any) -> dict[str, Any]:
            return evaluate_methods(kind_pools(finp, store, frozen, kind, queries, False, **a)[0], methods)

        main, *others = kinds
        results["methods"] = rows(main, test_q)
        results["window"] = {"methods": rows(main, test_q, window_days=cfg.window_days)}
        results["no_easy"] = {"methods": rows(main, test_q, exclude_easy=True)}
        results["validation"] = {"methods": rows(main, val_q)}
        for k in others:
            results["queries"]["kinds"][k.label] = {"methods": rows(k, test_q),
                                                    "validation": {"methods": rows(k, val_q)}}
        results["test_comparisons"] = add_tuned_rows(cfg, results, store, (finp, frozen, frozen_fusion),
                                                     (tinp, tuned, manifest.fusion), depth)
    print(markdown_table(results["methods"], f"test, {main.label} queries"))
    for label, r in results["queries"]["kinds"].items():
        print(markdown_table(r["methods"], f"test, {label} queries"))
    for name, c in results["test_comparisons"].items():
        print(name, {m: f"{v['diff']:+.3f} [{v['lo']:+.3f}, {v['hi']:+.3f}]" for m, v in c.items()})
    atomic_write_json(args.out, results)


if __name__ == "__main__":
    main()
