"""The evaluation harness on a tiny hand-made dataset whose metrics are computed by hand."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest

from ticketsearch.retrieval.evaluation import EvalSet, build_pools, evaluate, first_hit_rank, metrics_from_ranks

D0 = datetime(2020, 1, 1)


def rec(i: int, tid: str, day: float, dup: str | None = None, title: str | None = None) -> dict:
    return {"row_id": i, "id": tid, "title": title or f"title {tid}", "body": "", "created": D0 + timedelta(days=day),
            "duplicate_of": dup}


# A(d1) B(d2) C(d3, dup A) D(d4) E(d5, dup A) F(d6, dup D) J(d6 same instant as F, dup D)
# G(d7, dup of H) H(d8): G's master is later, so G has no earlier group member.
RECORDS = [
    rec(0, "A", 1), rec(1, "B", 2), rec(2, "C", 3, "A"), rec(3, "D", 4), rec(4, "E", 5, "A"),
    rec(5, "F", 6, "D"), rec(6, "J", 6, "D"), rec(7, "G", 7, "H"), rec(8, "H", 8),
]
# Hand-set scores: SCORES[query][candidate]
SCORES = {
    "C": {"A": 0.5, "B": 0.9},  # hit A at rank 2
    "E": {"A": 0.3, "B": 0.8, "C": 0.8, "D": 0.8},  # best hit C ties with B and D: rank 3 (ties count against)
    "F": {"A": 0.1, "B": 0.2, "C": 0.3, "D": 1.0, "E": 0.0},  # rank 1
    "J": {"A": 0.9, "B": 0.2, "C": 0.3, "D": 0.5, "E": 0.0},  # F is not a candidate (same instant): rank 2
    "G": {},
}


@pytest.fixture()
def ev() -> EvalSet:
    return EvalSet.from_records(RECORDS)


def scorer(ev: EvalSet):
    def fn(q: int, pool: np.ndarray) -> np.ndarray:
        table = SCORES[ev.ids[q]]
        return np.array([table.get(ev.ids[c], 0.0) for c in pool])

    return fn


def test_groups_queries_and_pools(ev: EvalSet) -> None:
    g = dict(zip(ev.ids, ev.group))
    assert g["A"] == g["C"] == g["E"] and g["D"] == g["F"] == g["J"] and g["G"] == g["H"] and g["A"] != g["D"]
    assert [ev.ids[q] for q in ev.queries()] == ["C", "E", "F", "J", "G"]
    assert [ev.ids[q] for q in ev.queries(since=D0 + timedelta(days=5), until=D0 + timedelta(days=6, hours=1))] == [
        "E", "F", "J"]
    j = ev.ids.index("J")
    assert "F" not in [ev.ids[c] for c in ev.pool(j)]  # strictly before


def test_ranks_ties_and_skipped_query(ev: EvalSet) -> None:
    pools = build_pools(ev, ev.queries(), {"m": scorer(ev)})
    assert [ev.ids[p.q] for p in pools] == ["C", "E", "F", "J"]  # G has no earlier group member: skipped
    m, ranks = evaluate(pools, lambda p: p.scores["m"])
    assert list(ranks) == [2, 3, 1, 2]
    assert m["queries"] == 4
    assert m["RR@1"] == pytest.approx(0.25)
    assert m["RR@5"] == pytest.approx(1.0)
    assert m["MRR"] == pytest.approx((1 / 2 + 1 / 3 + 1 + 1 / 2) / 4)
    lo, hi = m["ci95"]["MRR"]
    assert lo <= m["MRR"] <= hi


def test_window_edge(ev: EvalSet) -> None:
    c = ev.ids.index("C")
    assert [ev.ids[i] for i in ev.pool(c, window_days=2)] == ["A", "B"]  # A is exactly 2 days earlier: kept
    assert [ev.ids[i] for i in ev.pool(c, window_days=1)] == ["B"]
    # one day: every query loses all of its earlier group members, so all are skipped
    assert build_pools(ev, ev.queries(), {"m": scorer(ev)}, window_days=1) == []
    # two days: C keeps A (edge), E keeps C and D (B drops out), F and J keep D and E
    pools = build_pools(ev, ev.queries(), {"m": scorer(ev)}, window_days=2)
    assert [ev.ids[p.q] for p in pools] == ["C", "E", "F", "J"]
    _, ranks = evaluate(pools, lambda p: p.scores["m"])
    assert list(ranks) == [2, 2, 1, 1]


def test_easy_duplicates() -> None:
    ev = EvalSet.from_records([
        rec(0, "M", 1, title="Disk full"), rec(1, "X", 1 + 0.5 / 24, "M", title="other words"),  # 30 min later
        rec(2, "Y", 3, "M", title="  disk   FULL "),  # identical title after normalising
        rec(3, "Z", 9, "M", title="something else"),
    ])
    assert [ev.is_easy(q) for q in ev.queries()] == [True, True, False]
    pools = build_pools(ev, ev.queries(), {"m": lambda q, p: np.zeros(len(p))}, exclude_easy=True)
    assert [ev.ids[p.q] for p in pools] == ["Z"]


def test_first_hit_rank_direct() -> None:
    s = np.array([0.9, 0.5, 0.5, 0.1])
    assert first_hit_rank(s, np.array([False, True, False, False])) == 3
    assert first_hit_rank(s, np.array([True, False, False, True])) == 1


def test_metrics_of_no_queries_and_all_misses() -> None:
    assert metrics_from_ranks(np.array([]))["MRR"] is None
    m = metrics_from_ranks(np.array([500.0, 200.0]))
    assert m["RR@100"] == 0.0 and m["MRR"] == pytest.approx((1 / 500 + 1 / 200) / 2)
