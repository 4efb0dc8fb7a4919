"""The reranker's variants: what each is (`VARIANTS`), training one on mined data (`train_variant`), and the
orders it is compared with (the first stage's, the general model's). `training.run_rerankers` trains them on
the train period and `folds` on earlier periods; both score them here the same way."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ticketsearch.errors import RequestError, TicketsearchError
from ticketsearch.index_data.features import FeatureSpace
from ticketsearch.index_data.store import TicketStore
from ticketsearch.pipeline.general import L2, fit_linear, general_inputs, linear_scores, list_scores
from ticketsearch.pipeline.mining import DROPOUT, Mined, calibration_meta, pair_columns
from ticketsearch.pipeline.pairs import RERANK_DEPTH
from ticketsearch.rerank.general import LINEAR_KIND, SHIPPED, LinearPairModel, load_general, save_general
from ticketsearch.rerank.lambdamart import LambdaMART, available, ltr_inputs
from ticketsearch.rerank.model import RerankConfig
from ticketsearch.rerank.pair_features import pair_dim
from ticketsearch.rerank.persist import save_reranker
from ticketsearch.rerank.train import RankList, TrainConfig, TrainData, rerank_scores, reranked_ranks, train
from ticketsearch.results import TRAIN_VARIANTS
from ticketsearch.retrieval.encoder import Encoder
from ticketsearch.retrieval.eval_index import EvalInputs


@dataclass(frozen=True)
class Columns:
    """The optional pair-input columns: those training data was built with, or those a variant reads."""

    text: bool = False  # `pair_features.TEXT_COLUMNS`
    code: bool = False  # `pair_features.CODE_COLUMNS`


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
    epoch_ranks: list[np.ndarray] = field(default_factory=list)  # the fusion model's validation ranks by epoch

    def scores(self, data: TrainData, lists: Sequence[RankList], perm: np.ndarray | None = None) -> list[np.ndarray]:
        """The variant's scores of every candidate of every list (as serving computes them)."""
        return variant_scores(self.model, self.ltr, data, lists, perm)


def variant_scores(model: Any, ltr: Any, data: TrainData, lists: Sequence[RankList],
                   perm: np.ndarray | None = None) -> list[np.ndarray]:
    """The fusion model's logits, or with a LambdaMART stage its scores of them and the pair inputs (a linear
    model's: its logits of the pair inputs)."""
    if isinstance(model, LinearPairModel):
        return linear_scores(model, data, lists)
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
    prior: bool = True, ltr_train: Sequence[RankList] | None = None, code: bool = False, text: bool = False,
) -> VariantResult:
    """Train one variant and save it in `out_dir/name`; with `ltr_train` (LambdaMART's training lists), a
    LambdaMART stage on top of the fusion model, early-stopped on the validation lists, saved beside it;
    `code`: its pair inputs end with the code terms' agreement, `text` (a linear model's only) have the text
    columns before them (`data.pair` gives both)."""
    kinds = with_pair and mined.trains_short
    code = with_pair and code
    if arch == "linear":
        return train_linear(name, data, schema_dict, mined, out_dir, encoder, kinds, Columns(with_pair and text, code),
                            log)
    if text:
        raise ValueError("only the linear variant reads the text columns")
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
            "shuffle_features": tcfg.shuffle_features, "history": res.history, **train_record(mined, res.seconds)},
        "rerank_depth": RERANK_DEPTH,
        **({"ltr": {"method": "lambdamart", "trees": ltr.best_iteration}} if ltr is not None else {}),
    })
    if ltr is not None:
        ltr.save(model_dir)
    valid_ranks = reranked_ranks(mined.valid, val_scores)
    valid_mrr = float(np.mean(1.0 / valid_ranks)) if ltr is not None and len(valid_ranks) else res.best_valid_mrr
    return VariantResult(name, valid_ranks, reranked_ranks(mined.test, test_scores),
                         res.history, res.seconds, model_dir, valid_mrr, res.model, ltr, res.epoch_ranks)


def train_record(mined: Mined, seconds: float) -> dict[str, Any]:
    """What a saved model records of its training run, whatever its kind."""
    return {"seconds": round(seconds, 3), "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "queries": len(mined.groups), "positives": sum(len(g.positives) for g in mined.groups),
            "validation_queries": len(mined.valid)}


def train_linear(name: str, data: TrainData, schema_dict: dict, mined: Mined, out_dir: Path, encoder: Encoder,
                 kinds: bool, cols: Columns, log: Callable[[str], None]) -> VariantResult:
    """The linear variant: a logistic regression on the pair inputs of the fusion model's training pairs (no
    token states, no candidate vectors), saved in `out_dir/name` as a linear reranker (`rerank.general`)."""
    log(f"    training {name} ({len(data.groups)} train queries, {len(data.valid)} validation queries)")
    t0 = time.perf_counter()
    model = fit_linear(data, mined.groups)
    seconds = time.perf_counter() - t0
    val_scores = linear_scores(model, data, mined.valid)
    valid_ranks = reranked_ranks(mined.valid, val_scores)
    model_dir = out_dir / name
    shutil.rmtree(model_dir, ignore_errors=True)  # a variant's directory holds only what this training wrote
    save_general(model_dir, model, {
        "name": name, "schema": schema_dict, "query_kinds": kinds, "code": cols.code, "text": cols.text, "l2": L2,
        "encoder": encoder.key, "encoder_model": encoder.name, **calibration_meta(val_scores, mined.valid),
        "train": train_record(mined, seconds),
        "rerank_depth": RERANK_DEPTH}, kind=LINEAR_KIND)
    valid_mrr = float(np.mean(1.0 / valid_ranks)) if len(valid_ranks) else 0.0
    return VariantResult(name, valid_ranks, reranked_ranks(mined.test, linear_scores(model, data, mined.test)),
                         [], seconds, model_dir, valid_mrr, model)


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
    g = general_inputs(store, inp, encoder, index_dir, mined, progress, query_kinds=bool(meta.get("query_kinds")),
                       text=bool(meta.get("text")))
    return lambda lists: reranked_ranks(lists, list_scores(model, g, lists))


