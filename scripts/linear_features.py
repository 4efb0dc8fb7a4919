"""Candidate pair inputs for the linear reranker, measured before any is built into the product.

Mines an experiment index's lists once (as `ticketsearch experiment` does: train, validation, test, and the
validation folds over time), then fits the linear model (`rerank-linear`: the same logistic regression on the
same training pairs) on its pair inputs plus each named set of extra columns, and reports validation MRR pooled
over the folds (what the install decision reads) and the test period's RR@10 / MRR, with the paired difference
against the pair inputs alone. Feature sets are chosen on the pooled validation figure, never on test.

    python scripts/linear_features.py --index runs/hive/index --out docs/linear_features_hive.json \
        --sets cross rev_title idf_title ranks cross+bm25_title
    (--title-test: also the test period's title-only queries; --mix full,title: trained on titles too;
    --folds N: validation folds; --loss listwise: a softmax over each group instead of the pointwise fit)

The sets: cross (each query vector against the candidate's other vector), rev_title (the share of the query
title's words in the candidate), idf_title (IDF-weighted Jaccard of titles and of texts), idf_cover (the
IDF-weighted share of each title's words in the other text), cover_c / cover_q (one of those each), bm25_title
(BM25 of the query's title alone over the best in its list), length (the candidate body's length), ranks (the
candidate's rank in the dense, title and BM25 orders of its list). IDF here is over the whole index.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from experiment_args import experiment_index_parser, mined_index

from ticketsearch.atomic import atomic_write_json
from ticketsearch.index_data.records import parse_datetime
from ticketsearch.pipeline.folds import encoder_learned_before, fold_periods, held_out_periods
from ticketsearch.pipeline.general import L2
from ticketsearch.pipeline.mining import Mined, build_train_data, mine
from ticketsearch.rerank.pair_features import words
from ticketsearch.rerank.train import RankList, TrainData, fit_logistic, reranked_ranks
from ticketsearch.retrieval.evaluation import metrics_from_ranks
from ticketsearch.retrieval.query_kinds import parse_kinds

Extra = Callable[[int, Sequence[int]], np.ndarray]  # query item, candidates -> [N, k]


@dataclass
class Period:
    mined: Mined
    data: TrainData


class Features:
    """Extra pair columns computed from the index's texts and vectors (queries are the index's own tickets)."""

    def __init__(self, inp: Any, mined_lists: Sequence[Mined]) -> None:
        ev = inp.ev
        self.inp = inp
        self.tw = [words(t) for t in ev.titles]
        self.bw = [words(b) for b in ev.bodies]
        self.aw = [a | b for a, b in zip(self.tw, self.bw)]
        df: dict[str, int] = {}
        for s in self.aw:
            for w in s:
                df[w] = df.get(w, 0) + 1
        n = len(self.aw)
        self.idf = {w: math.log(1.0 + (n - d + 0.5) / (d + 0.5)) for w, d in df.items()}
        self.blen = np.array([len(b) for b in ev.bodies], np.float64)
        self.lists = mined_lists
        self.n = n
        self.short: dict[int, Any] = {}  # short item -> ShortQuery (its ticket, its text)
        for m in mined_lists:
            for i, sq in enumerate(m.short):
                self.short[n + i] = sq

    def q_words(self, q: int) -> tuple[frozenset[str], frozenset[str]]:
        """The query's title words and all its words (a short query's text is both)."""
        if q < self.n:
            return self.tw[q], self.aw[q]
        w = words(self.short[q].text)
        return w, w

    def q_vectors(self, q: int) -> tuple[np.ndarray, np.ndarray]:
        """The query's whole and title vectors (a title query: its ticket's title vector, both)."""
        if q < self.n:
            return self.inp.dense[q], self.inp.title[q]
        t = self.inp.title[self.short[q].ticket]
        return t, t

    def _w(self, s: frozenset[str]) -> float:
        return sum(self.idf.get(w, 0.0) for w in s)

    def cross(self, q: int, cands: Sequence[int]) -> np.ndarray:
        """The query's title vector against the candidates' whole-ticket vectors, and the reverse."""
        d, t = self.inp.dense, self.inp.title
        c = np.asarray(cands)
        qd, qt = self.q_vectors(q)
        return np.stack([d[c] @ qt, t[c] @ qd], axis=1)

    def rev_title(self, q: int, cands: Sequence[int]) -> np.ndarray:
        """The share of the query title's words in the candidate's text, and in its title."""
        qt = self.q_words(q)[0]
        if not qt:
            return np.zeros((len(cands), 2))
        return np.array([[len(qt & self.aw[c]) / len(qt), len(qt & self.tw[c]) / len(qt)] for c in cands])

    def idf_title(self, q: int, cands: Sequence[int]) -> np.ndarray:
        """IDF-weighted Jaccard of the two titles, and of the two whole texts' word sets."""
        out = np.zeros((len(cands), 2))
        for i, c in enumerate(cands):
            qt, qa = self.q_words(q)
            for j, (a, b) in enumerate(((qt, self.tw[c]), (qa, self.aw[c]))):
                u = self._w(a | b)
                out[i, j] = self._w(a & b) / u if u else 0.0
        return out

    def idf_cover(self, q: int, cands: Sequence[int]) -> np.ndarray:
        """IDF-weighted share of the candidate title's words in the query text, and of the query title's in the
        candidate text (title_in_query and its reverse, weighted)."""
        out = np.zeros((len(cands), 2))
        qt, qa = self.q_words(q)
        wq = self._w(qt)
        for i, c in enumerate(cands):
            wc = self._w(self.tw[c])
            out[i, 0] = self._w(self.tw[c] & qa) / wc if wc else 0.0
            out[i, 1] = self._w(qt & self.aw[c]) / wq if wq else 0.0
        return out

    def cover_c(self, q: int, cands: Sequence[int]) -> np.ndarray:
        return self.idf_cover(q, cands)[:, :1]

    def cover_q(self, q: int, cands: Sequence[int]) -> np.ndarray:
        return self.idf_cover(q, cands)[:, 1:]

    def bm25_title_in(self, mined: Mined) -> Extra:
        """BM25 of the query's title alone against each candidate, divided by the best in its recorded list."""
        cache: dict[int, dict[int, float]] = {}

        def f(q: int, cands: Sequence[int]) -> np.ndarray:
            if q not in cache:
                rec = list(dict.fromkeys([*mined.recorded.get(q, []), *cands]))
                ev = self.inp.ev
                title = ev.titles[q] if q < self.n else self.short[q].text
                s = self.inp.bm25.score_rows(title, [int(ev.row_ids[x]) for x in rec]) if title else np.zeros(len(rec))
                top = max(float(np.max(s)) if len(s) else 0.0, 1e-9)
                cache[q] = {x: float(v) / top for x, v in zip(rec, s)}
            return np.array([[cache[q].get(c, 0.0)] for c in cands])
        return f

    def length(self, q: int, cands: Sequence[int]) -> np.ndarray:
        """The candidate body's log length, and whether it is empty."""
        b = self.blen[np.asarray(cands)]
        return np.stack([np.log1p(b) / 10.0, (b == 0).astype(np.float64)], axis=1)

    def ranks_in(self, mined: Mined) -> Extra:
        """1 / log2(1 + rank) of the dense, title and BM25 scores within the query's recorded list."""
        cache: dict[int, dict[int, np.ndarray]] = {}

        def f(q: int, cands: Sequence[int]) -> np.ndarray:
            if q not in cache:
                rec = mined.recorded.get(q, [])
                fs = [mined.first_stage.get((q, x), {}) for x in rec]
                cols = []
                for k in ("dense", "title", "bm25"):
                    s = np.array([x.get(k, 0.0) for x in fs])
                    order = np.argsort(-s, kind="stable")
                    r = np.empty(len(s))
                    r[order] = np.arange(1, len(s) + 1)
                    cols.append(1.0 / np.log2(1.0 + r))
                m = np.stack(cols, axis=1) if rec else np.zeros((0, 3))
                cache[q] = {x: m[i] for i, x in enumerate(rec)}
            row = cache[q]
            return np.stack([row.get(c, np.zeros(3)) for c in cands])
        return f


