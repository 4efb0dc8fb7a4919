"""The install decision (do no harm): which order search uses after a training, decided on validation queries
the model never trained on, against the first stage it reranks and the general model.

`ticketsearch train`, the service's training jobs, `tune-encoder`'s retraining and `experiment` all decide
here (`pipeline.training.run_rerankers`); the decision is saved beside the index (`IndexDir.rerank_decision_path`)
and `info` and the collection listing report it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ticketsearch.results import InstallRule
from ticketsearch.retrieval.evaluation import paired_bootstrap


@dataclass
class InstallDecision:
    """Which order search uses: the best variant on validation is installed only when it beats the first stage
    it reranks (validation MRR, paired over the same queries) and the general model; otherwise the general
    model reranks where it beats the first stage (or where there is nothing to validate on), else first-stage
    order stays."""

    install: bool  # the index's own model is installed
    variant: str | None
    valid_mrr: float | None
    first_stage_valid_mrr: float
    delta: dict[str, float] | None  # paired bootstrap of variant - first stage on validation MRR
    queries: int
    reason: str
    use: str = "first_stage"  # "own", "general" or "first_stage"
    general_valid_mrr: float | None = None
    folds: int = 0  # earlier periods pooled with the validation period (`pipeline.folds`)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def mrr(ranks: np.ndarray) -> float:
    """Mean reciprocal rank (0 for no queries)."""
    return float(np.mean(1.0 / ranks)) if len(ranks) else 0.0


ALWAYS = "installed as asked (install 'always')"
# Below this many validation queries (pooled with any folds) the figures are too noisy to choose on (seamonkey's 4
# queries: an own-model gain of +.082 with a 95% interval of -.317 to +.562, and the model lost on test): the
# general model reranks, as for an index with no validation queries at all.
MIN_DECISION_QUERIES = 20


def decide_install(name: str | None, variant_ranks: np.ndarray | None, first_ranks: np.ndarray,
                   general_ranks: np.ndarray | None = None, rule: InstallRule = "auto",
                   folds: int = 0) -> InstallDecision:
    """Install `name` when its validation MRR is above the first stage's on the same queries (the point
    estimate of the paired difference; its 95% interval is reported, not required: a few dozen validation
    queries rarely exclude zero even for a real gain) and not below the general model's (`general_ranks`,
    when given); else use the general model where it beats the first stage. `rule` "always": install the
    trained model whatever validation says (a team that wants its own model's verdicts; the figures are
    still reported, and a model that could not be trained is still not installed). `folds`: how many earlier
    periods the ranks pool with the validation period's (`pipeline.folds`), as the reason says. With fewer than
    MIN_DECISION_QUERIES queries and a general model, the general model reranks whatever the figures say."""

    decision = _decide(name, variant_ranks, first_ranks, general_ranks, rule, folds)
    decision.folds = folds
    return decision


def _decide(name: str | None, variant_ranks: np.ndarray | None, first_ranks: np.ndarray,
            general_ranks: np.ndarray | None, rule: InstallRule, folds: int) -> InstallDecision:
    first_mrr = mrr(first_ranks)
    n = len(first_ranks)
    gen = None if general_ranks is None or not len(general_ranks) else mrr(general_ranks)
    trained = name is not None and variant_ranks is not None
    if not trained or n == 0:
        why = "no validation queries to compare it with the first stage" if name else "no variant was trained"
        if trained and rule == "always":
            return InstallDecision(True, name, None, first_mrr, None, 0, f"{ALWAYS}: {why}", "own", gen)
        if general_ranks is not None:
            return InstallDecision(False, name, None, first_mrr, None, n,
                                   f"{why}: the general model (trained on other projects' links) reranks",
                                   "general", gen)
        return InstallDecision(False, name, None, first_mrr, None, n, why)
    assert variant_ranks is not None
    own = mrr(variant_ranks)
    delta = paired_bootstrap(first_ranks, variant_ranks, "MRR")
    over = f"{n} queries" + (f" (the validation period and {folds} earlier fold{'s' * (folds > 1)})" if folds else "")
    figures = (f"validation MRR {own:.3f} against the first stage's {first_mrr:.3f} over {over} "
               f"(difference {delta['diff']:+.3f}, 95% interval {delta['lo']:+.3f} to {delta['hi']:+.3f})")
    if gen is not None:
        figures += f" and the general model's {gen:.3f}"
    if rule == "always":
        return InstallDecision(True, name, own, first_mrr, delta, n, f"{ALWAYS}: {figures}", "own", gen)
    if n < MIN_DECISION_QUERIES and general_ranks is not None:
        return InstallDecision(False, name, own, first_mrr, delta, n,
                               f"too few validation queries to choose on (fewer than {MIN_DECISION_QUERIES}): "
                               f"{name}'s {figures}; the general model (trained on other projects' links) reranks",
                               "general", gen)
    if delta["diff"] > 0 and (gen is None or own >= gen):
        return InstallDecision(True, name, own, first_mrr, delta, n, f"{name} beats the first stage: {figures}",
                               "own", gen)
    if gen is not None and gen > first_mrr:
        return InstallDecision(False, name, own, first_mrr, delta, n,
                               f"the general model validates best: {name}'s {figures}; the general model reranks",
                               "general", gen)
    return InstallDecision(False, name, own, first_mrr, delta, n,
                           f"{name} does not beat the first stage it reranks: {figures}; results stay in "
                           "first-stage order", "first_stage", gen)
