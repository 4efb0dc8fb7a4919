"""Training the reranker's variants on data mined from an index's links (`mining`), scoring them, and the
install decision (a model is installed only where it beats the first stage on validation)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from ticketsearch.atomic import atomic_write_dir
from ticketsearch.errors import QueryError, RequestError
from ticketsearch.index_data import feedback
from ticketsearch.index_data.store import TicketStore
from ticketsearch.index_dir import IndexDir
from ticketsearch.pipeline.folds import (
    check_folds,
    choose_variant,
    encoder_learned_before,
    fold_periods,
    held_out_periods,
    run_fold,
    simpler_choice,
)
from ticketsearch.pipeline.install import decide_install
from ticketsearch.pipeline.mining import (  # noqa: F401 - mined training data, also imported from here
    DROPOUT,
    MID_NEGATIVES,
    RANDOM_NEGATIVES,
    TARGET_PRECISION,
    THRESHOLD_PRECISIONS,
    TOP_NEGATIVES,
    Mined,
    ShortQuery,
    build_train_data,
    calibration_meta,
    excluded_negatives,
    keep_first_groups,
    mine,
    rank_lists,
    ticket_values,
)
from ticketsearch.pipeline.pairs import RERANK_DEPTH
from ticketsearch.pipeline.parts import load_manifest, open_encoder, open_store
from ticketsearch.pipeline.rerank_vectors import refresh_rerank_vectors
from ticketsearch.pipeline.variants import (  # noqa: F401 - the variants, also imported from here
    DEFAULT_VARIANTS,
    VARIANTS,
    VariantResult,
    built_columns,
    default_variants,
    first_stage_ranks,
    general_ranker,
    list_pairs,
    ltr_train_lists,
    needs_tokens,
    train_named,
    train_variant,
    train_variants,
    variant_data,
    variant_scores,
)
from ticketsearch.requests import naive_utc
from ticketsearch.rerank.train import TrainConfig, TrainData, reranked_ranks
from ticketsearch.results import DEFAULT_VALIDATION_FOLDS, InstallRule, period_problem
from ticketsearch.retrieval.encoder import Encoder
from ticketsearch.retrieval.eval_index import EvalInputs, fusion_fn, load_eval_inputs
from ticketsearch.retrieval.evaluation import QueryPool, metrics_from_ranks, paired_bootstrap
from ticketsearch.retrieval.query_kinds import FULL, QueryKind


def run_rerankers(
    store: TicketStore, inp: EvalInputs, encoder: Encoder, index_dir: Path, fusion: dict[str, Any], depth: int,
    train_before: datetime, valid_before: datetime, out_dir: Path, variants: list[str] | None = None,
    tcfg: TrainConfig | None = None, progress: bool = True, log: Callable[[str], None] = print,
    extra: dict[str, list[QueryPool]] | None = None, train_kinds: Sequence[QueryKind] = (FULL,),
    eval_kinds: Sequence[QueryKind] = (FULL,), install: bool = True,
    first_train_queries: int | None = None, general_dir: Path | None = None,
    rejected: dict[int, set[int]] | None = None, install_rule: InstallRule = "auto", validation_folds: int = 0,
) -> dict[str, Any]:
    """Mine, train every variant, score validation and test lists; install the best variant in the index
    (`install_rule`: `decide_install`'s). `validation_folds`: earlier periods (`pipeline.folds`) whose
    queries join the validation period's in choosing the variant and in the install decision (none here by
    default: the doors, `train_index` and the experiment, default to DEFAULT_VALIDATION_FOLDS).

    `extra` names more sets of test pools (a candidate window, no easy duplicates): each gets its own top-100
    lists and pair inputs (a query's list differs from set to set), scored by every variant, in
    `results["extra"][name]`. The reranker trains on the queries of `train_kinds` (whole tickets, short
    queries cut from them, or both) and is scored on each of `eval_kinds` in `results["kinds"][label]`
    (`results["test"]` and `["valid"]` are the first evaluated kind's)."""


    periods = fold_periods(train_before, valid_before, validation_folds)  # checked before anything is trained
    if periods:  # only the folds nothing the index searches with has learned from
        periods = held_out_periods(periods, encoder_learned_before(index_dir), log)
    tcfg = tcfg or TrainConfig()
    names = variants or default_variants()
    built = built_columns(names)  # pair inputs built with the columns any variant reads, for all
    mined = mine(store, inp, fusion, depth, train_before, valid_before, seed=tcfg.seed, encoder=encoder,
                 train_kinds=train_kinds, eval_kinds=eval_kinds, progress=progress, rejected=rejected,
                 text=built.text)
    if first_train_queries is not None:  # a young project: only its first N train duplicates (by filing date)
        keep_first_groups(mined, inp, first_train_queries)
    if not mined.groups or not mined.valid:
        raise QueryError(f"nothing to learn from: {len(mined.groups)} train and {len(mined.valid)} validation queries "
                         f"(duplicates whose master the first stage finds) before {valid_before:%Y-%m-%d}; training "
                         "needs both (more links, or other --train-before/--valid-before dates)")
    log(f"    mined {len(mined.groups)} train queries ({', '.join(k.label for k in train_kinds)}; "
        f"{sum(len(g.negatives) for g in mined.groups)} negatives, {mined.feedback_negatives} of them rejected by "
        f"agents), {len(mined.valid)} validation and {len(mined.test)} test queries with their top {RERANK_DEPTH}")
    tokens = needs_tokens(names)  # token states only for variants that read them
    base_data, fs, _ = build_train_data(store, inp, encoder, index_dir, mined, with_pair=True, progress=progress,
                                        code=built.code, tokens=tokens, text=built.text)

    first = {"valid": first_stage_ranks(mined.valid), "test": first_stage_ranks(mined.test)}
    results: dict[str, Any] = {"test": {}, "valid": {}, "variants": {}, "extra": {},
                               "train_pairs": {"queries": len(mined.groups),
                                               "positives": sum(len(g.positives) for g in mined.groups),
                                               "negatives": sum(len(g.negatives) for g in mined.groups),
                                               "rejected_by_agents": mined.feedback_negatives}, "kinds": {
        label: {"test": {}, "valid": {}, "first_stage": {
            "valid": metrics_from_ranks(first_stage_ranks(mined.valid_by_kind[label])),
            "test": metrics_from_ranks(first_stage_ranks(mined.test_by_kind[label]))}}
        for label in mined.test_by_kind}, "train_queries": [k.label for k in train_kinds]}
    fuse = fusion_fn(fusion, depth)
    extra_sets: dict[str, tuple[Mined, TrainData]] = {}
    for set_name, pools in (extra or {}).items():
        if built.text and any("bm25_title" not in p.scores for p in pools):  # before any training, not after
            raise ValueError(f"the {set_name!r} pools were scored without the text columns' scores "
                             "(kind_pools(text=True)), which rerank-linear reads")
        m = Mined(groups=[], valid=[], test=[])
        m.valid = rank_lists(pools, fuse, m)
        d, _, _ = build_train_data(store, inp, encoder, index_dir, m, with_pair=True, progress=progress,
                                   query_kinds=mined.trains_short, code=built.code, tokens=tokens,
                                   text=built.text)
        extra_sets[set_name] = (m, d)
        results["extra"][set_name] = {}
    ranks: dict[str, np.ndarray] = {"hybrid (top 100)": first["test"]}
    trained: dict[str, VariantResult] = {}
    for name in names:
        vr, data, perm = train_named(name, base_data, built, fs, store.schema.to_dict(), mined, out_dir, encoder,
                                     tcfg, progress, log)
        results["test"][name] = metrics_from_ranks(vr.test_ranks)
        results["valid"][name] = metrics_from_ranks(vr.valid_ranks)
        results["variants"][name] = {"history": vr.history, "seconds": round(vr.seconds, 1),
                                     "model_dir": str(vr.model_dir)}
        ranks[name] = vr.test_ranks
        for label, rows in results["kinds"].items():
            for part, lists in (("valid", mined.valid_by_kind[label]), ("test", mined.test_by_kind[label])):
                rows[part][name] = metrics_from_ranks(reranked_ranks(lists, vr.scores(data, lists, perm)))
        for set_name, (m, d) in extra_sets.items():
            # the base items' features (tickets first, as in every set), so that the shuffled ablation's
            # permutation of them applies here too
            dx = TrainData(tokens=d.tokens, feats=base_data.feats, pair=variant_data(d, name, built).pair,
                           groups=[], valid=[])
            scores = vr.scores(dx, m.valid, perm)
            results["extra"][set_name][name] = metrics_from_ranks(reranked_ranks(m.valid, scores))
        if not VARIANTS[name].get("shuffle"):  # an ablation is measured, never installed
            trained[name] = vr
    comparisons = {}
    for a, b in (("rerank-concat", "rerank-cross"), ("hybrid (top 100)", "rerank-cross"),
                 ("hybrid (top 100)", "rerank-linear"), ("rerank-linear", "rerank-cross+pair"),
                 ("rerank-linear-nocode", "rerank-linear"), ("rerank-linear-notext", "rerank-linear"),
                 ("rerank-linear", "rerank-cross+pair+code"),
                 ("hybrid (top 100)", "rerank-cross+pair"),
                 ("rerank-cross", "rerank-cross+pair"), ("rerank-cross+pair", "rerank-cross+pair+code"),
                 ("rerank-cross-shuffled", "rerank-cross"),
                 ("rerank-concat-noprior", "rerank-cross-noprior"), ("rerank-cross-noprior", "rerank-cross")):
        if a in ranks and b in ranks:
            comparisons[f"{b} vs {a}"] = {m: paired_bootstrap(ranks[a], ranks[b], m) for m in ("MRR", "RR@10")}
    results["comparisons"] = comparisons
    # the first stage's order of the same lists (the experiment's tables have it as its own `hybrid` row)
    results["first_stage"] = {"valid": metrics_from_ranks(first["valid"]), "test": metrics_from_ranks(first["test"])}
    rank_general = general_ranker(store, inp, encoder, index_dir, mined, progress, general_dir)
    general = None
    if rank_general is not None:  # the shipped model for teams with too few links, on the same lists
        general = rank_general(mined.valid)
        test_general = rank_general(mined.test)
        results["valid"]["rerank-general"] = metrics_from_ranks(general)
        results["test"]["rerank-general"] = metrics_from_ranks(test_general)
        results["comparisons"]["rerank-general vs hybrid (top 100)"] = {
            m: paired_bootstrap(first["test"], test_general, m) for m in ("MRR", "RR@10")}
        for label, rows in results["kinds"].items():
            rows["valid"]["rerank-general"] = metrics_from_ranks(rank_general(mined.valid_by_kind[label]))
            rows["test"]["rerank-general"] = metrics_from_ranks(rank_general(mined.test_by_kind[label]))
        for set_name, (m, _) in extra_sets.items():  # its own lists per set (a window, no easy duplicates)
            rank_set = general_ranker(store, inp, encoder, index_dir, m, progress, general_dir)
            if rank_set is not None:
                results["extra"][set_name]["rerank-general"] = metrics_from_ranks(rank_set(m.valid))
    folds = [f for start, end in (periods if trained else [])
             if (f := run_fold(store, inp, encoder, index_dir, fusion, depth, start, end, list(trained), tcfg,
                               progress, log, out_dir, train_kinds, rejected, first_train_queries,
                               general_dir)) is not None]
    alone = choose_variant(trained, [])  # the validation period's own choice
    best = choose_variant(trained, folds)
    decision = decide_install(alone.name if alone else None, alone.valid_ranks if alone else None, first["valid"],
                              general, install_rule)
    if validation_folds > len(folds):
        results["folds_skipped"] = validation_folds - len(folds)  # the encoder learned from them, or empty
    if folds:
        results["folds"] = [f.to_dict() for f in folds]
        results["decision_without_folds"] = decision.to_dict()  # what the validation period alone decides
        fold_general = [f.general for f in folds if f.general is not None]
        decision = decide_install(
            best.name if best else None,
            np.concatenate([best.valid_ranks, *(f.variants[best.name] for f in folds)]) if best else None,
            np.concatenate([first["valid"], *(f.first for f in folds)]),
            np.concatenate([general, *fold_general]) if general is not None and len(fold_general) == len(folds)
            else None, install_rule, folds=len(folds))
    decision.reason += simpler_choice(trained, folds, best)  # the simplest-variant rule, where it overrode
    results["decision"] = decision.to_dict()
    if not install:  # a measurement: the index keeps what it had
        return results
    where = IndexDir(index_dir)
    if decision.install and best is not None:
        source = best.model_dir
        atomic_write_dir(where.reranker_path, lambda tmp: shutil.copytree(source, tmp, dirs_exist_ok=True))
        results["installed"] = best.name
        # the row a user gets by default: the variant chosen on validation
        results["test"]["rerank"] = results["test"][best.name]
        results["valid"]["rerank"] = results["valid"][best.name]
        for rows in results["extra"].values():
            rows["rerank"] = rows[best.name]
        for rows in results["kinds"].values():
            rows["test"]["rerank"], rows["valid"]["rerank"] = rows["test"][best.name], rows["valid"][best.name]
        log(f"    installed {best.name} as {where.reranker_path}: {decision.reason}")
    else:
        where.uninstall_reranker()  # a model installed before no longer stands against this validation
        if decision.use == "general":  # the row a user gets: the general model's, in every table
            for rows in (results, *results["kinds"].values()):
                rows["test"]["rerank"], rows["valid"]["rerank"] = rows["test"]["rerank-general"], rows["valid"][
                    "rerank-general"]
            for rows in results["extra"].values():
                rows["rerank"] = rows["rerank-general"]
        log(f"    installed no reranker of its own: {decision.reason}")
    where.save_rerank_decision(decision.to_dict())
    return results


def time_split(inp: EvalInputs, train_frac: float = 0.8, valid_frac: float = 0.1) -> tuple[datetime, datetime]:
    """Dates that split the tickets by creation time into train / validation / test (80/10/10)."""
    c = inp.ev.created
    n = len(c)
    tb = c[min(n - 1, int(n * train_frac))].astype("datetime64[s]").astype(datetime)
    vb = c[min(n - 1, int(n * (train_frac + valid_frac)))].astype("datetime64[s]").astype(datetime)
    return tb, vb


def train_index(
    index_dir: Path, train_before: datetime | None, valid_before: datetime | None, variant: str,
    settings: Any, tcfg: TrainConfig, progress: bool = True, log: Callable[[str], None] = print,
    train_kinds: Sequence[QueryKind] = (FULL,), store: TicketStore | None = None, install_rule: InstallRule = "auto",
    validation_folds: int = DEFAULT_VALIDATION_FOLDS,
) -> dict[str, Any]:
    """`ticketsearch train`: mine, train `variant` (or with "auto" the variants it chooses among:
    `train_variants`), install the one chosen (`decide_install`: where it validates better, or `install_rule`
    "always") and compute candidate vectors (none for a linear model).

    `store`: the index's store as a running service holds it open (its engine then computes the candidate
    vectors itself, when it swaps the model in: `Engine.reload_reranker`)."""
    check_folds(validation_folds)  # refused before anything is read
    names = train_variants(variant)
    # the store's dates are naive UTC: so are the splits, whatever offset a request gave them
    train_before, valid_before = (None if x is None else naive_utc(x) for x in (train_before, valid_before))
    problem = period_problem(train_before, valid_before)
    if problem:
        raise RequestError(problem)
    d = IndexDir(index_dir)
    d.require_store()  # train an index that exists: never create one
    if store is not None:
        return _train(d, store, train_before, valid_before, names, settings, tcfg, progress, log, train_kinds,
                      vectors=False, install_rule=install_rule, validation_folds=validation_folds)
    with open_store(d, read_only=False) as own:
        return _train(d, own, train_before, valid_before, names, settings, tcfg, progress, log, train_kinds,
                      vectors=True, install_rule=install_rule, validation_folds=validation_folds)


def feedback_rejections(inp: EvalInputs, pairs: Sequence[tuple[str, str]]) -> dict[int, set[int]]:
    """Rejected pairs as EvalSet indices: the later-created ticket -> the earlier ones agents said it does not
    duplicate (a query's candidates are earlier tickets)."""
    pos = {tid: i for i, tid in enumerate(inp.ev.ids)}
    out: dict[int, set[int]] = {}
    for x, y in pairs:
        if x in pos and y in pos:
            a, b = sorted((pos[x], pos[y]))
            out.setdefault(b, set()).add(a)
    return out


MIN_LINKS = 2  # duplicate links (tickets with duplicate_of) below which no training is tried


def check_links(store: TicketStore, what: str) -> int:
    """The store's link count; QueryError, saying so, when it is below what training needs (every door asks
    this before training: `ticketsearch train`, the service's training jobs)."""
    links = link_count(store)
    if links < MIN_LINKS:
        raise QueryError(f"{what} has {links} duplicate link(s) (tickets with duplicate_of); training needs at "
                         f"least {MIN_LINKS}")
    return links


def link_count(store: TicketStore) -> int:
    """How many stored tickets name the ticket they duplicate (the links training learns from)."""
    return store.link_count()


def _train(
    d: IndexDir, store: TicketStore, train_before: datetime | None, valid_before: datetime | None,
    variants: list[str], settings: Any, tcfg: TrainConfig, progress: bool, log: Callable[[str], None],
    train_kinds: Sequence[QueryKind], vectors: bool, install_rule: InstallRule = "auto",
    validation_folds: int = DEFAULT_VALIDATION_FOLDS,
) -> dict[str, Any]:

    index_dir = d.root
    check_links(store, str(index_dir))
    manifest = load_manifest(d)
    encoder = open_encoder(d, settings, manifest)
    decisions = feedback.all_decisions(store)
    confirmed = [(x.ticket_id, x.candidate_id) for x in decisions if x.label == "duplicate"]
    inp = load_eval_inputs(index_dir, store, encoder, extra_links=confirmed)
    rejected = feedback_rejections(inp, [(x.ticket_id, x.candidate_id) for x in decisions
                                         if x.label == "not_duplicate"])
    log(f"agents' feedback: {len(confirmed)} confirmed pairs (joined to the links as positives), "
        f"{sum(len(v) for v in rejected.values())} rejected pairs (hard negatives)")
    if train_before is None or valid_before is None:
        tb, vb = time_split(inp)
        train_before, valid_before = train_before or tb, valid_before or vb
    log(f"train before {train_before:%Y-%m-%d}, validate before {valid_before:%Y-%m-%d}, test after")
    res = run_rerankers(store, inp, encoder, index_dir, manifest.fusion, settings.fusion_depth, train_before,
                        valid_before, d.rerankers_path, variants=variants, tcfg=tcfg,
                        progress=progress, log=log, train_kinds=train_kinds,
                        rejected=rejected, install_rule=install_rule, validation_folds=validation_folds)
    res["feedback"] = {"confirmed": len(confirmed), "rejected": sum(len(v) for v in rejected.values())}
    if "installed" in res and vectors:
        n = refresh_rerank_vectors(d, store, encoder, progress=progress, log=log)
        if n:  # none for a linear model
            log(f"computed reranker vectors for {n} tickets")
    return res
