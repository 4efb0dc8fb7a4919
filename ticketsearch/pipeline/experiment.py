"""`ticketsearch experiment` and `ticketsearch evaluate`: the whole pipeline on a labelled file.

Splits by `created`: train before `train_before`, validation from `train_before` up to `test_since`,
test from `test_since`. Fusion settings are chosen on the validation period only and written to the index.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ticketsearch.atomic import atomic_write_json, atomic_write_text
from ticketsearch.index_dir import IndexDir
from ticketsearch.pipeline.folds import check_folds
from ticketsearch.pipeline.ingest import ingest_and_build
from ticketsearch.pipeline.rerank_vectors import refresh_rerank_vectors
from ticketsearch.pipeline.training import run_rerankers
from ticketsearch.pipeline.tune_encoder import TuneConfig, tune_encoder
from ticketsearch.rerank.train import TrainConfig
from ticketsearch.results import DEFAULT_VALIDATION_FOLDS
from ticketsearch.retrieval.eval_index import ScoreFn, first_stage_methods, fusion_fn, kind_pools, load_eval_inputs
from ticketsearch.retrieval.evaluation import QueryPool, evaluate, markdown_table, paired_bootstrap
from ticketsearch.retrieval.fusion_tuning import MIN_TUNE_QUERIES, choose_fusion
from ticketsearch.retrieval.manifest import Manifest
from ticketsearch.retrieval.query_kinds import FULL, QueryKind
from ticketsearch.settings import Settings


@dataclass
class ExperimentConfig:
    data: Path
    out: Path
    schema: str
    train_before: datetime
    test_since: datetime
    window_days: int = 365
    model: str | None = None
    progress: bool = True
    rerank: bool = True
    rerank_budget_s: float = 15 * 60
    # how test (and validation) queries are cut from each duplicate: the first is the main table, and fusion
    # is tuned on it; each other kind gets its own table
    queries: list[QueryKind] = field(default_factory=lambda: [FULL])
    train_queries: list[QueryKind] = field(default_factory=lambda: [FULL])  # what the reranker trains on
    tune_encoder: bool = True  # tune the bi-encoder on the train links (`pipeline.tune_encoder`): *-tuned rows
    tune_budget_s: float = 20 * 60
    # earlier periods pooled with validation in the install decision (`pipeline.folds`)
    validation_folds: int = DEFAULT_VALIDATION_FOLDS


def evaluate_methods(pools: list[QueryPool], methods: Mapping[str, ScoreFn]) -> dict[str, dict[str, Any]]:
    return {name: evaluate(pools, fn)[0] for name, fn in methods.items()}


def run_experiment(
    cfg: ExperimentConfig,
    settings: Settings,
    log: Callable[[str], None] = print,
    extra_methods: Callable[..., dict[str, ScoreFn]] | None = None,
) -> dict[str, Any]:
    t_start = time.perf_counter()
    check_folds(cfg.validation_folds)  # before the ingest, not after an hour of it
    index_dir = cfg.out / "index"
    log(f"[1/6] ingest and index {cfg.data} -> {index_dir}")
    store, encoder, _ = ingest_and_build(
        cfg.data, index_dir, cfg.schema, model=cfg.model, settings=settings, progress=cfg.progress, log=log
    )
    try:
        log("[2/6] score candidate pools (every ticket created before each query)")
        inp = load_eval_inputs(index_dir, store, encoder)
        ev = inp.ev
        val_q = ev.queries(cfg.train_before, cfg.test_since)
        test_q = ev.queries(cfg.test_since)
        main, *others = cfg.queries

        def pools(kind: QueryKind, queries: Any, **args: Any) -> list[QueryPool]:
            return kind_pools(inp, store, encoder, kind, queries, cfg.progress, **args)[0]

        def reranked_sets() -> tuple[list[QueryPool], list[QueryPool]]:
            """The test period with a candidate window and without easy duplicates, reranked as extra sets: with
            the text columns' scores (`mining.build_train_data(text=True)`)."""
            return (pools(main, test_q, window_days=cfg.window_days, text=True),
                    pools(main, test_q, exclude_easy=True, text=True))

        val, test = pools(main, val_q), pools(main, test_q)
        test_win, test_hard = reranked_sets()
        other = {k.label: (pools(k, val_q), pools(k, test_q)) for k in others}
        log(f"      {main.label} queries: validation {len(val)}, test {len(test)} ({len(test_win)} with a "
            f"{cfg.window_days}-day window, {len(test_hard)} without easy duplicates)"
            + "".join(f"; {k}: validation {len(v)}, test {len(t)}" for k, (v, t) in other.items()))

        log("[3/6] tune fusion on the validation period")
        depth = settings.fusion_depth
        chosen_name, chosen, best_rrf, best_score, trials = choose_fusion(val, depth)
        if chosen_name is None:
            log(f"      only {len(val)} validation queries (< {MIN_TUNE_QUERIES}): keeping the default fusion")
        fusions = {"hybrid-rrf": best_rrf, "hybrid-score": best_score}
        manifest = Manifest.load(index_dir)
        manifest.fusion = chosen
        manifest.save(index_dir)
        log(f"      chosen: {chosen_name or 'default'} {json.dumps(chosen)}")

        log("[4/6] evaluate on the test period")
        methods: dict[str, ScoreFn] = first_stage_methods(chosen, depth)
        for name, f in fusions.items():
            if f:
                methods[name] = fusion_fn(f, depth)
        if extra_methods is not None:
            methods.update(extra_methods(inp=inp, store=store, encoder=encoder, index_dir=index_dir, cfg=cfg))
        results: dict[str, Any] = {
            "data": str(cfg.data),
            "schema": cfg.schema,
            "splits": {"train_before": cfg.train_before.isoformat(), "test_since": cfg.test_since.isoformat()},
            "model": encoder.name,
            "max_seq_length": encoder.max_seq_length,
            "tickets": len(ev),
            "fusion": {"chosen": chosen_name, "config": chosen, "depth": depth, "trials": trials},
            "methods": evaluate_methods(test, methods),
            "window": {"days": cfg.window_days, "methods": evaluate_methods(test_win, methods)},
            "no_easy": {"methods": evaluate_methods(test_hard, methods)},
            "validation": {"methods": evaluate_methods(val, methods)},
            "queries": {"main": main.label, "train": [k.label for k in cfg.train_queries], "kinds": {
                k: {"methods": evaluate_methods(t, methods), "validation": {"methods": evaluate_methods(v, methods)}}
                for k, (v, t) in other.items()}},
            "notes": [
                "BM25 IDF and document statistics are built over the whole file (all periods).",
                "Ranks count ties against the system; hybrid fuses each method's top `depth` candidates.",
            ],
            "seconds": round(time.perf_counter() - t_start, 1),
        }
        if cfg.tune_encoder:
            log("[5/6] tune the encoder on the train period's links (installed only if validation improves)")
            tuned = tune_and_evaluate(cfg, results, index_dir, store, inp, encoder, settings, log)
            if tuned is not None:  # the index now searches with the tuned encoder: the rerankers train on it
                encoder, inp, chosen = tuned
                test = pools(main, test_q)
                test_win, test_hard = reranked_sets()
        else:
            log("[5/6] the encoder stays as it is (--no-tune-encoder)")
        results["reranks"] = "hybrid-tuned" if cfg.tune_encoder and results["tune_encoder"]["installed"] else "hybrid"
        if cfg.rerank:

            log("[6/6] train rerankers on the train period, early-stop on validation, score the test period")
            rr = run_rerankers(store, inp, encoder, index_dir, chosen, depth, cfg.train_before, cfg.test_since,
                               IndexDir(index_dir).rerankers_path, progress=cfg.progress, log=log,
                               tcfg=TrainConfig(time_budget_s=cfg.rerank_budget_s),
                               extra={"window": test_win, "no_easy": test_hard},
                               train_kinds=cfg.train_queries, eval_kinds=cfg.queries,
                               validation_folds=cfg.validation_folds)
            if "installed" in rr:  # the index the experiment leaves reranks: the installed model's vectors

                n = refresh_rerank_vectors(IndexDir(index_dir), store, encoder, progress=cfg.progress)
                log(f"      computed the installed reranker's vectors for {n} tickets: searching {index_dir} reranks"
                    if n else f"      searching {index_dir} reranks with {rr['installed']} (no vectors to compute)")
            results["methods"].update(rr["test"])
            results["validation"]["methods"].update(rr["valid"])
            results["window"]["methods"].update(rr["extra"]["window"])
            results["no_easy"]["methods"].update(rr["extra"]["no_easy"])
            for label, kind_rows in results["queries"]["kinds"].items():
                kind_rows["methods"].update(rr["kinds"][label]["test"])
                kind_rows["validation"]["methods"].update(rr["kinds"][label]["valid"])
            results["rerank"] = {k: rr[k] for k in ("variants", "comparisons", "installed", "decision", "folds",
                                                    "decision_without_folds") if k in rr}
    finally:
        store.close()
    write_results(cfg.out, results)
    log(markdown_table(results["methods"], f"test period, no window ({cfg.data.name})"))
    log(f"wrote {cfg.out / 'results.json'} and {cfg.out / 'results.md'}")
    return results


