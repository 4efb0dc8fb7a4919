"""Backlog dedupe: every ticket (or every ticket since a date) against the earlier tickets the first stage finds;
the pairs whose calibrated duplicate probability reaches the threshold stored for the chosen precision, grouped
into clusters.

Each output row (JSONL; CSV: one row per link, the same columns flattened):
`{"cluster": N, "members": [ids, oldest first: the proposed master first], "links": [{"a", "b", "probability",
"known"}]}`, where `known` says the pair is already linked in the data (the same `duplicate_of` group).

The threshold. Training stores thresholds chosen on its validation lists, whose queries are all duplicates;
in a backlog most tickets duplicate nothing, so the same probability means a lower precision (measured on demo
data: 0.21 at the 0.8 threshold, 0.47 at the 0.9 one, docs/RESULTS.md). `calibrate_since`/`calibrate_until`
name a period whose links are known (the validation period): dedupe compares every ticket of it the same way,
and takes the lowest probability whose precision there reaches the target. Without them, the stored threshold.

A run writes each ticket's pairs to `OUT.partial` as it goes (one line per ticket, flushed); a run that finds
that file (of the same settings) skips the tickets it holds, so an interrupted run resumes, and gives the same
output as an uninterrupted one. The output is written atomically at the end and the partial file removed.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ticketsearch.atomic import atomic_write_text
from ticketsearch.errors import ConflictError, QueryError
from ticketsearch.index_data.links import components, groups
from ticketsearch.requests import naive_utc
from ticketsearch.rerank.calibration import lowest_threshold_for_precision
from ticketsearch.results import calibration_problem

CANDIDATES = 10  # the reranked top candidates of each ticket that are considered
# A calibrated threshold establishes its precision only when the 95% lower bound of the precision of the pairs
# behind it is within this much of the target (on hadoop, 2015's threshold rested on 2 pairs: docs/RESULTS.md).
SLACK = 0.05


def wilson_lower(right: int, n: int, z: float = 1.96) -> float:
    """The lower end of the Wilson score interval (95%) of a proportion `right` of `n`."""
    if n == 0:
        return 0.0
    p = right / n
    centre = p + z * z / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - margin) / (1 + z * z / n))


@dataclass
class DedupeReport:
    tickets: int  # tickets compared (resumed ones included)
    resumed: int  # of them, read back from the partial file
    pairs: int  # pairs at or above the threshold
    new_pairs: int  # of them, not linked in the data
    clusters: int
    threshold: float
    precision: float
    seconds: float
    out: Path
    # How far the threshold's precision is established: "calibrated" (the calibration pairs' 95% lower bound is
    # within SLACK of the target), "uncertain" (it is not: too few pairs behind it), or "stored" (training's
    # threshold, chosen where every query is a duplicate: lower precision in a backlog).
    basis: str = "stored"
    precision_lower_bound: float | None = None


def compare(index: Any, tid: str, created: datetime, k: int, floor: float,
            group: dict[str, str]) -> list[dict[str, Any]]:
    """The ticket's pairs with earlier tickets whose probability reaches `floor`."""
    res = index.search(like=tid, before=created, k=k)
    return [{"a": h.id, "b": tid, "probability": h.probability, "known": group[h.id] == group[tid]}
            for h in res.hits if h.probability is not None and h.probability >= floor]


def calibrated_threshold(index: Any, precision: float, since: datetime, until: datetime, k: int = CANDIDATES,
                         progress: bool = True) -> tuple[float, dict[str, Any]]:
    """The lowest probability whose pairwise precision reaches `precision` when every ticket created in [since,
    until) is compared with the earlier ones (the links of that period are the truth)."""
    store = index.pipeline.store
    rows = store.ids_by_created(since, until)
    if not rows:
        raise QueryError(f"no tickets were created between {since:%Y-%m-%d} and {until:%Y-%m-%d} to calibrate on")
    group = groups_of(store)
    pairs = [p for tid, c in tqdm(rows, desc="calibrate", unit=" tickets", disable=not progress, mininterval=0.5)
             for p in compare(index, tid, c, k, 0.0, group)]
    t, how = threshold_on_pairs([p["probability"] for p in pairs], [p["known"] for p in pairs], precision)
    if t is None:
        raise ConflictError(f"no threshold reaches precision {precision} on the {len(rows)} tickets of "
                               f"{since:%Y-%m-%d} to {until:%Y-%m-%d} ({how['linked']} linked pairs of "
                               f"{len(pairs)})")
    return t, {"tickets": len(rows), **how}


