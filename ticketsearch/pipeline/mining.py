"""Training data for the reranker, mined from an index's duplicate links: the lists it learns from, their pair
inputs, and the calibration stored with a model (used by `training` and by the general model, `general`).

Positives: each train-period duplicate with the earlier members of its group that the hybrid retriever
puts in its top 100 (what the reranker will see). Negatives: the hybrid retriever's top candidates from the
query's own pool (earlier tickets outside its group), some sampled from the rest of its top 100, plus a few
random ones. Tickets resolved as duplicates with no in-file group are never negatives (their true master is
outside the file). Validation and test queries get their hybrid top 100, which the reranker reorders.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from ticketsearch.index_data.features import FeatureSpace
from ticketsearch.index_data.records import text_hash, ticket_text
from ticketsearch.index_data.schema import Schema
from ticketsearch.index_data.store import TicketStore
from ticketsearch.index_dir import IndexDir
from ticketsearch.pipeline.pairs import (
    RERANK_DEPTH,
    CodeTerms,
    ListScores,
    TextScores,
    bm25_scale,
    pair_inputs,
    select_columns,
)
from ticketsearch.pipeline.rerank_vectors import store_values, token_cache_for, token_encode_fn
from ticketsearch.rerank.calibration import fit_platt, lowest_threshold_for_precision, platt
from ticketsearch.rerank.pair_features import TEXT_SCORES
from ticketsearch.rerank.token_cache import Tokens
from ticketsearch.rerank.train import (
    Group,
    RankList,
    TrainData,
)
from ticketsearch.retrieval.encoder import Encoder
from ticketsearch.retrieval.eval_index import EvalInputs, QueryViews, fusion_fn, kind_pools
from ticketsearch.retrieval.evaluation import QueryPool, first_hit_rank
from ticketsearch.retrieval.query_kinds import FULL, QueryKind

TOP_NEGATIVES = 6  # the hybrid's best-ranked non-duplicates
MID_NEGATIVES = 6  # sampled from the rest of its top 100, so training sees what reranking sees
RANDOM_NEGATIVES = 3  # anywhere in the pool
DROPOUT = 0.3
TARGET_PRECISION = 0.9  # a few hundred training queries: regularise harder than the article's 0.1


@dataclass
class ShortQuery:
    """A short query cut from a labelled ticket (`QueryKind`): a reranker item of its own, after the tickets."""

    ticket: int  # EvalSet index of the ticket it was cut from
    text: str


@dataclass
class Mined:
    groups: list[Group]
    valid: list[RankList]  # what early stopping and the install decision see: every trained query kind
    test: list[RankList]  # the first evaluated query kind
    # the first-stage scores of each recorded (query, candidate), raw, and each query's BM25 scale (the best
    # BM25 of its top RERANK_DEPTH, as serving divides by)
    first_stage: dict[tuple[int, int], dict[str, float]] = field(default_factory=dict)
    bm25_scale: dict[int, float] = field(default_factory=dict)
    title_scale: dict[int, float] = field(default_factory=dict)  # the same for BM25 of the query's title
    recorded: dict[int, list[int]] = field(default_factory=dict)  # query -> candidates with recorded scores
    # short queries are items n, n + 1, ... (n tickets): their own text, no fields, asked at their ticket's date
    short: list[ShortQuery] = field(default_factory=list)
    short_index: dict[tuple[str, int], int] = field(default_factory=dict)
    valid_by_kind: dict[str, list[RankList]] = field(default_factory=dict)
    test_by_kind: dict[str, list[RankList]] = field(default_factory=dict)
    trains_short: bool = False  # the train groups hold short queries: pair inputs laid out by query kind
    feedback_negatives: int = 0  # agents' rejected pairs used as hard negatives of train queries

    def item(self, n_tickets: int, q: int, views: QueryViews | None) -> int:
        """The reranker item of query q as `views` cuts it (the ticket itself without views)."""
        if views is None:
            return q
        if n_tickets < 1:
            raise ValueError("a short query's item comes after the tickets: give their number")
        key = (views.kind.label, q)
        if key not in self.short_index:
            self.short_index[key] = n_tickets + len(self.short)
            self.short.append(ShortQuery(q, views.text[q]))
        return self.short_index[key]


def excluded_negatives(store: TicketStore, inp: EvalInputs) -> np.ndarray:
    """EvalSet mask of tickets resolved 'Duplicate' that have no in-file group (never negatives)."""
    resolved = store.resolved_duplicate_row_ids()
    ev = inp.ev
    sizes = np.bincount(ev.group, minlength=len(ev))
    return np.array([int(r) in resolved and sizes[ev.group[i]] == 1 for i, r in enumerate(ev.row_ids)])


def _record_first_stage(mined: Mined, qid: int, p: QueryPool, fused: np.ndarray, idx: np.ndarray,
                        top: np.ndarray) -> None:
    """Keep the first-stage scores of pool positions `idx` (the pair model's inputs) for query item `qid`;
    `top` are the positions of the query's reranked list (its fused top RERANK_DEPTH), whose best BM25 scales
    BM25 as in serving."""
    full_rank = np.empty(len(fused), dtype=np.int64)
    full_rank[np.argsort(-fused, kind="stable")] = np.arange(1, len(fused) + 1)
    mined.bm25_scale[qid] = bm25_scale(p.scores["bm25"][top])
    text = [n for n in TEXT_SCORES if n in p.scores]  # the pools were scored with the text columns' scores
    if text:
        mined.title_scale[qid] = bm25_scale(p.scores["bm25_title"][top])
    rec = mined.recorded.setdefault(qid, [])
    for i in idx:
        c = int(p.pool[i])
        if (qid, c) not in mined.first_stage:
            rec.append(c)
        mined.first_stage[(qid, c)] = {
            "dense": float(p.scores["dense"][i]), "title": float(p.scores["title"][i]),
            "bm25": float(p.scores["bm25"][i]), "fused_rank": float(full_rank[i]),
            **{n: float(p.scores[n][i]) for n in text},
        }


def rank_lists(pools: list[QueryPool], fuse: Callable[[QueryPool], np.ndarray], mined: Mined, n_tickets: int = 0,
               views: QueryViews | None = None) -> list[RankList]:
    out = []
    for p in pools:
        fused = fuse(p)
        # ties count against the system, as in the first-stage metrics: non-hits first among equal scores
        order = np.lexsort((p.hits.astype(np.int8), -fused))[:RERANK_DEPTH]
        hits = p.hits[order]
        fallback = float("inf") if hits.any() else float(first_hit_rank(fused, p.hits))
        qid = mined.item(n_tickets, p.q, views)
        _record_first_stage(mined, qid, p, fused, order, order)
        out.append(RankList(query=qid, candidates=[int(p.pool[i]) for i in order], hits=hits, fallback_rank=fallback))
    return out


def mine(
    store: TicketStore, inp: EvalInputs, fusion: dict[str, Any], depth: int,
    train_before: datetime, valid_before: datetime, seed: int = 0, encoder: Encoder | None = None,
    train_kinds: Sequence[QueryKind] = (FULL,), eval_kinds: Sequence[QueryKind] = (FULL,), progress: bool = False,
    rejected: dict[int, set[int]] | None = None, text: bool = True,
) -> Mined:
    """Train groups for every query kind in `train_kinds` (a short kind: each train duplicate also as that
    short query, with its own first-stage candidates); validation lists of the trained kinds (`valid`, what
    early stopping sees) and of every evaluated kind; test lists of every evaluated kind (`test`: the first).

    `rejected`: query -> candidates agents said are not its duplicates: the first hard negatives of that query,
    and never its positives (an agent's "no" overrides a link). `text`: the text columns' scores recorded too
    (`pair_features.TEXT_SCORES`, for `build_train_data(text=True)`)."""
    ev = inp.ev
    n = len(ev)
    fuse = fusion_fn(fusion, depth)
    rng = np.random.default_rng(seed)
    banned = excluded_negatives(store, inp)
    mined = Mined(groups=[], valid=[], test=[], trains_short=any(k.short for k in train_kinds))
    for kind in train_kinds:
        pools, views = kind_pools(inp, store, encoder, kind, ev.queries(until=train_before), progress, text=text)
        for p in pools:
            fused = fuse(p)
            order = np.argsort(-fused, kind="stable")[:RERANK_DEPTH]
            said_no = np.isin(p.pool, sorted((rejected or {}).get(p.q, ())))
            p.hits &= ~said_no
            ok = ~p.hits & ~banned[p.pool]
            top = [int(p.pool[i]) for i in order if ok[i]]
            no = [int(c) for c in p.pool[said_no]]
            hard = no + [c for c in top if c not in set(no)][:TOP_NEGATIVES]
            mid = top[TOP_NEGATIVES:]
            hard += [mid[i] for i in rng.choice(len(mid), size=min(MID_NEGATIVES, len(mid)), replace=False)]
            rest = np.flatnonzero(ok)
            rand = [int(p.pool[i]) for i in rng.choice(rest, size=min(RANDOM_NEGATIVES, len(rest)), replace=False)]
            negs = list(dict.fromkeys(hard + rand))
            # positives as reranking will see them: group members inside the hybrid top 100 (a query whose
            # duplicates all rank lower teaches nothing the reranker can use, and would bias the rank inputs)
            positives = [int(p.pool[i]) for i in order if p.hits[i]]
            if not positives:
                continue
            qid = mined.item(n, p.q, views)
            extra = np.array([c - int(p.pool[0]) for c in rand], dtype=np.int64)
            _record_first_stage(mined, qid, p, fused, np.unique(np.concatenate(
                [order, np.flatnonzero(p.hits), extra, np.flatnonzero(said_no)])), order)
            mined.feedback_negatives += len(no)
            mined.groups.append(Group(query=qid, positives=positives, negatives=negs))
    for kind in dict.fromkeys([*train_kinds, *eval_kinds]):
        pools, views = kind_pools(inp, store, encoder, kind, ev.queries(train_before, valid_before), progress,
                                  text=text)
        mined.valid_by_kind[kind.label] = rank_lists(pools, fuse, mined, n, views)
        if kind in train_kinds:
            mined.valid += mined.valid_by_kind[kind.label]
    for kind in eval_kinds:
        pools, views = kind_pools(inp, store, encoder, kind, ev.queries(valid_before), progress, text=text)
        mined.test_by_kind[kind.label] = rank_lists(pools, fuse, mined, n, views)
    mined.test = mined.test_by_kind[eval_kinds[0].label] if eval_kinds else []
    return mined


def ticket_values(store: TicketStore, inp: EvalInputs) -> list[dict[str, Any]]:
    """Typed field values in EvalSet order."""
    by_row = store_values(store)
    return [by_row[int(r)] for r in inp.ev.row_ids]


def build_train_data(
    store: TicketStore, inp: EvalInputs, encoder: Encoder, index_dir: Path, mined: Mined, with_pair: bool,
    progress: bool = True, query_kinds: bool | None = None, pair_schema: Schema | None = None, code: bool = False,
    tokens: bool = True, text: bool = False,
) -> tuple[TrainData, FeatureSpace, list[dict[str, Any]]]:
    """The reranker's inputs for the mined items. Pair inputs are laid out by query kind
    (`pair_features.by_query_kind`) when `query_kinds` (default: when the train groups hold short queries);
    `pair_schema` computes them under another schema (the general model's, with no fields); `code` adds the
    code terms' agreement last, `text` the text columns before them (`pairs.select_columns` takes either off
    again; `text` needs lists mined with them). `tokens` False: no token states are encoded (a linear model reads
    the pair inputs alone), and asking for one is an error."""
    if query_kinds is None:
        query_kinds = mined.trains_short
    ev = inp.ev
    fs = FeatureSpace.from_dict(json.loads(IndexDir(index_dir).features_path.read_text()))
    # items: the tickets, then the short queries (free text: no field values, no date, no title of their own)
    values = ticket_values(store, inp) + [{} for _ in mined.short]
    feats = fs.matrix(values)
    listed = [r for lists in (mined.valid, mined.test, *mined.valid_by_kind.values(), *mined.test_by_kind.values())
              for r in lists]
    needed = sorted({g.query for g in mined.groups} | {c for g in mined.groups for c in g.positives + g.negatives}
                    | {r.query for r in listed} | {c for r in listed for c in r.candidates})
    texts = [ticket_text(store.schema, ev.titles[i], ev.bodies[i]) for i in range(len(ev))] + [
        sq.text for sq in mined.short]
    hashes = [text_hash(t) for t in texts]
    cache = token_cache_for(IndexDir(index_dir), encoder) if tokens else None
    if cache is not None:
        cache.ensure([hashes[i] for i in needed], [texts[i] for i in needed], token_encode_fn(encoder),
                     progress=progress)
    created = [ev.created[i].astype("datetime64[s]").astype(datetime) for i in range(len(ev))]

    def query_time(q: int) -> datetime:
        """A ticket's own date; a short query's is its ticket's (every training query is dated, as search dates
        a query without a date at the time of the request)."""
        return created[q] if q < len(created) else created[mined.short[q - len(created)].ticket]
    pair_fn = None
    codes = CodeTerms(limit=len(texts) + 1)  # by text hash, as search reads them
    if with_pair:
        pairs: dict[tuple[int, int], np.ndarray] = {}

        def pair_fn(q: int, c: int) -> np.ndarray:
            if text and q not in mined.title_scale:
                raise ValueError(f"query item {q} was mined without the text columns' scores (mine(text=True))")
            if (q, c) not in pairs:  # the query's whole recorded list at once, through serving's function
                cands = mined.recorded.get(q, [])
                if c not in cands:
                    cands = [*cands, c]
                fs = [mined.first_stage.get((q, x), {}) for x in cands]
                def column(name: str, default: float) -> np.ndarray:
                    return np.array([f.get(name, default) for f in fs], np.float64)

                scores = ListScores(column("dense", 0.0), column("title", 0.0), column("bm25", 0.0),
                                    column("fused_rank", 1000.0))
                mat = pair_inputs(pair_schema or store.schema, texts[q], values[q], query_time(q), scores,
                                  mined.bm25_scale.get(q, 1e-9), [ev.titles[x] for x in cands],
                                  [values[x] for x in cands], [created[x] for x in cands],
                                  short=(q >= len(created)) if query_kinds else None,
                                  candidate_code=codes.of([hashes[x] for x in cands],
                                                          lambda at: [texts[cands[i]] for i in at])
                                  if code else None,
                                  text=TextScores(column("dense_title", 0.0), column("title_dense", 0.0),
                                                  column("bm25_title", 0.0), mined.title_scale[q])
                                  if text else None)
                pairs.update({(q, x): mat[j] for j, x in enumerate(cands)})
            return pairs[(q, c)]
    def token_states(i: int) -> Tokens:
        if cache is None:
            raise ValueError("this training data was built without token states (tokens=False)")
        return cache.get(hashes[i])

    data = TrainData(tokens=token_states, feats=feats, pair=pair_fn, groups=mined.groups, valid=mined.valid)
    return data, fs, values


def pair_columns(pair: Callable[[int, int], np.ndarray] | None, built_text: bool, built_code: bool, text: bool,
                 code: bool) -> Callable[[int, int], np.ndarray] | None:
    """Pair inputs built with the text and code columns (`built_*`) as a model with or without them reads them
    (`pairs.select_columns`)."""
    if pair is None or (built_text == text and built_code == code):
        return pair
    return lambda q, c: select_columns(pair(q, c), built_text, built_code, text, code)


THRESHOLD_PRECISIONS = (0.8, 0.85, 0.9, 0.95, 0.99)  # stored with the model; the service picks one


def calibration_meta(val_scores: Sequence[np.ndarray], valid: Sequence[RankList]) -> dict[str, Any]:
    """Platt calibration of a model's logits on its validation lists, and the duplicate thresholds for each of
    THRESHOLD_PRECISIONS, as stored with the model."""
    logits = np.concatenate(list(val_scores)) if len(val_scores) else np.zeros(0)
    labels = np.concatenate([r.hits for r in valid]).astype(np.float64) if valid else np.zeros(0)
    a, b = fit_platt(logits, labels)
    probs = platt(logits, a, b)
    threshold, achieved = lowest_threshold_for_precision(probs, labels, TARGET_PRECISION)
    table: dict[str, float] = {}
    sources: dict[str, str] = {}
    for p in THRESHOLD_PRECISIONS:
        # Where the validation pairs show no threshold with this precision (too few of them at the top), the
        # calibrated probability itself is the threshold: under the Platt fit on those pairs, tickets above
        # probability p are duplicates with precision at least p.
        t = lowest_threshold_for_precision(probs, labels, p)[0]
        table[f"{p:.2f}"], sources[f"{p:.2f}"] = (t, "validation") if t is not None else (p, "calibration")
    if threshold is None:
        threshold = table[f"{TARGET_PRECISION:.2f}"]
    return {"calibration": {"method": "platt", "a": a, "b": b}, "duplicate_threshold": threshold,
            "threshold_target_precision": TARGET_PRECISION, "threshold_validation_precision": achieved,
            "duplicate_thresholds": table, "duplicate_threshold_sources": sources}


def keep_first_groups(mined: Mined, inp: EvalInputs, count: int) -> None:
    """A young project: keep only `mined`'s first `count` train queries by filing date (a short query is
    filed with its ticket)."""
    n = len(inp.ev)

    def filed(g: Group) -> np.datetime64:
        return inp.ev.created[g.query if g.query < n else mined.short[g.query - n].ticket]

    mined.groups = sorted(mined.groups, key=filed)[:count]