def extra_fn(feats: Features, names: Sequence[str], mined: Mined) -> Extra | None:
    fns: list[Extra] = []
    for n in names:
        fns.append(feats.ranks_in(mined) if n == "ranks" else feats.bm25_title_in(mined) if n == "bm25_title"
                   else getattr(feats, n))
    if not fns:
        return None
    return lambda q, c: np.concatenate([f(q, c) for f in fns], axis=1)


def rows(data: TrainData, extra: Extra | None, q: int, cands: Sequence[int]) -> np.ndarray:
    assert data.pair is not None
    base = np.stack([data.pair(q, c) for c in cands]).astype(np.float64)
    return base if extra is None else np.concatenate([base, extra(q, cands)], axis=1)


def fit(p: Period, extra: Extra | None, loss: str = "pointwise") -> tuple[np.ndarray, float]:
    xs, ys = [], []
    for g in p.mined.groups:
        cands = [*g.positives, *g.negatives]
        xs.append(rows(p.data, extra, g.query, cands))
        ys.append(np.array([1.0] * len(g.positives) + [0.0] * len(g.negatives)))
    if loss == "pointwise":
        w, b = fit_logistic(np.concatenate(xs), np.concatenate(ys), L2)
        return np.asarray(w), float(b)
    return fit_listwise(xs, ys, L2), 0.0


