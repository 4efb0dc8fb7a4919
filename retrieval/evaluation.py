"""The chronological duplicate-retrieval protocol (see the shared data README) and its metrics.

- Queries: tickets with `duplicate_of` set, created in the evaluated period.
- Candidates: every ticket created strictly before the query (optionally only within a window of days).
- Hit: any earlier member of the query's duplicate group (the master included).
- Rank of the first hit, counting ties against the system: 1 + the number of non-hit candidates whose
  score is at least the best hit's score.
- Metrics: RR@k (share of queries with a hit in the top k) and MRR, each with a 95% bootstrap interval.

Scores are computed over each query's whole candidate pool (tickets are kept in time order and the pool is
a prefix of it), so "created before" is a filter inside the search, never a re-sort of a global top k.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

KS: tuple[int, ...] = (1, 5, 10, 20, 100)
EASY_SECONDS = 3600


@dataclass
class EvalSet:
    """Tickets in time order with their duplicate groups."""

    row_ids: np.ndarray
    ids: list[str]
    titles: list[str]
    bodies: list[str]
    created: np.ndarray  # datetime64[s], non-decreasing
    group: np.ndarray  # group index per ticket; singletons get their own
    is_dup: np.ndarray  # bool: duplicate_of is set

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_records(cls, records: Sequence[Mapping[str, Any]],
                     extra_links: Sequence[tuple[str, str]] = ()) -> EvalSet:
        """records: dicts with row_id, id, title, body, created (datetime), duplicate_of. `extra_links`: more
        duplicate pairs (agents' confirmed decisions), joined into the groups like `duplicate_of` links; the
        later-created ticket of each counts as a duplicate."""
        recs = sorted(records, key=lambda r: (r["created"], r["row_id"]))
        ids = [r["id"] for r in recs]
        pos = {tid: i for i, tid in enumerate(ids)}
        parent = list(range(len(recs)))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for i, r in enumerate(recs):
            d = r.get("duplicate_of")
            if d is not None and d in pos:
                a, b = find(i), find(pos[d])
                if a != b:
                    parent[a] = b
        linked = np.array([r.get("duplicate_of") is not None and r["duplicate_of"] in pos for r in recs])
        for x, y in extra_links:
            if x in pos and y in pos and x != y:
                a, b = find(pos[x]), find(pos[y])
                if a != b:
                    parent[a] = b
                linked[max(pos[x], pos[y])] = True  # the later of the two (records are in time order)
        roots = np.array([find(i) for i in range(len(recs))], dtype=np.int64)
        return cls(
            row_ids=np.array([r["row_id"] for r in recs], dtype=np.int64),
            ids=ids,
            titles=[r.get("title") or "" for r in recs],
            bodies=[r.get("body") or "" for r in recs],
            created=np.array([np.datetime64(r["created"], "s") for r in recs], dtype="datetime64[s]"),
            group=roots,
            is_dup=linked,
        )

    def queries(self, since: datetime | None = None, until: datetime | None = None) -> np.ndarray:
        """Indices of duplicates created in [since, until)."""
        m = self.is_dup.copy()
        if since is not None:
            m &= self.created >= np.datetime64(since, "s")
        if until is not None:
            m &= self.created < np.datetime64(until, "s")
        return np.flatnonzero(m)

    def subset(self, items: np.ndarray) -> EvalSet:
        """The tickets at `items` (ascending, so still in time order), with their groups as in the whole set."""
        items = np.asarray(items, dtype=np.int64)
        return EvalSet(self.row_ids[items], [self.ids[i] for i in items], [self.titles[i] for i in items],
                       [self.bodies[i] for i in items], self.created[items], self.group[items], self.is_dup[items])

    def pool(self, q: int, window_days: int | None = None) -> np.ndarray:
        """Indices of the candidates of query q: created strictly before it (and within the window)."""
        end = int(np.searchsorted(self.created, self.created[q], side="left"))
        start = 0
        if window_days is not None:
            start = int(np.searchsorted(self.created, self.created[q] - np.timedelta64(window_days, "D"), "left"))
        return np.arange(start, end)

    def is_easy(self, q: int) -> bool:
        """Filed within an hour of an earlier group member, or with an identical title."""
        earlier = self.pool(q)
        members = earlier[self.group[earlier] == self.group[q]]
        if len(members) == 0:
            return False
        gap = (self.created[q] - self.created[members]).astype("timedelta64[s]").astype(np.int64)
        if (gap < EASY_SECONDS).any():
            return True
        t = _norm_title(self.titles[q])
        return any(_norm_title(self.titles[m]) == t for m in members)


def _norm_title(t: str) -> str:
    return re.sub(r"\s+", " ", t).strip().lower()


@dataclass
class QueryPool:
    """One query's candidate pool with each method's scores over it."""

    q: int
    pool: np.ndarray  # candidate indices into the EvalSet
    hits: np.ndarray  # bool over pool
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # method -> scores over pool
    _top: dict[tuple[str, int], np.ndarray] = field(default_factory=dict, repr=False)

    def top(self, method: str, depth: int) -> np.ndarray:
        """Pool positions of the method's `depth` best candidates, best first (ties keep pool order)."""
        key = (method, depth)
        if key not in self._top:
            s = self.scores[method]
            if depth >= len(s):
                idx = np.argsort(-s, kind="stable")
            else:
                part = np.argpartition(-s, depth - 1)[:depth]
                idx = part[np.lexsort((part, -s[part]))]
            self._top[key] = idx
        return self._top[key]


def first_hit_rank(scores: np.ndarray, hits: np.ndarray) -> int:
    """1-based rank of the best-scored hit; ties with non-hits count against the system."""
    best = scores[hits].max()
    return 1 + int(((scores >= best) & ~hits).sum())


def build_pools(
    ev: EvalSet,
    queries: np.ndarray,
    scorers: Mapping[str, Callable[[int, np.ndarray], np.ndarray]],
    window_days: int | None = None,
    exclude_easy: bool = False,
) -> list[QueryPool]:
    """Score each query's pool with every scorer. Queries with no earlier group member are skipped."""
    out: list[QueryPool] = []
    for q in queries:
        q = int(q)
        pool = ev.pool(q, window_days)
        hits = ev.group[pool] == ev.group[q]
        if not hits.any() or (exclude_easy and ev.is_easy(q)):
            continue
        qp = QueryPool(q=q, pool=pool, hits=hits)
        for name, fn in scorers.items():
            qp.scores[name] = np.asarray(fn(q, pool), dtype=np.float64)
        out.append(qp)
    return out


def metrics_from_ranks(ranks: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """RR@k and MRR with their query count and 95% bootstrap intervals."""
    ranks = np.asarray(ranks, dtype=np.float64)
    n = len(ranks)
    out: dict[str, Any] = {"queries": n}
    if n == 0:
        for k in KS:
            out[f"RR@{k}"] = None
        out["MRR"] = None
        return out
    rng = np.random.default_rng(seed)
    boot = rng.integers(0, n, size=(n_boot, n))
    per_query = {f"RR@{k}": (ranks <= k).astype(np.float64) for k in KS}
    per_query["MRR"] = 1.0 / ranks
    ci: dict[str, list[float]] = {}
    for name, vals in per_query.items():
        out[name] = float(vals.mean())
        samples = vals[boot].mean(axis=1)
        ci[name] = [float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5))]
    out["ci95"] = ci
    return out