def first_stage_ranks(lists: Sequence[RankList]) -> np.ndarray:
    """Ranks of the first hits in the lists' own (first-stage) order."""
    return reranked_ranks(lists, [-np.arange(len(r.candidates), dtype=float) for r in lists])


# Every variant starts from the cosine prior (RerankConfig.cosine_prior): without it the text-only models
# stayed at the random order of the top 100 on hadoop and hive (docs/RESULTS.md). "-noprior" rows are the
# article's models as specified, kept for the comparison.
VARIANTS: dict[str, dict[str, Any]] = {
    # a logistic regression on the pair inputs (with the text columns and the code terms' agreement) alone: what
    # the fusion models start from; the simplest variant, preferred where no other validates clearly better
    # (`OCCAM_MARGIN`)
    "rerank-linear": {"arch": "linear", "pair": True, "code": True, "text": True},
    # ablations: without the code columns, without the text columns
    "rerank-linear-nocode": {"arch": "linear", "pair": True, "text": True, "optional": True},
    "rerank-linear-notext": {"arch": "linear", "pair": True, "code": True, "optional": True},
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


AUTO_VARIANTS = ["rerank-linear", "rerank-cross+pair"]  # what `train --variant auto` trains and chooses among


def train_variants(variant: str) -> list[str]:
    """The variants `ticketsearch train` and a training job train for `variant` (`results.TRAIN_VARIANTS`):
    AUTO_VARIANTS for "auto", else that one. RequestError on `variant` (a QueryError: 422 in the API, one line
    in the CLI), before anything is read, for any other name and for rerank-lambdamart without LightGBM."""
    if variant not in TRAIN_VARIANTS:
        raise RequestError(f"must be one of {', '.join(TRAIN_VARIANTS)}; got {variant!r}", "variant")
    if variant == "auto":
        return list(AUTO_VARIANTS)
    if VARIANTS[variant].get("ltr") and not available():
        raise RequestError(f"{variant} needs LightGBM: pip install 'ticketsearch[ltr]'", "variant")
    return [variant]


def default_variants() -> list[str]:
    """The variants an experiment trains: rerank-lambdamart only where LightGBM is installed."""

    return [n for n in DEFAULT_VARIANTS if not VARIANTS[n].get("ltr") or available()]


def needs_tokens(names: Sequence[str]) -> bool:
    """Whether any of these variants reads token states (every one but the linear)."""
    return any(VARIANTS[n]["arch"] != "linear" for n in names)


def variant_columns(name: str) -> Columns:
    """The optional columns variant `name` reads."""
    spec = VARIANTS[name]
    return Columns(bool(spec.get("text")), bool(spec.get("code")))


def built_columns(names: Sequence[str]) -> Columns:
    """The optional columns training data for these variants is built with: those any of them reads."""
    return Columns(any(variant_columns(n).text for n in names), any(variant_columns(n).code for n in names))


def variant_data(base: TrainData, name: str, built: Columns) -> TrainData:
    """Variant `name`'s training data from `base` (built with the `built` columns): no pair inputs, or those it
    reads (`mining.pair_columns`)."""
    want = variant_columns(name)
    pair = (None if not VARIANTS[name]["pair"]
            else pair_columns(base.pair, built.text, built.code, want.text, want.code))
    return TrainData(tokens=base.tokens, feats=base.feats, pair=pair, groups=base.groups, valid=base.valid)


def variant_config(name: str, tcfg: TrainConfig) -> TrainConfig:
    """`tcfg` as variant `name` trains (the shuffled ablation permutes the features)."""
    return TrainConfig(**{**tcfg.__dict__, "shuffle_features": bool(VARIANTS[name].get("shuffle"))})


def feature_perm(tcfg: TrainConfig, n: int) -> np.ndarray | None:
    """The shuffled ablation's permutation of the items' features (None for every other variant)."""
    return np.random.default_rng(tcfg.seed).permutation(n) if tcfg.shuffle_features else None


def train_named(name: str, base: TrainData, built: Columns, fs: FeatureSpace, schema_dict: dict, mined: Mined,
                out_dir: Path, encoder: Encoder, tcfg: TrainConfig, progress: bool,
                log: Callable[[str], None]) -> tuple[VariantResult, TrainData, np.ndarray | None]:
    """Train variant `name` (`VARIANTS`) on `base` (built with the `built` columns); return it, the data it
    reads and its feature permutation (scoring more lists needs both)."""
    spec = VARIANTS[name]
    data = variant_data(base, name, built)
    vcfg = variant_config(name, tcfg)
    vr = train_variant(name, data, fs, schema_dict, mined, spec["arch"], spec["pair"], out_dir, encoder, vcfg,
                       progress, log, prior=spec.get("prior", True),
                       ltr_train=ltr_train_lists(mined) if spec.get("ltr") else None, code=bool(spec.get("code")),
                       text=bool(spec.get("text")))
    return vr, data, feature_perm(vcfg, len(data.feats))


def pooled_mrr(main_mrr: float, main_n: int, more: Sequence[np.ndarray]) -> float:
    """MRR over the main validation queries (their MRR and count) and more queries' ranks."""
    n = main_n + sum(len(r) for r in more)
    return (main_mrr * main_n + sum(float(np.sum(1.0 / r)) for r in more)) / n if n else 0.0