def fit_listwise(xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], l2: float) -> np.ndarray:
    """Weights minimising each group's softmax cross-entropy of its positives against its negatives (each
    positive against the group's negatives), averaged over the groups, plus l2 * |w|^2."""
    from scipy.optimize import minimize

    groups = [(x[y > 0], x[y == 0]) for x, y in zip(xs, ys) if (y > 0).any() and (y == 0).any()]

    def obj(w: np.ndarray) -> tuple[float, np.ndarray]:
        f, g = l2 * float(w @ w), 2 * l2 * w
        for pos, neg in groups:
            sn = neg @ w
            for xp in pos:
                s = np.concatenate([[xp @ w], sn])
                m = s.max()
                e = np.exp(s - m)
                z = e.sum()
                f += (m + math.log(z) - s[0]) / len(groups) / len(pos)
                pr = e / z
                g += (pr[0] * xp + pr[1:] @ neg - xp) / len(groups) / len(pos)
        return f, g

    res = minimize(obj, np.zeros(xs[0].shape[1]), jac=True, method="L-BFGS-B")
    return np.asarray(res.x)


def ranks_of(p: Period, extra: Extra | None, wb: tuple[np.ndarray, float], lists: Sequence[RankList]) -> np.ndarray:
    w, b = wb
    return reranked_ranks(lists, [rows(p.data, extra, r.query, r.candidates) @ w + b for r in lists])


def paired(a: np.ndarray, b: np.ndarray, n_boot: int = 2000) -> dict[str, float]:
    """Mean of a - b in reciprocal rank, with a 95% bootstrap interval."""
    d = 1.0 / a - 1.0 / b
    rng = np.random.default_rng(0)
    boot = d[rng.integers(0, len(d), (n_boot, len(d)))].mean(axis=1)
    return {"diff": float(d.mean()), "lo": float(np.quantile(boot, .025)), "hi": float(np.quantile(boot, .975))}