def evaluate(
    pools: Sequence[QueryPool], score_fn: Callable[[QueryPool], np.ndarray]
) -> tuple[dict[str, Any], np.ndarray]:
    """Metrics of a method given as a function of the pool's precomputed scores. Returns (metrics, ranks)."""
    ranks = np.array([first_hit_rank(score_fn(p), p.hits) for p in pools], dtype=np.float64)
    return metrics_from_ranks(ranks), ranks


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, metric: str = "MRR", n_boot: int = 2000, seed: int = 0
) -> dict[str, float]:
    """Difference b - a on the same queries, with a 95% paired bootstrap interval."""
    def per_query(r: np.ndarray) -> np.ndarray:
        if metric == "MRR":
            return 1.0 / r
        return (r <= int(metric.split("@")[1])).astype(np.float64)

    da, db = per_query(np.asarray(a, float)), per_query(np.asarray(b, float))
    diff = db - da
    if not len(diff):  # no queries: no difference to estimate
        return {"diff": 0.0, "lo": 0.0, "hi": 0.0}
    rng = np.random.default_rng(seed)
    boot = diff[rng.integers(0, len(diff), size=(n_boot, len(diff)))].mean(axis=1)
    return {"diff": float(diff.mean()), "lo": float(np.percentile(boot, 2.5)), "hi": float(np.percentile(boot, 97.5))}


def markdown_table(methods: Mapping[str, Mapping[str, Any]], title: str | None = None) -> str:
    lines = []
    if title:
        lines += [f"### {title}", ""]
    head = ["method", "queries"] + [f"RR@{k}" for k in KS] + ["MRR", "MRR 95% CI"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for name, m in methods.items():
        if m.get("queries", 0) == 0:
            lines.append(f"| {name} | 0 |" + " |" * (len(head) - 2))
            continue
        ci = m.get("ci95", {}).get("MRR", [float("nan")] * 2)
        cells = ([name, str(m["queries"])] + [f"{m[f'RR@{k}']:.3f}" for k in KS]
                 + [f"{m['MRR']:.3f}", f"{ci[0]:.3f}-{ci[1]:.3f}"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
