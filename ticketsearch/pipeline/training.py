"""Training the reranker's variants on data mined from an index's links (`mining`), scoring them, and the
install decision (a model is installed only where it beats the first stage on validation)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ticketsearch.atomic import atomic_write_dir
from ticketsearch.errors import QueryError, TicketsearchError
from ticketsearch.index_data import feedback
from ticketsearch.index_data.features import FeatureSpace
from ticketsearch.index_data.store import TicketStore
from ticketsearch.index_dir import IndexDir
from ticketsearch.pipeline.general import general_inputs, list_scores
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
    mine,
    rank_lists,
    ticket_values,
    without_code,
)
from ticketsearch.pipeline.pairs import RERANK_DEPTH
from ticketsearch.pipeline.parts import load_manifest, open_encoder, open_store
from ticketsearch.pipeline.rerank_vectors import refresh_rerank_vectors
from ticketsearch.rerank.general import SHIPPED, load_general
from ticketsearch.rerank.lambdamart import LambdaMART, available, ltr_inputs
from ticketsearch.rerank.model import RerankConfig
from ticketsearch.rerank.pair_features import pair_dim
from ticketsearch.rerank.persist import save_reranker
from ticketsearch.rerank.train import (
    Group,
    RankList,
    TrainConfig,
    TrainData,
    rerank_scores,
    reranked_ranks,
    train,
)
from ticketsearch.results import InstallRule
from ticketsearch.retrieval.encoder import Encoder
from ticketsearch.retrieval.eval_index import EvalInputs, fusion_fn, load_eval_inputs
from ticketsearch.retrieval.evaluation import QueryPool, metrics_from_ranks, paired_bootstrap
from ticketsearch.retrieval.query_kinds import FULL, QueryKind


@dataclass
class VariantResult:
    name: str
    valid_ranks: np.ndarray
    test_ranks: np.ndarray
    history: list[dict]
    seconds: float
    model_dir: Path
    valid_mrr: float
    model: Any = None  # the trained PairModel
    ltr: Any = None  # its LambdaMART stage (`rerank.lambdamart`), for the rerank-lambdamart variant

    def scores(self, data: TrainData, lists: Sequence[RankList], perm: np.ndarray | None = None) -> list[np.ndarray]:
        """The variant's scores of every candidate of every list (as serving computes them)."""
        return variant_scores(self.model, self.ltr, data, lists, perm)


def variant_scores(model: Any, ltr: Any, data: TrainData, lists: Sequence[RankList],
                   perm: np.ndarray | None = None) -> list[np.ndarray]:
    """The fusion model's logits, or with a LambdaMART stage its scores of them and the pair inputs."""
    logits = rerank_scores(model, data, lists, perm)
    if ltr is None:
        return logits
    return [ltr.predict(ltr_inputs(list_pairs(data, r), lg)) for r, lg in zip(lists, logits)]


def list_pairs(data: TrainData, r: RankList) -> np.ndarray:
    if data.pair is None:
        raise ValueError("LambdaMART needs the pair inputs")
    return np.stack([np.asarray(data.pair(r.query, c)) for c in r.candidates])


def ltr_train_lists(mined: Mined) -> list[RankList]:
    """LambdaMART's training lists: each train query's mined candidates (the group members in its top
    RERANK_DEPTH, its hardest negatives, a sample of the rest of its top RERANK_DEPTH and a few random tickets),
    the fusion model's own training pairs, whose token states are already computed."""
    return [RankList(g.query, [*g.positives, *g.negatives],
                     np.array([True] * len(g.positives) + [False] * len(g.negatives)), float("inf"))
            for g in mined.groups]