def main() -> None:
    ap = experiment_index_parser(__doc__)
    ap.add_argument("--sets", nargs="+", default=["cross", "rev_title", "idf_title", "idf_cover", "length",
                                                  "ranks"],
                    help="extra column sets, each tried alone; NAME+NAME tries them together")
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--loss", choices=["pointwise", "listwise"], default="pointwise")
    ap.add_argument("--title-test", action="store_true", help="also score the test period's title-only queries")
    ap.add_argument("--mix", default="full", help="the training kinds (full, full,title)")
    args = ap.parse_args()
    out: dict[str, Any] = {"index": str(args.index), "sets": {}}
    with mined_index(args, code=True, progress=True, tokens=False) as mi:
        train_before, valid_before = parse_datetime(args.train_before), parse_datetime(args.test_since)
        kinds = parse_kinds([args.mix], "--mix")
        if args.title_test or args.mix != "full":
            evk = parse_kinds(["full,title"])
            m0 = mine(mi.store, mi.inp, mi.manifest.fusion, mi.settings.fusion_depth, train_before, valid_before,
                      encoder=mi.encoder, train_kinds=kinds, eval_kinds=evk)
            d0, _, _ = build_train_data(mi.store, mi.inp, mi.encoder, args.index, m0, with_pair=True,
                                        progress=False, code=True, tokens=False)
            main_p = Period(m0, d0)
        else:
            main_p = Period(mi.mined, mi.base)
        periods = held_out_periods(fold_periods(train_before, valid_before, args.folds),
                                   encoder_learned_before(args.index), print)
        folds = []
        for a, b in periods:
            m = mine(mi.store, mi.inp, mi.manifest.fusion, mi.settings.fusion_depth, a, b, encoder=mi.encoder,
                     eval_kinds=(), train_kinds=kinds)
            if m.groups and m.valid:
                d, _, _ = build_train_data(mi.store, mi.inp, mi.encoder, args.index, m, with_pair=True,
                                           progress=False, code=True, tokens=False)
                folds.append(Period(m, d))
        print(f"{len(mi.mined.groups)} train / {len(mi.mined.valid)} valid / {len(mi.mined.test)} test; folds: "
              f"{[(len(f.mined.groups), len(f.mined.valid)) for f in folds]}", flush=True)
        feats = Features(mi.inp, [main_p.mined, *(f.mined for f in folds)])
        base_ranks: dict[str, np.ndarray] = {}
        for spec in ["base", *args.sets]:
            names = [] if spec == "base" else spec.split("+")
            pooled, test = [], None
            for i, p in enumerate([main_p, *folds]):
                extra = extra_fn(feats, names, p.mined)
                wb = fit(p, extra, args.loss)
                pooled.append(ranks_of(p, extra, wb, p.mined.valid))
                if i == 0:
                    test = ranks_of(p, extra, wb, p.mined.test)
                    weights = [round(float(x), 3) for x in wb[0]]
                    if "title" in p.mined.test_by_kind:
                        tt = ranks_of(p, extra, wb, p.mined.test_by_kind["title"])
            assert test is not None
            v = np.concatenate(pooled)
            if spec == "base":
                base_ranks = {"valid": v, "test": test}
            row: dict[str, Any] = {
                "valid_pooled": metrics_from_ranks(v), "test": metrics_from_ranks(test), "weights": weights,
                "vs_base": {"valid_mrr": paired(v, base_ranks["valid"]), "test_mrr": paired(test, base_ranks["test"])}}
            if main_p.mined.test_by_kind.get("title"):
                if spec == "base":
                    base_ranks["title"] = tt
                row["test_title"] = metrics_from_ranks(tt)
                row["vs_base"]["test_title_mrr"] = paired(tt, base_ranks["title"])
            out["sets"][spec] = row
            print(f"{spec:28s} valid pooled MRR {row['valid_pooled']['MRR']:.3f} ({len(v)}) "
                  f"[{row['vs_base']['valid_mrr']['diff']:+.3f}] | test RR@10 {row['test']['RR@10']:.3f} "
                  f"MRR {row['test']['MRR']:.3f} [{row['vs_base']['test_mrr']['diff']:+.3f}]", flush=True)
            if "test_title" in row:
                print(f"{'':28s} title-only test RR@10 {row['test_title']['RR@10']:.3f} MRR "
                      f"{row['test_title']['MRR']:.3f} [{row['vs_base']['test_title_mrr']['diff']:+.3f}]", flush=True)
            atomic_write_json(args.out, out)


if __name__ == "__main__":
    main()