def threshold_on_pairs(probs: list[float], known: list[bool], precision: float) -> tuple[float | None, dict[str, Any]]:
    """The lowest probability whose precision on these labelled pairs reaches `precision` (None: none does), and
    what backs it: how many pairs are at or above it (`behind`), how many of them are right, the precision there
    and its 95% lower bound."""


    p, y = np.asarray(probs, np.float64), np.asarray(known, bool)
    t, reached = lowest_threshold_for_precision(p, y, precision)
    how: dict[str, Any] = {"pairs": len(p), "linked": int(y.sum())}
    if t is None:
        return None, how
    kept = p >= t
    behind, right = int(kept.sum()), int(y[kept].sum())
    return t, {**how, "precision": reached, "behind": behind, "right": right,
               "lower_bound": round(wilson_lower(right, behind), 4)}


NO_RERANKER = ("dedupe needs a trained reranker (calibrated probabilities): train one first ('ticketsearch train', "
               "or POST /v1/collections/NAME/train)")


def threshold_for(reranker: Any, precision: float) -> float:
    """The stored threshold for `precision`: ConflictError where there is no reranker or none was reached (the
    collection's state: asking again will not help), QueryError for a precision training did not store."""
    if reranker is None:
        raise ConflictError(NO_RERANKER)
    try:
        t = reranker.duplicate_threshold(precision)
    except KeyError as exc:
        raise QueryError(str(exc.args[0])) from None
    if t is None:
        raise ConflictError(f"the reranker's validation data reached no threshold for precision {precision}: "
                            "calibrate on a labelled period instead")
    return float(t)


def check_ready(reranker: Any, precision: float, calibrated: bool) -> float | None:
    """What `dedupe` needs before it starts (it checks first; a service job checks when it is asked for, so that
    it is refused at once, never accepted and failed later): a reranker, and without a calibration period the
    stored threshold for `precision`, which it returns."""
    if calibrated:
        if reranker is None:
            raise ConflictError(NO_RERANKER)
        return None
    return threshold_for(reranker, precision)


def groups_of(store: Any) -> dict[str, str]:
    """ticket id -> the id of its duplicate group's root (tickets in no group map to themselves)."""
    rows = store.duplicate_links()
    return components((r[0] for r in rows), ((tid, dup) for tid, dup in rows if dup is not None))


def clusters(pairs: list[dict[str, Any]], created: dict[str, datetime]) -> list[dict[str, Any]]:
    """Connected components of the pairs; members oldest first (the proposed master first), clusters in the
    order of their oldest member."""
    ends = dict.fromkeys(x for p in pairs for x in (p["a"], p["b"]))
    comps = groups(ends, ((p["a"], p["b"]) for p in pairs))
    order = sorted(comps, key=lambda m: min((created[x], x) for x in m))
    out = []
    for n, members in enumerate(order, start=1):
        members = sorted(members, key=lambda x: (created[x], x))
        inside = set(members)
        links = [p for p in pairs if p["a"] in inside]
        out.append({"cluster": n, "members": members, "links": links})
    return out