def train_variant(
    name: str, data: TrainData, fs: FeatureSpace, schema_dict: dict, mined: Mined, arch: str, with_pair: bool,
    out_dir: Path, encoder: Encoder, tcfg: TrainConfig, progress: bool, log: Callable[[str], None],
    prior: bool = True, ltr_train: Sequence[RankList] | None = None, code: bool = False,
) -> VariantResult:
    """Train one variant and save it in `out_dir/name`; with `ltr_train` (LambdaMART's training lists), a
    LambdaMART stage on top of the fusion model, early-stopped on the validation lists, saved beside it;
    `code`: its pair inputs end with the code terms' agreement (`data.pair` gives them)."""
    kinds = with_pair and mined.trains_short
    code = with_pair and code
    cfg = RerankConfig(feat_dim=fs.dim, text_dim=encoder.dim, arch=arch,  # type: ignore[arg-type]  # arch comes from VARIANTS, whose values are the Literal
                       pair_dim=pair_dim(fs.schema, kinds, code) if with_pair else 0, dropout=DROPOUT,
                       cosine_prior=prior, query_kinds=kinds, code=code)
    log(f"    training {name} ({len(data.groups)} train queries, {len(data.valid)} validation queries)")
    res = train(data, cfg, tcfg, progress=progress, log=log)
    perm = np.random.default_rng(tcfg.seed).permutation(len(data.feats)) if tcfg.shuffle_features else None
    ltr = None
    if ltr_train is not None:

        def inputs(lists: Sequence[RankList]) -> list[tuple[np.ndarray, np.ndarray]]:
            logits = rerank_scores(res.model, data, lists, perm)
            return [(ltr_inputs(list_pairs(data, r), lg), r.hits) for r, lg in zip(lists, logits)]

        ltr = LambdaMART.fit(inputs(ltr_train), inputs(mined.valid))
        log(f"    LambdaMART on {name}'s pair inputs and score: {ltr.best_iteration} trees (early-stopped on "
            "validation NDCG@10)")
    val_scores = variant_scores(res.model, ltr, data, mined.valid, perm)
    test_scores = variant_scores(res.model, ltr, data, mined.test, perm)
    model_dir = out_dir / name
    shutil.rmtree(model_dir, ignore_errors=True)  # a variant's directory holds only what this training wrote
    save_reranker(model_dir, res.model, {
        "name": name, "schema": schema_dict, "features": fs.to_dict(), "encoder": encoder.key,
        "encoder_model": encoder.name, "max_seq_length": encoder.max_seq_length,
        **calibration_meta(val_scores, mined.valid), "train": {
            "loss": tcfg.loss, "epochs_run": len(res.history), "best_epoch": res.best_epoch, "seed": tcfg.seed,
            "shuffle_features": tcfg.shuffle_features, "history": res.history, "seconds": round(res.seconds, 1),
            "at": datetime.now(UTC).isoformat(timespec="seconds"), "queries": len(mined.groups),
            "positives": sum(len(g.positives) for g in mined.groups), "validation_queries": len(mined.valid)},
        "rerank_depth": RERANK_DEPTH,
        **({"ltr": {"method": "lambdamart", "trees": ltr.best_iteration}} if ltr is not None else {}),
    })
    if ltr is not None:
        ltr.save(model_dir)
    valid_ranks = reranked_ranks(mined.valid, val_scores)
    valid_mrr = float(np.mean(1.0 / valid_ranks)) if ltr is not None and len(valid_ranks) else res.best_valid_mrr
    return VariantResult(name, valid_ranks, reranked_ranks(mined.test, test_scores),
                         res.history, res.seconds, model_dir, valid_mrr, res.model, ltr)


def general_ranker(store: TicketStore, inp: EvalInputs, encoder: Encoder, index_dir: Path, mined: Mined,
                   progress: bool = False, general_dir: Path | None = None,
                   ) -> Callable[[Sequence[RankList]], np.ndarray] | None:
    """The general model's ranks of any of `mined`'s lists (None when it cannot load); the shipped model unless
    `general_dir` names another (a measurement's, trained without the data it is scored on)."""

    try:
        model, meta = load_general(general_dir or SHIPPED)
    except TicketsearchError:
        return None
    # the pair inputs laid out as the general model was trained, whatever the lists' own model uses
    g = general_inputs(store, inp, encoder, index_dir, mined, progress, query_kinds=bool(meta.get("query_kinds")))
    return lambda lists: reranked_ranks(lists, list_scores(model, g, lists))


def first_stage_ranks(lists: Sequence[RankList]) -> np.ndarray:
    """Ranks of the first hits in the lists' own (first-stage) order."""
    return reranked_ranks(lists, [-np.arange(len(r.candidates), dtype=float) for r in lists])


