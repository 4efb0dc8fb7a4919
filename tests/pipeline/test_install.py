"""The install decision (`ticketsearch.pipeline.install`): the own model only where it beats the first stage it
reranks on validation, and the general model; the general model where it beats the first stage; else the
first stage's order. `install "always"` installs any trained model and still reports the figures."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ticketsearch.pipeline.install import ALWAYS, MIN_DECISION_QUERIES, decide_install, mrr

NAME = "rerank-cross+pair"
# four times six queries: 24, above MIN_DECISION_QUERIES (the figures decide)
FIRST = np.tile(np.array([1, 2, 4, 1, 10, 3], dtype=float), 4)  # MRR .531
BETTER = np.tile(np.array([1, 1, 2, 1, 5, 3], dtype=float), 4)  # MRR .672
WORSE = np.tile(np.array([2, 2, 4, 3, 10, 3], dtype=float), 4)  # MRR .336
NONE = np.zeros(0)
N = len(FIRST)


def test_mrr() -> None:
    assert mrr(NONE) == 0.0 and mrr(np.array([1.0, 2.0])) == 0.75 and mrr(FIRST) == pytest.approx(0.5306, abs=1e-4)


def test_an_own_model_that_beats_the_first_stage_is_installed_with_its_figures() -> None:
    d = decide_install(NAME, BETTER, FIRST)
    assert (d.install, d.use, d.variant, d.queries, d.general_valid_mrr) == (True, "own", NAME, N, None)
    assert d.valid_mrr == mrr(BETTER) and d.first_stage_valid_mrr == mrr(FIRST)
    assert d.delta is not None and d.delta["diff"] == pytest.approx(mrr(BETTER) - mrr(FIRST))
    assert d.reason.startswith(f"{NAME} beats the first stage: validation MRR 0.672 against the first stage's "
                               "0.531 over 24 queries (difference +0.142, 95% interval")
    assert "general model" not in d.reason
    assert json.loads(json.dumps(d.to_dict())) == {**d.to_dict(), "delta": d.delta}


def test_an_own_model_that_does_not_beat_the_first_stage_is_refused() -> None:
    for ranks in (WORSE, FIRST.copy()):  # worse, and a tie: no gain
        d = decide_install(NAME, ranks, FIRST)
        assert (d.install, d.use, d.valid_mrr, d.queries) == (False, "first_stage", mrr(ranks), N)
        assert d.reason.startswith(f"{NAME} does not beat the first stage it reranks: validation MRR")
        assert d.reason.endswith("; results stay in first-stage order")


def test_the_general_model_is_chosen_only_where_it_validates_best() -> None:
    tie = decide_install(NAME, BETTER, FIRST, BETTER.copy())
    assert (tie.install, tie.use, tie.general_valid_mrr) == (True, "own", mrr(BETTER))  # a tie keeps the own
    assert tie.reason.endswith(f"and the general model's {mrr(BETTER):.3f}")
    below = decide_install(NAME, BETTER, FIRST, WORSE)  # the own model above the general one: the own
    assert (below.install, below.use, below.general_valid_mrr) == (True, "own", mrr(WORSE))
    above = decide_install(NAME, BETTER, FIRST, np.ones(N))  # the general model at MRR 1.0
    assert (above.install, above.use, above.general_valid_mrr, above.valid_mrr) == (False, "general", 1.0,
                                                                                  mrr(BETTER))
    assert above.reason.startswith(f"the general model validates best: {NAME}'s validation MRR 0.672")
    assert above.reason.endswith("and the general model's 1.000; the general model reranks")
    gen = decide_install(NAME, WORSE, FIRST, BETTER)
    assert (gen.install, gen.use) == (False, "general")
    for general in (WORSE, FIRST.copy()):  # not above the first stage: its order stays
        d = decide_install(NAME, WORSE, FIRST, general)
        assert (d.install, d.use, d.general_valid_mrr) == (False, "first_stage", mrr(general))


def test_nothing_to_validate_on_or_nothing_trained() -> None:
    d = decide_install(NAME, BETTER, NONE)
    assert (d.install, d.use, d.valid_mrr, d.delta, d.queries, d.first_stage_valid_mrr) == (
        False, "first_stage", None, None, 0, 0.0)
    assert d.reason == "no validation queries to compare it with the first stage"
    d = decide_install(None, None, FIRST)
    assert (d.install, d.use, d.variant, d.queries, d.reason) == (False, "first_stage", None, N,
                                                                  "no variant was trained")
    d = decide_install(NAME, None, FIRST)  # named, but no ranks: nothing trained to install
    assert (d.install, d.use) == (False, "first_stage")
    d = decide_install(None, None, FIRST, BETTER)  # too few links to train one: the general model
    assert (d.install, d.use, d.general_valid_mrr) == (False, "general", mrr(BETTER))
    assert d.reason == "no variant was trained: the general model (trained on other projects' links) reranks"
    d = decide_install(NAME, BETTER, NONE, NONE)
    assert (d.use, d.general_valid_mrr, d.queries) == ("general", None, 0)
    assert d.reason.startswith("no validation queries to compare it with the first stage: the general model")


def test_install_always_installs_what_validation_would_refuse_and_still_reports_it() -> None:
    for general in (None, BETTER):
        d = decide_install(NAME, WORSE, FIRST, general, rule="always")
        assert (d.install, d.use, d.valid_mrr, d.queries) == (True, "own", mrr(WORSE), N)
        assert d.delta is not None and d.delta["diff"] < 0
        assert d.reason.startswith(f"{ALWAYS}: validation MRR 0.336 against the first stage's 0.531")
        assert not decide_install(NAME, WORSE, FIRST, general).install  # auto refuses it
    d = decide_install(NAME, WORSE, NONE, rule="always")  # nothing to validate on
    assert (d.install, d.use, d.valid_mrr, d.queries) == (True, "own", None, 0)
    assert d.reason == f"{ALWAYS}: no validation queries to compare it with the first stage"
    for name, ranks in ((None, None), (NAME, None)):  # nothing was trained: nothing to install
        for first in (FIRST, NONE):
            d = decide_install(name, ranks, first, rule="always")
            assert not d.install and d.use == "first_stage"


def test_the_rule_is_compared_by_value_not_identity() -> None:
    """A rule read from argv or a file is another string object than the literal: it must decide alike."""
    always = "".join(["al", "ways"])
    assert always is not "always"  # noqa: F632 - the point of the test
    assert decide_install(NAME, WORSE, FIRST, rule=always).install  # type: ignore[arg-type]
    assert decide_install(NAME, WORSE, NONE, rule=always).install  # type: ignore[arg-type]


def test_too_few_validation_queries_leave_the_choice_to_the_general_model() -> None:
    """Below MIN_DECISION_QUERIES the figures do not decide: the general model reranks even where the own model
    validated above it and it validated below the first stage (as with no validation queries); without a general
    model the figures decide as before; "always" installs as asked; at the bound the figures decide."""
    few = MIN_DECISION_QUERIES - 1
    first, better, worse = FIRST[:few], BETTER[:few], WORSE[:few]
    d = decide_install(NAME, better, first, worse)
    assert (d.install, d.use, d.queries, d.valid_mrr) == (False, "general", few, mrr(better))
    assert d.reason.startswith(f"too few validation queries to choose on (fewer than {MIN_DECISION_QUERIES}): "
                               f"{NAME}'s validation MRR")
    assert d.reason.endswith("; the general model (trained on other projects' links) reranks")
    assert decide_install(NAME, better, first).use == "own"  # no general model: the figures
    assert decide_install(NAME, worse, first, better, rule="always").install
    enough = MIN_DECISION_QUERIES
    at = decide_install(NAME, BETTER[:enough], FIRST[:enough], WORSE[:enough])
    assert (at.install, at.use, at.queries) == (True, "own", enough)
