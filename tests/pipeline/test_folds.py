"""Validation folds over time (`ticketsearch.pipeline.folds`): earlier periods whose queries join the validation
period's in the install decision, each scored by models trained only on the links that precede it."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from ticketsearch.errors import QueryError
from ticketsearch.index_dir import IndexDir
from ticketsearch.pipeline import variants
from ticketsearch.pipeline.experiment import ExperimentConfig, run_experiment
from ticketsearch.pipeline.folds import (
    OCCAM_MARGIN,
    Fold,
    choose_variant,
    encoder_learned_before,
    fold_periods,
    held_out_periods,
)
from ticketsearch.pipeline.install import decide_install, mrr
from ticketsearch.pipeline.parts import load_manifest, open_store
from ticketsearch.pipeline.training import mine, run_rerankers, time_split, train_index
from ticketsearch.pipeline.variants import VariantResult, pooled_mrr, train_variant
from ticketsearch.rerank.train import TrainConfig
from ticketsearch.results import MAX_VALIDATION_FOLDS, TrainParams
from ticketsearch.retrieval.eval_index import load_eval_inputs
from ticketsearch.retrieval.manifest import Manifest

NAME = "rerank-cross+pair"


def test_fold_periods_step_back_from_the_train_period_end() -> None:
    tb, vb = datetime(2015, 1, 1), datetime(2016, 1, 1)
    assert fold_periods(tb, vb, 0) == []
    assert fold_periods(tb, vb, 2) == [(datetime(2014, 1, 1), tb), (datetime(2013, 1, 1), datetime(2014, 1, 1))]
    short = fold_periods(datetime(2015, 3, 1), datetime(2015, 3, 11), 3)  # ten days, three times
    assert [(a.day, b.day) for a, b in short] == [(19, 1), (9, 19), (30, 9)] and short[2][0].month == 1
    for bad in (-1, MAX_VALIDATION_FOLDS + 1):  # the library refuses what the CLI and the API refuse
        with pytest.raises(QueryError, match=f"validation folds must be 0 to {MAX_VALIDATION_FOLDS}"):
            fold_periods(tb, vb, bad)
        with pytest.raises(ValidationError):
            TrainParams(validation_folds=bad)
    assert TrainParams(validation_folds=MAX_VALIDATION_FOLDS).validation_folds == MAX_VALIDATION_FOLDS


def test_every_door_refuses_a_validation_period_that_ends_before_it_starts(tmp_path: Path) -> None:
    """One rule (`results.period_problem`): the library, the CLI and a training job's parameters refuse
    valid_before at or before train_before, before anything is read; dates are ISO strings, read as naive UTC."""
    from typer.testing import CliRunner

    from ticketsearch.errors import RequestError
    from ticketsearch.service.cli import app

    early, late = datetime(2016, 1, 1), datetime(2015, 1, 1)
    for vb in (late, early):
        with pytest.raises(RequestError, match="valid_before must be after train_before"):
            train_index(tmp_path / "none", early, vb, "auto", None, TrainConfig())
        with pytest.raises(ValidationError, match="valid_before must be after train_before"):
            TrainParams(train_before=early.isoformat(), valid_before=vb.isoformat())  # type: ignore[arg-type]
        res = CliRunner().invoke(app, ["train", "--index", str(tmp_path / "none"), "--train-before",
                                       early.isoformat(), "--valid-before", vb.isoformat()])
        assert res.exit_code == 2 and "valid_before must be after train_before" in res.output, res.output
    # the same instant written with two offsets is the same instant: not after
    with pytest.raises(RequestError):
        train_index(tmp_path / "none", datetime(2016, 1, 1, 1, tzinfo=UTC), datetime(2016, 1, 1, 1), "auto",
                    None, TrainConfig())
    assert not (tmp_path / "none").exists()
    with pytest.raises(ValidationError, match="ISO-8601"):
        TrainParams(train_before=1451606400)  # type: ignore[arg-type]  # a number is not a date
    p = TrainParams(train_before="2015-01-01T00:00:00Z", valid_before="2015-01-01T03:00:00+02:00")  # type: ignore[arg-type]
    assert p.train_before == datetime(2015, 1, 1) and p.valid_before == datetime(2015, 1, 1, 1)


def test_pooled_mrr_is_the_mrr_of_all_the_queries() -> None:
    main, a, b = np.array([1.0, 3.0, 2.0]), np.array([1.0, 10.0]), np.array([4.0])
    assert pooled_mrr(mrr(main), len(main), [a, b]) == pytest.approx(mrr(np.concatenate([main, a, b])))
    assert pooled_mrr(0.25, 4, []) == 0.25 and pooled_mrr(0.0, 0, []) == 0.0
    assert pooled_mrr(0.0, 0, [a]) == pytest.approx(mrr(a))


def test_the_decision_says_what_it_pooled() -> None:
    first, better = np.array([1, 2, 4, 1, 10, 3], float), np.array([1, 1, 2, 1, 5, 3], float)
    d = decide_install(NAME, better, first, folds=2)
    assert d.install and d.folds == 2 and d.to_dict()["folds"] == 2
    assert "over 6 queries (the validation period and 2 earlier folds)" in d.reason
    assert "(the validation period and 1 earlier fold)" in decide_install(NAME, better, first, folds=1).reason
    plain = decide_install(NAME, better, first)
    assert plain.folds == 0 and "over 6 queries (difference" in plain.reason


def test_a_fold_trains_on_what_precedes_it_and_its_queries_join_the_decision(
        index_dir: Path, tmp_path: Path, encoder, settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """One fold on 1,000 generated tickets: it holds the queries of the period just before validation, its
    model trained only on the links before that period; the decision pools its ranks with validation's (the
    first stage's and the model's MRR are the pooled ones), says so, and the validation period's own decision
    is kept beside it. Nothing of the fold's model is left in the output directory."""
    idx = tmp_path / "idx"
    shutil.copytree(index_dir, idx)
    d = IndexDir(idx)
    with open_store(d, read_only=False) as store:
        inp = load_eval_inputs(idx, store, encoder)
        tb, vb = time_split(inp, 0.7, 0.15)
        fusion = load_manifest(d).fusion
        with pytest.raises(QueryError, match="validation folds"):  # refused before anything is trained
            run_rerankers(store, inp, encoder, idx, fusion, settings.fusion_depth, tb, vb, tmp_path / "x",
                          variants=[NAME], validation_folds=MAX_VALIDATION_FOLDS + 1, progress=False,
                          log=lambda m: None)
        assert not (tmp_path / "x").exists()
        seen: list[tuple[datetime, datetime, datetime]] = []  # each training: its last train query, its validation

        def watched(name: str, data: Any, fs: Any, schema: Any, mined: Any, *args: Any, **kw: Any) -> Any:
            created = [inp.ev.created[g.query].astype("datetime64[s]").astype(datetime) for g in mined.groups]
            valid = [inp.ev.created[r.query].astype("datetime64[s]").astype(datetime) for r in mined.valid]
            seen.append((max(created), min(valid), max(valid)))
            return train_variant(name, data, fs, schema, mined, *args, **kw)

        monkeypatch.setattr(variants, "train_variant", watched)
        res = run_rerankers(store, inp, encoder, idx, fusion, settings.fusion_depth, tb, vb, tmp_path / "out",
                            variants=[NAME], tcfg=TrainConfig(epochs=2, patience=2, seed=0), progress=False,
                            log=lambda m: None, install=False, validation_folds=1)
        (start, end), = fold_periods(tb, vb, 1)
    # the model of the train period, then the fold's: each trained before what it is scored on
    assert len(seen) == 2
    assert seen[0][0] < tb <= seen[0][1] and seen[0][2] < vb
    assert seen[1][0] < start <= seen[1][1] and seen[1][2] < end
    with open_store(d, read_only=False) as store:
        before_fold = mine(store, inp, fusion, settings.fusion_depth, start, end)
    (fold,) = res["folds"]
    assert (fold["start"], fold["end"]) == (start.isoformat(), end.isoformat()) and end == tb
    n_valid, n_fold = res["valid"][NAME]["queries"], fold["queries"]
    assert n_valid >= 10 and n_fold >= 10, (n_valid, n_fold)
    # the fold's model learned from the links before the fold, not from the fold's own queries
    assert fold["train_queries"] == len(before_fold.groups) < res["train_pairs"]["queries"]
    assert len(before_fold.valid) == n_fold
    alone, pooled = res["decision_without_folds"], res["decision"]
    assert (alone["queries"], alone["folds"], pooled["queries"], pooled["folds"]) == (n_valid, 0, n_valid + n_fold, 1)
    assert "the validation period and 1 earlier fold" in pooled["reason"]

    def pool(main: dict, other: dict) -> float:
        return (main["MRR"] * main["queries"] + other["MRR"] * other["queries"]) / (main["queries"] + other["queries"])

    assert pooled["first_stage_valid_mrr"] == pytest.approx(pool(res["first_stage"]["valid"],
                                                                 fold["methods"]["first_stage"]))
    assert pooled["valid_mrr"] == pytest.approx(pool(res["valid"][NAME], fold["methods"][NAME]))
    assert pooled["general_valid_mrr"] == pytest.approx(pool(res["valid"]["rerank-general"],
                                                             fold["methods"]["rerank-general"]))
    assert alone["valid_mrr"] == pytest.approx(res["valid"][NAME]["MRR"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [NAME]

    # an encoder tuned on the links before the validation period has learned from the fold: it is skipped
    m = Manifest.load(idx)
    m.extra = {**m.extra, "tuned_from": "minilm", "tuning": {"train_before": start.isoformat()}}
    m.save(idx)
    assert encoder_learned_before(idx) == start and encoder_learned_before(index_dir) is None
    m.extra["tuning"]["valid_before"] = tb.isoformat() + "+00:00"  # chosen on the links up to then: the fold's
    m.save(idx)
    assert encoder_learned_before(idx) == tb
    said: list[str] = []
    with open_store(d, read_only=False) as store:
        again = run_rerankers(store, inp, encoder, idx, fusion, settings.fusion_depth, tb, vb, tmp_path / "out2",
                              variants=[NAME], tcfg=TrainConfig(epochs=1, patience=1, seed=0), progress=False,
                              log=said.append, install=False, validation_folds=1)
    assert "folds" not in again and again["folds_skipped"] == 1 and again["decision"]["folds"] == 0
    assert again["decision"]["queries"] == n_valid
    assert any("1 validation fold(s) skipped: the encoder was tuned and chosen on the links before" in x
               for x in said), said


def test_only_the_periods_the_encoder_never_learned_from_are_held_out() -> None:
    periods = fold_periods(datetime(2015, 1, 1), datetime(2016, 1, 1), 3)  # 2014, 2013, 2012
    said: list[str] = []
    assert held_out_periods(periods, None, said.append) == periods and not said
    assert held_out_periods(periods, datetime(2013, 1, 1), said.append) == periods[:2]
    assert said == ["    1 validation fold(s) skipped: the encoder was tuned and chosen on the links before "
                    "2013-01-01, theirs among them"]
    assert held_out_periods(periods, datetime(2013, 6, 1), said.append) == periods[:1]  # 2013 in part: out
    assert held_out_periods(periods, datetime(2015, 1, 1), said.append) == []
    aware = fold_periods(datetime(2015, 1, 1, tzinfo=UTC), datetime(2016, 1, 1, tzinfo=UTC), 2)  # a request's dates
    assert held_out_periods(aware, datetime(2014, 1, 1), said.append) == aware[:1]


def result(name: str, valid: list[float]) -> VariantResult:
    ranks = np.array(valid)
    return VariantResult(name, ranks, np.zeros(0), [], 0.0, Path(name), mrr(ranks))


def test_the_variant_is_chosen_on_every_pooled_query() -> None:
    """Validation alone prefers A (MRR .75 against .5 on two queries); the fold's 6 queries prefer B by more:
    pooled, B. Without folds, and on equal figures, the first listed."""
    a, b = result("A", [1, 2]), result("B", [2, 2])
    fold = Fold(datetime(2014, 1, 1), datetime(2015, 1, 1), 10, np.ones(6), None,
                {"A": np.full(6, 4.0), "B": np.ones(6)})
    trained = {"A": a, "B": b}
    assert choose_variant(trained, []) is a and choose_variant(trained, [fold]) is b
    assert choose_variant({}, [fold]) is None and choose_variant({}, []) is None
    same = result("C", [1, 2])
    assert choose_variant({"A": a, "C": same}, []) is a and choose_variant({"C": same, "A": a}, []) is same
    assert fold.to_dict()["methods"]["B"]["MRR"] == 1.0 and fold.to_dict()["queries"] == 6


def test_the_linear_variant_is_chosen_unless_another_validates_better_by_more_than_the_margin() -> None:
    """The simplest-variant rule (OCCAM_MARGIN): over 100 validation queries, a fusion model ahead of the linear
    one by .015 MRR is not chosen, one ahead by .03 is; pooled over a fold the same rule holds on the pooled MRR."""
    lin = result("rerank-linear", [1.0] * 50 + [2.0] * 50)  # MRR .75
    near = result("rerank-cross+pair", [1.0] * 53 + [2.0] * 47)  # .765
    far = result("rerank-cross+pair+code", [1.0] * 56 + [2.0] * 44)  # .78
    assert choose_variant({"rerank-cross+pair": near, "rerank-linear": lin}, []) is lin
    assert choose_variant({"rerank-cross+pair+code": far, "rerank-linear": lin}, []) is far
    assert choose_variant({"rerank-cross+pair": near, "rerank-cross+pair+code": far}, []) is far  # no linear: best
    # a fold where the fusion model is far ahead (100 queries, MRR 1.0 against .5): pooled, it is chosen
    fold = Fold(datetime(2014, 1, 1), datetime(2015, 1, 1), 10, np.ones(100), None,
                {"rerank-linear": np.full(100, 2.0), "rerank-cross+pair": np.ones(100)})
    assert choose_variant({"rerank-cross+pair": near, "rerank-linear": lin}, [fold]) is near
    assert 0.015 < OCCAM_MARGIN < 0.03


def test_every_door_refuses_too_many_folds_before_any_work(tmp_path: Path, settings) -> None:
    cfg = ExperimentConfig(data=tmp_path / "none.jsonl", out=tmp_path / "exp", schema="jira",
                           train_before=datetime(2015, 1, 1), test_since=datetime(2016, 1, 1),
                           validation_folds=MAX_VALIDATION_FOLDS + 1)
    with pytest.raises(QueryError, match="validation folds must be"):
        run_experiment(cfg, settings, log=lambda m: None)
    assert not (tmp_path / "exp").exists()
    with pytest.raises(QueryError, match="validation folds must be"):
        train_index(tmp_path / "none", None, None, NAME, settings, TrainConfig(), validation_folds=-1)