# Every variant starts from the cosine prior (RerankConfig.cosine_prior): without it the text-only models
# stayed at the random order of the top 100 on hadoop and hive (docs/RESULTS.md). "-noprior" rows are the
# article's models as specified, kept for the comparison.
VARIANTS: dict[str, dict[str, Any]] = {
    "rerank-concat": {"arch": "concat", "pair": False},
    "rerank-cross": {"arch": "cross", "pair": False},
    "rerank-cross+pair": {"arch": "cross", "pair": True},
    # cross+pair with the agreement of the two texts' stack frames, exception classes and error codes
    "rerank-cross+pair+code": {"arch": "cross", "pair": True, "code": True},
    "rerank-cross-shuffled": {"arch": "cross", "pair": False, "shuffle": True},  # ablation
    "rerank-concat-noprior": {"arch": "concat", "pair": False, "prior": False, "optional": True},
    "rerank-cross-noprior": {"arch": "cross", "pair": False, "prior": False, "optional": True},
}
VARIANTS["rerank-lambdamart"] = {"arch": "cross", "pair": True, "ltr": True}  # LightGBM on top of cross+pair
DEFAULT_VARIANTS = [n for n, v in VARIANTS.items() if not v.get("optional")]


def default_variants() -> list[str]:
    """The variants an experiment trains: rerank-lambdamart only where LightGBM is installed."""

    return [n for n in DEFAULT_VARIANTS if not VARIANTS[n].get("ltr") or available()]