def tune_and_evaluate(
    cfg: ExperimentConfig, results: dict[str, Any], index_dir: Path, store: Any, inp: Any, encoder: Any,
    settings: Settings, log: Callable[[str], None],
) -> tuple[Any, Any, dict[str, Any]] | None:
    """Tune the encoder (`pipeline.tune_encoder`), add its rows (`add_tuned_rows`), and return the tuned
    (encoder, inputs, fusion) when it was installed."""

    res = tune_encoder(index_dir, store, inp, encoder, cfg.train_before, cfg.test_since, settings,
                       TuneConfig(budget_s=cfg.tune_budget_s), cfg.progress, log, measure=True)
    results["tune_encoder"] = res.to_dict()
    log(f"      {'installed' if res.installed else 'not installed'}: {res.reason}")
    if res.inputs is None or res.encoder is None or res.fusion is None:
        return None
    results["tune_encoder"]["test_comparisons"] = add_tuned_rows(
        cfg, results, store, (inp, encoder, results["fusion"]["config"]), (res.inputs, res.encoder, res.fusion),
        settings.fusion_depth)
    return (res.encoder, res.inputs, res.fusion) if res.installed else None


def add_tuned_rows(
    cfg: ExperimentConfig, results: dict[str, Any], store: Any, frozen: tuple[Any, Any, dict[str, Any]],
    tuned: tuple[Any, Any, dict[str, Any]], depth: int,
) -> dict[str, Any]:
    """Add `dense-tuned` and `hybrid-tuned` (the tuned encoder's (inputs, encoder, fusion)) to every table of
    `results`, over the same queries as its other rows; return their paired differences on the main kind's test
    queries against `dense` and `hybrid` (the frozen encoder's)."""

    finp, fenc, ffusion = frozen
    tinp, tenc, tfusion = tuned
    ev = finp.ev
    val_q, test_q = ev.queries(cfg.train_before, cfg.test_since), ev.queries(cfg.test_since)
    main, *others = cfg.queries
    pairs = {"dense-tuned": ("dense", lambda p: p.scores["dense"]),
             "hybrid-tuned": ("hybrid", fusion_fn(tfusion, depth))}
    base = {"dense": lambda p: p.scores["dense"], "hybrid": fusion_fn(ffusion, depth)}

    def rows(kind: QueryKind, queries: Any, **args: Any) -> dict[str, Any]:
        tuned_pools, _ = kind_pools(tinp, store, tenc, kind, queries, cfg.progress, **args)
        return evaluate_methods(tuned_pools, {n: fn for n, (_, fn) in pairs.items()})

    results["methods"].update(rows(main, test_q))
    results["window"]["methods"].update(rows(main, test_q, window_days=cfg.window_days))
    results["no_easy"]["methods"].update(rows(main, test_q, exclude_easy=True))
    results["validation"]["methods"].update(rows(main, val_q))
    for kind in others:
        kind_rows = results["queries"]["kinds"][kind.label]
        kind_rows["methods"].update(rows(kind, test_q))
        kind_rows["validation"]["methods"].update(rows(kind, val_q))
    before, _ = kind_pools(finp, store, fenc, main, test_q, cfg.progress)
    after, _ = kind_pools(tinp, store, tenc, main, test_q, cfg.progress)
    return {f"{name} vs {b}": {m: paired_bootstrap(evaluate(before, base[b])[1], evaluate(after, fn)[1], m)
                               for m in ("RR@10", "RR@100", "MRR")}
            for name, (b, fn) in pairs.items()}