def _resumed(partial: Path, key: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The tickets a run with the same settings already compared, and their pairs."""
    if not partial.is_file():
        return {}
    lines = partial.read_text("utf-8").splitlines()
    if not lines or json.loads(lines[0]) != key:
        return {}  # another run's (other settings): start over
    done = {}
    for line in lines[1:]:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            break  # a line cut by the interruption: that ticket is compared again
        done[rec["ticket"]] = rec["pairs"]
    return done


def dedupe(
    index: Any, out: Path, precision: float = 0.9, since: datetime | None = None, progress: bool = True,
    k: int = CANDIDATES, stop_after: int | None = None, log: Callable[[str], None] = print,
    calibrate_since: datetime | None = None, calibrate_until: datetime | None = None,
) -> DedupeReport:
    """Dedupe the tickets of `index` (a `TicketIndex`) created since `since` (all: None) into `out` (.jsonl or
    .csv). `stop_after`: stop after comparing that many tickets, leaving the partial file (tests the resume)."""

    out = Path(out)
    if out.suffix not in (".jsonl", ".csv"):
        raise QueryError(f"--out must end in .jsonl or .csv, got {out.name!r}")
    # the store's dates are naive UTC: so are these, whatever offset they were given with
    since, calibrate_since, calibrate_until = (None if x is None else naive_utc(x)
                                               for x in (since, calibrate_since, calibrate_until))
    problem = calibration_problem(calibrate_since, calibrate_until)
    if problem:
        raise QueryError(problem)
    t0 = time.perf_counter()
    pipeline = index.pipeline
    stored = check_ready(pipeline.reranker, precision, calibrate_since is not None)
    threshold = 0.0 if stored is None else stored  # calibrated: chosen below
    basis, lower = "stored", None
    if calibrate_since is None:
        log(f"warning: threshold {threshold:.3f} for precision {precision} is training's, chosen on validation "
            "queries that all have a duplicate; in a backlog most tickets have none, so expect a lower precision "
            "(calibrate on a labelled period: --calibrate-since/--calibrate-until)")
    else:
        assert calibrate_until is not None  # calibration_problem: both or neither
        threshold, how = calibrated_threshold(index, precision, calibrate_since, calibrate_until, k, progress)
        lower = how["lower_bound"]
        basis = "calibrated" if lower >= precision - SLACK else "uncertain"
        log(f"threshold {threshold:.3f} for precision {precision}: calibrated on the {how['tickets']} tickets of "
            f"{calibrate_since:%Y-%m-%d} to {calibrate_until:%Y-%m-%d} ({how['linked']} linked of {how['pairs']} "
            f"pairs, precision {how['precision']:.3f} there)")
        if basis == "uncertain":
            log(f"warning: the precision is not established: {how['right']} right of the {how['behind']} "
                f"calibration pairs at or above the threshold, 95% lower bound {lower:.2f} (target {precision}); "
                "treat the links as a review queue, not as merges")
    store = pipeline.store
    rows = store.ids_by_created()
    created = {tid: c for tid, c in rows}
    todo = [tid for tid, c in rows if since is None or c >= since]
    group = groups_of(store)
    key = {"since": since.isoformat() if since else None, "precision": precision, "k": k, "threshold": threshold,
           "reranker": getattr(pipeline.reranker, "checksum", None)}
    partial = out.with_name(out.name + ".partial")
    done = _resumed(partial, key)
    if done:
        log(f"resuming: {len(done)} of {len(todo)} tickets were compared before")
    fh = partial.open("a" if done else "w", encoding="utf-8")
    if not done:
        fh.write(json.dumps(key) + "\n")
        fh.flush()
    compared = 0
    try:
        with tqdm(total=len(todo), initial=len(done), desc="dedupe", unit=" tickets", disable=not progress,
                  mininterval=0.5) as bar:
            for tid in todo:
                if tid in done:
                    continue
                if stop_after is not None and compared >= stop_after:
                    return DedupeReport(len(done), 0, 0, 0, 0, threshold, precision, time.perf_counter() - t0, out,
                                        basis, lower)
                found = compare(index, tid, created[tid], k, threshold, group)
                done[tid] = found
                fh.write(json.dumps({"ticket": tid, "pairs": found}) + "\n")
                fh.flush()
                compared += 1
                bar.update(1)
    finally:
        fh.close()
    pairs = [p for tid in todo for p in done.get(tid, [])]
    result = clusters(pairs, created)
    atomic_write_text(out, render(result, out.suffix))
    partial.unlink(missing_ok=True)
    return DedupeReport(len(todo), len(todo) - compared, len(pairs), sum(not p["known"] for p in pairs), len(result),
                        threshold, precision, time.perf_counter() - t0, out, basis, lower)


def render(result: list[dict[str, Any]], suffix: str) -> str:
    if suffix == ".jsonl":
        return "".join(json.dumps(row) + "\n" for row in result)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["cluster", "members", "a", "b", "probability", "known"])
    for row in result:
        for link in row["links"]:
            w.writerow([row["cluster"], ";".join(row["members"]), link["a"], link["b"], link["probability"],
                        str(link["known"]).lower()])
    return buf.getvalue()


def read_clusters(path: Path) -> Iterator[dict[str, Any]]:
    for line in Path(path).read_text("utf-8").splitlines():
        if line.strip():
            yield json.loads(line)
