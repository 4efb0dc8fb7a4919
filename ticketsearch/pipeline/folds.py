"""Validation folds over time: more validation queries for the install decision (issue 29 item 5).

A validation period of a year holds a few dozen to a few hundred duplicates: too few to tell variants .01-.02
MRR apart, or a team's own model from the general one. A fold is an earlier period of the same length, just
before the train period ends: each variant is trained on the links that precede it (as the installed model is
trained on those that precede the validation period), early-stopped and scored on the fold's queries, and the
first stage and the general model are scored on the same lists. `training.run_rerankers` pools the folds' ranks
with the validation period's for the variant choice and `decide_install`; the installed model is still the one
trained on the whole train period.

A fold is held out only if nothing the index searches with has learned from it: an encoder tuned on the links
before one date and chosen on those up to another (`tune-encoder`, recorded in the manifest) has seen every fold
that starts before the second, and its first stage would be scored on its own training or selection links, so
such folds are skipped, and said so. (An experiment that installs its tuned encoder therefore has no folds: it
tunes on the same train period.) Like the validation period's, a fold's figures are those of models
early-stopped on the fold itself: pooling narrows the interval around that same slightly optimistic estimate.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from ticketsearch.errors import QueryError
from ticketsearch.index_data.store import TicketStore
from ticketsearch.pipeline.mining import build_train_data, keep_first_groups, mine
from ticketsearch.pipeline.variants import (
    VARIANTS,
    VariantResult,
    built_columns,
    first_stage_ranks,
    general_ranker,
    needs_tokens,
    pooled_mrr,
    train_named,
)
from ticketsearch.requests import naive_utc
from ticketsearch.rerank.train import TrainConfig
from ticketsearch.results import MAX_VALIDATION_FOLDS
from ticketsearch.retrieval.encoder import Encoder
from ticketsearch.retrieval.eval_index import EvalInputs
from ticketsearch.retrieval.evaluation import metrics_from_ranks
from ticketsearch.retrieval.manifest import Manifest
from ticketsearch.retrieval.query_kinds import FULL, QueryKind


@dataclass
class Fold:
    """One earlier period's validation ranks: the first stage's, the general model's and each variant's."""

    start: datetime
    end: datetime
    train_queries: int
    first: np.ndarray
    general: np.ndarray | None
    variants: dict[str, np.ndarray]
    seconds: float = 0.0  # mining, training and scoring it

    def to_dict(self) -> dict[str, Any]:
        rows = {"first_stage": self.first, **self.variants,
                **({"rerank-general": self.general} if self.general is not None else {})}
        return {"start": self.start.isoformat(), "end": self.end.isoformat(), "train_queries": self.train_queries,
                "queries": len(self.first), "seconds": round(self.seconds, 1),
                "methods": {k: metrics_from_ranks(v) for k, v in rows.items()}}


def check_folds(folds: int) -> int:
    """`folds` if within the bound every door shares (QueryError otherwise): checked before any work."""
    if not 0 <= folds <= MAX_VALIDATION_FOLDS:
        raise QueryError(f"validation folds must be 0 to {MAX_VALIDATION_FOLDS}, not {folds}")
    return folds


def fold_periods(train_before: datetime, valid_before: datetime, folds: int) -> list[tuple[datetime, datetime]]:
    """`folds` periods as long as the validation period, one after another back from `train_before` (the
    latest first)."""
    check_folds(folds)
    length = valid_before - train_before
    return [(train_before - k * length, train_before - (k - 1) * length) for k in range(1, folds + 1)]


def encoder_learned_before(index_dir: Path) -> datetime | None:
    """The date before which the index's encoder learned from the links: tuned on those before its train date and
    chosen on those up to its validation date (None: not tuned on this index's links)."""
    tuning = Manifest.load(index_dir).extra.get("tuning")
    if not isinstance(tuning, dict):
        return None
    until = tuning.get("valid_before") or tuning.get("train_before")
    return naive_utc(datetime.fromisoformat(until)) if until else None


def held_out_periods(periods: Sequence[tuple[datetime, datetime]], learned_before: datetime | None,
                     log: Callable[[str], None]) -> list[tuple[datetime, datetime]]:
    """The periods the encoder has not learned from (`learned_before`), the others said and dropped."""
    kept = [(a, b) for a, b in periods if learned_before is None or naive_utc(a) >= learned_before]
    if len(kept) < len(periods):
        log(f"    {len(periods) - len(kept)} validation fold(s) skipped: the encoder was tuned and chosen on the links "
            f"before {learned_before:%Y-%m-%d}, theirs among them")
    return kept


def run_fold(
    store: TicketStore, inp: EvalInputs, encoder: Encoder, index_dir: Path, fusion: dict[str, Any], depth: int,
    start: datetime, end: datetime, names: Sequence[str], tcfg: TrainConfig, progress: bool,
    log: Callable[[str], None], work_dir: Path, train_kinds: Sequence[QueryKind] = (FULL,),
    rejected: dict[int, set[int]] | None = None, first_train_queries: int | None = None,
    general_dir: Path | None = None,
) -> Fold | None:
    """Train `names` (the variants that could be installed: the caller leaves out ablations) on the links before
    `start` and score them on the queries from `start` to `end`, as
    `run_rerankers` does for the validation period; None when the fold has no train or no validation query. The
    fold's models are written under `work_dir` (beside the trained variants) and removed."""
    t0 = time.perf_counter()
    built = built_columns(names)
    mined = mine(store, inp, fusion, depth, start, end, seed=tcfg.seed, encoder=encoder, train_kinds=train_kinds,
                 eval_kinds=(), progress=progress, rejected=rejected, text=built.text)
    if first_train_queries is not None:
        keep_first_groups(mined, inp, first_train_queries)
    if not mined.groups or not mined.valid:
        log(f"    fold {start:%Y-%m-%d} to {end:%Y-%m-%d}: {len(mined.groups)} train and {len(mined.valid)} "
            "validation queries: skipped")
        return None
    log(f"    fold {start:%Y-%m-%d} to {end:%Y-%m-%d}: {len(mined.groups)} train queries before it, "
        f"{len(mined.valid)} validation queries in it")
    base, fs, _ = build_train_data(store, inp, encoder, index_dir, mined, with_pair=True, progress=progress,
                                   code=built.code, tokens=needs_tokens(names), text=built.text)
    ranks: dict[str, np.ndarray] = {}
    work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fold-", dir=work_dir) as tmp:  # measured, never kept
        for name in names:
            vr, _, _ = train_named(name, base, built, fs, store.schema.to_dict(), mined, Path(tmp), encoder, tcfg,
                                   progress, log)
            ranks[name] = vr.valid_ranks
    rank_general = general_ranker(store, inp, encoder, index_dir, mined, progress, general_dir)
    general = rank_general(mined.valid) if rank_general is not None else None
    return Fold(start, end, len(mined.groups), first_stage_ranks(mined.valid), general, ranks,
                time.perf_counter() - t0)


# The simplest variant (`rerank-linear`: no token states, no candidate vectors) is chosen unless another validates
# better by more than this (validation MRR, pooled over the folds): choosing a fusion model's epoch on the same
# validation queries flatters its validation MRR by .000 to .018 (split halves, docs/RESULTS.md,
# `scripts/selection_bias.py`), and the linear model has no epoch to choose.
OCCAM_MARGIN = 0.02


def variant_mrr(v: VariantResult, folds: Sequence[Fold]) -> float:
    """A variant's validation MRR, pooled over `folds` when there are any."""
    return pooled_mrr(v.valid_mrr, len(v.valid_ranks), [f.variants[v.name] for f in folds]) if folds else v.valid_mrr


def simpler_choice(trained: Mapping[str, VariantResult], folds: Sequence[Fold], chosen: VariantResult | None) -> str:
    """What the reason adds when the simplest-variant rule chose `chosen` over a variant that validated higher
    ("" when it did not)."""
    top = max(trained.values(), default=None, key=lambda v: variant_mrr(v, folds))
    if top is None or chosen is None or top is chosen or variant_mrr(top, folds) <= variant_mrr(chosen, folds):
        return ""
    return (f" ({top.name} validated {variant_mrr(top, folds) - variant_mrr(chosen, folds):.3f} higher, within "
            f"the {OCCAM_MARGIN:.2f} margin: the simpler {chosen.name} is chosen)")


def choose_variant(trained: Mapping[str, VariantResult], folds: Sequence[Fold]) -> VariantResult | None:
    """The variant with the best validation MRR, pooled over `folds` when there are any (the first of equals),
    or the simplest one (`rerank-linear`) where the best beats it by no more than OCCAM_MARGIN."""
    best = max(trained.values(), default=None, key=lambda v: variant_mrr(v, folds))
    simple = [v for v in trained.values() if VARIANTS.get(v.name, {}).get("arch") == "linear"]
    if best is None or not simple:
        return best
    linear = max(simple, key=lambda v: variant_mrr(v, folds))
    return linear if variant_mrr(best, folds) - variant_mrr(linear, folds) <= OCCAM_MARGIN else best