def results_markdown(results: Mapping[str, Any]) -> str:
    name = Path(results["data"]).name
    parts = [
        f"# Results: {name}\n",
        f"Model {results['model']} (max_seq {results['max_seq_length']}), {results['tickets']} tickets, "
        f"splits {json.dumps(results['splits'])}. Fusion chosen on validation: "
        f"`{results['fusion']['chosen']}` {json.dumps(results['fusion']['config'])}.\n",
        markdown_table(results["methods"], "Test period, no window"),
        markdown_table(results["window"]["methods"], f"Test period, {results['window']['days']}-day window"),
        markdown_table(results["no_easy"]["methods"], "Test period, no window, easy duplicates excluded"),
        markdown_table(results["validation"]["methods"], "Validation period, no window"),
    ]
    queries = results.get("queries", {})
    for label, rows in queries.get("kinds", {}).items():
        parts.append(markdown_table(rows["methods"], f"Test period, no window, {label} queries"))
    if queries:
        parts.insert(2, f"Queries: main table `{queries['main']}`; the reranker trained on "
                        f"`{', '.join(queries['train'])}` queries.\n")
    tune = results.get("tune_encoder")
    if tune:
        parts.append(f"Encoder tuned on the train links: {'installed' if tune['installed'] else 'not installed'} "
                     f"({tune['reason']}); the reranked rows rerank `{results.get('reranks', 'hybrid')}`.\n")
    decision = results.get("rerank", {}).get("decision")
    if decision:
        parts.append(f"Reranker: {decision['reason']}.\n")
    return "\n".join(parts)


def write_results(out: Path, results: Mapping[str, Any]) -> None:
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "results.md", results_markdown(results))