def run_rerankers(
    store: TicketStore, inp: EvalInputs, encoder: Encoder, index_dir: Path, fusion: dict[str, Any], depth: int,
    train_before: datetime, valid_before: datetime, out_dir: Path, variants: list[str] | None = None,
    tcfg: TrainConfig | None = None, progress: bool = True, log: Callable[[str], None] = print,
    extra: dict[str, list[QueryPool]] | None = None, train_kinds: Sequence[QueryKind] = (FULL,),
    eval_kinds: Sequence[QueryKind] = (FULL,), install: bool = True,
    first_train_queries: int | None = None, general_dir: Path | None = None,
    rejected: dict[int, set[int]] | None = None, install_rule: InstallRule = "auto",
) -> dict[str, Any]:
    """Mine, train every variant, score validation and test lists; install the best variant in the index
    (`install_rule`: `decide_install`'s).

    `extra` names more sets of test pools (a candidate window, no easy duplicates): each gets its own top-100
    lists and pair inputs (a query's list differs from set to set), scored by every variant, in
    `results["extra"][name]`. The reranker trains on the queries of `train_kinds` (whole tickets, short
    queries cut from them, or both) and is scored on each of `eval_kinds` in `results["kinds"][label]`
    (`results["test"]` and `["valid"]` are the first evaluated kind's)."""


    tcfg = tcfg or TrainConfig()
    mined = mine(store, inp, fusion, depth, train_before, valid_before, seed=tcfg.seed, encoder=encoder,
                 train_kinds=train_kinds, eval_kinds=eval_kinds, progress=progress, rejected=rejected)
    if first_train_queries is not None:  # a young project: only its first N train duplicates (by filing date)
        n = len(inp.ev)

        def filed(g: Group) -> np.datetime64:
            return inp.ev.created[g.query if g.query < n else mined.short[g.query - n].ticket]

        mined.groups = sorted(mined.groups, key=filed)[:first_train_queries]
    if not mined.groups or not mined.valid:
        raise QueryError(f"nothing to learn from: {len(mined.groups)} train and {len(mined.valid)} validation queries "
                         f"(duplicates whose master the first stage finds) before {valid_before:%Y-%m-%d}; training "
                         "needs both (more links, or other --train-before/--valid-before dates)")
    log(f"    mined {len(mined.groups)} train queries ({', '.join(k.label for k in train_kinds)}; "
        f"{sum(len(g.negatives) for g in mined.groups)} negatives, {mined.feedback_negatives} of them rejected by "
        f"agents), {len(mined.valid)} validation and {len(mined.test)} test queries with their top {RERANK_DEPTH}")
    names = variants or default_variants()
    code = any(VARIANTS[n].get("code") for n in names)  # pair inputs built with the code columns, for all
    base_data, fs, _ = build_train_data(store, inp, encoder, index_dir, mined, with_pair=True, progress=progress,
                                        code=code)

    def variant_pair(pair: Callable[[int, int], np.ndarray] | None,
                     spec: dict[str, Any]) -> Callable[[int, int], np.ndarray] | None:
        """A variant's pair inputs: none, all of them, or all but the code columns."""
        return None if not spec["pair"] else pair if spec.get("code") or not code else without_code(pair)
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
        m = Mined(groups=[], valid=[], test=[])
        m.valid = rank_lists(pools, fuse, m)
        d, _, _ = build_train_data(store, inp, encoder, index_dir, m, with_pair=True, progress=progress,
                                   query_kinds=mined.trains_short, code=code)
        extra_sets[set_name] = (m, d)
        results["extra"][set_name] = {}
    ranks: dict[str, np.ndarray] = {"hybrid (top 100)": first["test"]}
    best: VariantResult | None = None
    ltr_train = ltr_train_lists(mined)
    for name in names:
        spec = VARIANTS[name]
        data = TrainData(tokens=base_data.tokens, feats=base_data.feats, pair=variant_pair(base_data.pair, spec),
                         groups=base_data.groups, valid=base_data.valid)
        vcfg = TrainConfig(**{**tcfg.__dict__, "shuffle_features": bool(spec.get("shuffle"))})
        vr = train_variant(name, data, fs, store.schema.to_dict(), mined, spec["arch"], spec["pair"], out_dir,
                           encoder, vcfg, progress, log, prior=spec.get("prior", True),
                           ltr_train=ltr_train if spec.get("ltr") else None, code=bool(spec.get("code")))
        results["test"][name] = metrics_from_ranks(vr.test_ranks)
        results["valid"][name] = metrics_from_ranks(vr.valid_ranks)
        results["variants"][name] = {"history": vr.history, "seconds": round(vr.seconds, 1),
                                     "model_dir": str(vr.model_dir)}
        ranks[name] = vr.test_ranks
        perm = np.random.default_rng(vcfg.seed).permutation(len(data.feats)) if vcfg.shuffle_features else None
        for label, rows in results["kinds"].items():
            for part, lists in (("valid", mined.valid_by_kind[label]), ("test", mined.test_by_kind[label])):
                rows[part][name] = metrics_from_ranks(reranked_ranks(lists, vr.scores(data, lists, perm)))
        for set_name, (m, d) in extra_sets.items():
            # the base items' features (tickets first, as in every set), so that the shuffled ablation's
            # permutation of them applies here too
            dx = TrainData(tokens=d.tokens, feats=base_data.feats, pair=variant_pair(d.pair, spec), groups=[],
                           valid=[])
            scores = vr.scores(dx, m.valid, perm)
            results["extra"][set_name][name] = metrics_from_ranks(reranked_ranks(m.valid, scores))
        if not spec.get("shuffle") and (best is None or vr.valid_mrr > best.valid_mrr):
            best = vr
    comparisons = {}
    for a, b in (("rerank-concat", "rerank-cross"), ("hybrid (top 100)", "rerank-cross"),
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
    decision = decide_install(best.name if best else None, best.valid_ranks if best else None, first["valid"],
                              general, install_rule)
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
        if decision.use == "general":
            for rows in (results, *results["kinds"].values()):
                rows["test"]["rerank"], rows["valid"]["rerank"] = rows["test"]["rerank-general"], rows["valid"][
                    "rerank-general"]
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
) -> dict[str, Any]:
    """`ticketsearch train`: mine, train one variant, install it (`decide_install`: where it validates better,
    or `install_rule` "always") and compute candidate vectors.

    `store`: the index's store as a running service holds it open (its engine then computes the candidate
    vectors itself, when it swaps the model in: `Engine.reload_reranker`)."""
    d = IndexDir(index_dir)
    d.require_store()  # train an index that exists: never create one
    if store is not None:
        return _train(d, store, train_before, valid_before, variant, settings, tcfg, progress, log, train_kinds,
                      vectors=False, install_rule=install_rule)
    with open_store(d, read_only=False) as own:
        return _train(d, own, train_before, valid_before, variant, settings, tcfg, progress, log, train_kinds,
                      vectors=True, install_rule=install_rule)


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
    d: IndexDir, store: TicketStore, train_before: datetime | None, valid_before: datetime | None, variant: str,
    settings: Any, tcfg: TrainConfig, progress: bool, log: Callable[[str], None], train_kinds: Sequence[QueryKind],
    vectors: bool, install_rule: InstallRule = "auto",
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
                        valid_before, d.rerankers_path, variants=[variant], tcfg=tcfg,
                        progress=progress, log=log, train_kinds=train_kinds,
                        rejected=rejected, install_rule=install_rule)
    res["feedback"] = {"confirmed": len(confirmed), "rejected": sum(len(v) for v in rejected.values())}
    if "installed" in res and vectors:
        n = refresh_rerank_vectors(d, store, encoder, progress=progress, log=log)
        log(f"computed reranker vectors for {n} tickets")
    return res
