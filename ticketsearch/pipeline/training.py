"""Mining training data for the reranker from an index, training variants and scoring them.

Positives: each train-period duplicate with the earlier members of its group that the hybrid retriever
puts in its top 100 (what the reranker will see). Negatives: the hybrid retriever's top candidates from the
query's own pool (earlier tickets outside its group), some sampled from the rest of its top 100, plus a few
random ones. Tickets resolved as duplicates with no in-file group are never negatives (their true master is
outside the file). Validation and test queries get their hybrid top 100, which the reranker reorders.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ticketsearch.atomic import atomic_write_dir
from ticketsearch.index_data.features import FeatureSpace
from ticketsearch.index_data.records import text_hash, ticket_text
from ticketsearch.index_data.schema import Schema
from ticketsearch.index_data.store import TicketStore
from ticketsearch.index_dir import IndexDir
from ticketsearch.pipeline.pairs import RERANK_DEPTH, ListScores, bm25_scale, pair_inputs
from ticketsearch.pipeline.rerank_vectors import build_rerank_vectors, store_values, token_cache_for, token_encode_fn
from ticketsearch.rerank.calibration import fit_platt, lowest_threshold_for_precision, platt
from ticketsearch.rerank.lambdamart import ltr_inputs
from ticketsearch.rerank.model import RerankConfig
from ticketsearch.rerank.pair_features import pair_dim
from ticketsearch.rerank.persist import save_reranker
from ticketsearch.rerank.train import (
    Group,
    RankList,
    TrainConfig,
    TrainData,
    rerank_scores,
    reranked_ranks,
    train,
)
from ticketsearch.retrieval.encoder import Encoder
from ticketsearch.retrieval.eval_index import EvalInputs, QueryViews, fusion_fn, kind_pools
from ticketsearch.retrieval.evaluation import QueryPool, first_hit_rank
from ticketsearch.retrieval.query_kinds import FULL, QueryKind

ShortTime = Literal["none", "asked"]
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
    recorded: dict[int, list[int]] = field(default_factory=dict)  # query -> candidates with recorded scores
    # short queries are items n, n + 1, ... (n tickets): their own text, no fields, no date
    short: list[ShortQuery] = field(default_factory=list)
    short_index: dict[tuple[str, int], int] = field(default_factory=dict)
    valid_by_kind: dict[str, list[RankList]] = field(default_factory=dict)
    test_by_kind: dict[str, list[RankList]] = field(default_factory=dict)
    trains_short: bool = False  # the train groups hold short queries: pair inputs laid out by query kind
    # when a short query was asked, for its time-gap input: "none" (not placed: every gap zero, as search has
    # a free text without a date) or "asked" (at its ticket's date; search then places a free text without a
    # date at the index's newest ticket). Stored with the model; search follows it.
    short_time: ShortTime = "none"
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
    rows = store.con.execute(
        "SELECT row_id FROM tickets WHERE lower(coalesce(json_extract_string(raw_fields, '$.resolution'), "
        "json_extract_string(raw_fields, '$.Resolution'), '')) = 'duplicate'"
    ).fetchall()
    resolved = {r[0] for r in rows}
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
    rec = mined.recorded.setdefault(qid, [])
    for i in idx:
        c = int(p.pool[i])
        if (qid, c) not in mined.first_stage:
            rec.append(c)
        mined.first_stage[(qid, c)] = {
            "dense": float(p.scores["dense"][i]), "title": float(p.scores["title"][i]),
            "bm25": float(p.scores["bm25"][i]), "fused_rank": float(full_rank[i]),
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
    rejected: dict[int, set[int]] | None = None,
) -> Mined:
    """Train groups for every query kind in `train_kinds` (a short kind: each train duplicate also as that
    short query, with its own first-stage candidates); validation lists of the trained kinds (`valid`, what
    early stopping sees) and of every evaluated kind; test lists of every evaluated kind (`test`: the first).

    `rejected`: query -> candidates agents said are not its duplicates: the first hard negatives of that query,
    and never its positives (an agent's "no" overrides a link)."""
    ev = inp.ev
    n = len(ev)
    fuse = fusion_fn(fusion, depth)
    rng = np.random.default_rng(seed)
    banned = excluded_negatives(store, inp)
    mined = Mined(groups=[], valid=[], test=[], trains_short=any(k.short for k in train_kinds))
    for kind in train_kinds:
        pools, views = kind_pools(inp, store, encoder, kind, ev.queries(until=train_before), progress)
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
        pools, views = kind_pools(inp, store, encoder, kind, ev.queries(train_before, valid_before), progress)
        mined.valid_by_kind[kind.label] = rank_lists(pools, fuse, mined, n, views)
        if kind in train_kinds:
            mined.valid += mined.valid_by_kind[kind.label]
    for kind in eval_kinds:
        pools, views = kind_pools(inp, store, encoder, kind, ev.queries(valid_before), progress)
        mined.test_by_kind[kind.label] = rank_lists(pools, fuse, mined, n, views)
    mined.test = mined.test_by_kind[eval_kinds[0].label] if eval_kinds else []
    return mined


def ticket_values(store: TicketStore, inp: EvalInputs) -> list[dict[str, Any]]:
    """Typed field values in EvalSet order."""
    by_row = store_values(store)
    return [by_row[int(r)] for r in inp.ev.row_ids]


def build_train_data(
    store: TicketStore, inp: EvalInputs, encoder: Encoder, index_dir: Path, mined: Mined, with_pair: bool,
    progress: bool = True, query_kinds: bool | None = None, pair_schema: Schema | None = None,
) -> tuple[TrainData, FeatureSpace, list[dict[str, Any]]]:
    """The reranker's inputs for the mined items. Pair inputs are laid out by query kind
    (`pair_features.by_query_kind`) when `query_kinds` (default: when the train groups hold short queries);
    `pair_schema` computes them under another schema (the general model's, with no fields)."""
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
    cache = token_cache_for(IndexDir(index_dir), encoder)
    cache.ensure([hashes[i] for i in needed], [texts[i] for i in needed], token_encode_fn(encoder), progress=progress)
    created = [ev.created[i].astype("datetime64[s]").astype(datetime) for i in range(len(ev))]

    def query_time(q: int) -> datetime | None:
        """A ticket's own date; a short query's as `mined.short_time` says."""
        if q < len(created):
            return created[q]
        return created[mined.short[q - len(created)].ticket] if mined.short_time == "asked" else None
    pair_fn = None
    if with_pair:
        pairs: dict[tuple[int, int], np.ndarray] = {}

        def pair_fn(q: int, c: int) -> np.ndarray:
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
                                  short=(q >= len(created)) if query_kinds else None)
                pairs.update({(q, x): mat[j] for j, x in enumerate(cands)})
            return pairs[(q, c)]
    data = TrainData(tokens=lambda i: cache.get(hashes[i]), feats=feats, pair=pair_fn, groups=mined.groups,
                     valid=mined.valid)
    return data, fs, values


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

    def scores(self, data: TrainData, lists: Sequence[RankList], perm: np.ndarray | None = None) -> list[np.ndarray]:
        """The variant's scores of every candidate of every list (as serving computes them)."""
        return variant_scores(self.model, self.ltr, data, lists, perm)


def variant_scores(model: Any, ltr: Any, data: TrainData, lists: Sequence[RankList],
                   perm: np.ndarray | None = None) -> list[np.ndarray]:
    """The fusion model's logits, or with a LambdaMART stage its scores of them and the pair inputs."""
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
    prior: bool = True, ltr_train: Sequence[RankList] | None = None,
) -> VariantResult:
    """Train one variant and save it in `out_dir/name`; with `ltr_train` (LambdaMART's training lists), a
    LambdaMART stage on top of the fusion model, early-stopped on the validation lists, saved beside it."""
    kinds = with_pair and mined.trains_short
    cfg = RerankConfig(feat_dim=fs.dim, text_dim=encoder.dim, arch=arch,  # type: ignore[arg-type]  # arch comes from VARIANTS, whose values are the Literal
                       pair_dim=pair_dim(fs.schema, kinds) if with_pair else 0, dropout=DROPOUT, cosine_prior=prior,
                       query_kinds=kinds)
    log(f"    training {name} ({len(data.groups)} train queries, {len(data.valid)} validation queries)")
    res = train(data, cfg, tcfg, progress=progress, log=log)
    perm = np.random.default_rng(tcfg.seed).permutation(len(data.feats)) if tcfg.shuffle_features else None
    ltr = None
    if ltr_train is not None:
        from ticketsearch.rerank.lambdamart import LambdaMART

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
            "shuffle_features": tcfg.shuffle_features, "history": res.history, "seconds": round(res.seconds, 1)},
        "rerank_depth": RERANK_DEPTH, "short_query_time": mined.short_time,
        **({"ltr": {"method": "lambdamart", "trees": ltr.best_iteration}} if ltr is not None else {}),
    })
    if ltr is not None:
        ltr.save(model_dir)
    valid_ranks = reranked_ranks(mined.valid, val_scores)
    valid_mrr = float(np.mean(1.0 / valid_ranks)) if ltr is not None and len(valid_ranks) else res.best_valid_mrr
    return VariantResult(name, valid_ranks, reranked_ranks(mined.test, test_scores),
                         res.history, res.seconds, model_dir, valid_mrr, res.model, ltr)


def general_ranker(store: TicketStore, inp: EvalInputs, encoder: Encoder, index_dir: Path, mined: Mined,
                   progress: bool = False, general_dir: Path | None = None,
                   ) -> Callable[[Sequence[RankList]], np.ndarray] | None:
    """The general model's ranks of any of `mined`'s lists (None when it cannot load); the shipped model unless
    `general_dir` names another (a measurement's, trained without the data it is scored on)."""
    from ticketsearch.errors import TicketsearchError
    from ticketsearch.pipeline.general import general_inputs, list_scores
    from ticketsearch.rerank.general import SHIPPED, load_general

    try:
        model, meta = load_general(general_dir or SHIPPED)
    except TicketsearchError:
        return None
    # the pair inputs laid out as the general model was trained, whatever the lists' own model uses
    g = general_inputs(store, inp, encoder, index_dir, mined, progress, query_kinds=bool(meta.get("query_kinds")))
    return lambda lists: reranked_ranks(lists, list_scores(model, g, lists))


def first_stage_ranks(lists: Sequence[RankList]) -> np.ndarray:
    """Ranks of the first hits in the lists' own (first-stage) order."""
    return reranked_ranks(lists, [-np.arange(len(r.candidates), dtype=float) for r in lists])


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

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def decide_install(name: str | None, variant_ranks: np.ndarray | None, first_ranks: np.ndarray,
                   general_ranks: np.ndarray | None = None) -> InstallDecision:
    """Install `name` when its validation MRR is above the first stage's on the same queries (the point
    estimate of the paired difference; its 95% interval is reported, not required: a few dozen validation
    queries rarely exclude zero even for a real gain) and not below the general model's (`general_ranks`,
    when given); else use the general model where it beats the first stage."""
    from ticketsearch.retrieval.evaluation import paired_bootstrap

    def mrr(r: np.ndarray) -> float:
        return float(np.mean(1.0 / r)) if len(r) else 0.0

    first_mrr = mrr(first_ranks)
    gen = None if general_ranks is None or not len(general_ranks) else mrr(general_ranks)
    if name is None or variant_ranks is None or len(first_ranks) == 0:
        why = "no validation queries to compare it with the first stage" if name else "no variant was trained"
        if general_ranks is not None:
            return InstallDecision(False, name, None, first_mrr, None, len(first_ranks),
                                   f"{why}: the general model (trained on other projects' links) reranks",
                                   "general", gen)
        return InstallDecision(False, name, None, first_mrr, None, len(first_ranks), why)
    own = mrr(variant_ranks)
    delta = paired_bootstrap(first_ranks, variant_ranks, "MRR")
    figures = (f"validation MRR {own:.3f} against the first stage's {first_mrr:.3f} over {len(first_ranks)} "
               f"queries (difference {delta['diff']:+.3f}, 95% interval {delta['lo']:+.3f} to {delta['hi']:+.3f})")
    if gen is not None:
        figures += f" and the general model's {gen:.3f}"
    if delta["diff"] > 0 and (gen is None or own >= gen):
        return InstallDecision(True, name, own, first_mrr, delta, len(first_ranks),
                               f"{name} beats the first stage: {figures}", "own", gen)
    if gen is not None and gen > first_mrr:
        return InstallDecision(False, name, own, first_mrr, delta, len(first_ranks),
                               f"the general model validates best: {name}'s {figures}; the general model reranks",
                               "general", gen)
    return InstallDecision(False, name, own, first_mrr, delta, len(first_ranks),
                           f"{name} does not beat the first stage it reranks: {figures}; results stay in "
                           "first-stage order", "first_stage", gen)


# Every variant starts from the cosine prior (RerankConfig.cosine_prior): without it the text-only models
# stayed at the random order of the top 100 on hadoop and hive (docs/RESULTS.md). "-noprior" rows are the
# article's models as specified, kept for the comparison.
VARIANTS: dict[str, dict[str, Any]] = {
    "rerank-concat": {"arch": "concat", "pair": False},
    "rerank-cross": {"arch": "cross", "pair": False},
    "rerank-cross+pair": {"arch": "cross", "pair": True},
    "rerank-cross-shuffled": {"arch": "cross", "pair": False, "shuffle": True},  # ablation
    "rerank-concat-noprior": {"arch": "concat", "pair": False, "prior": False, "optional": True},
    "rerank-cross-noprior": {"arch": "cross", "pair": False, "prior": False, "optional": True},
}
VARIANTS["rerank-lambdamart"] = {"arch": "cross", "pair": True, "ltr": True}  # LightGBM on top of cross+pair
DEFAULT_VARIANTS = [n for n, v in VARIANTS.items() if not v.get("optional")]


def default_variants() -> list[str]:
    """The variants an experiment trains: rerank-lambdamart only where LightGBM is installed."""
    from ticketsearch.rerank.lambdamart import available

    return [n for n in DEFAULT_VARIANTS if not VARIANTS[n].get("ltr") or available()]


def run_rerankers(
    store: TicketStore, inp: EvalInputs, encoder: Encoder, index_dir: Path, fusion: dict[str, Any], depth: int,
    train_before: datetime, valid_before: datetime, out_dir: Path, variants: list[str] | None = None,
    tcfg: TrainConfig | None = None, progress: bool = True, log: Callable[[str], None] = print,
    extra: dict[str, list[QueryPool]] | None = None, train_kinds: Sequence[QueryKind] = (FULL,),
    eval_kinds: Sequence[QueryKind] = (FULL,), install: bool = True, short_time: ShortTime = "none",
    first_train_queries: int | None = None, general_dir: Path | None = None,
    rejected: dict[int, set[int]] | None = None,
) -> dict[str, Any]:
    """Mine, train every variant, score validation and test lists; install the best variant in the index.

    `extra` names more sets of test pools (a candidate window, no easy duplicates): each gets its own top-100
    lists and pair inputs (a query's list differs from set to set), scored by every variant, in
    `results["extra"][name]`. The reranker trains on the queries of `train_kinds` (whole tickets, short
    queries cut from them, or both) and is scored on each of `eval_kinds` in `results["kinds"][label]`
    (`results["test"]` and `["valid"]` are the first evaluated kind's)."""

    from ticketsearch.retrieval.evaluation import metrics_from_ranks, paired_bootstrap

    tcfg = tcfg or TrainConfig()
    mined = mine(store, inp, fusion, depth, train_before, valid_before, seed=tcfg.seed, encoder=encoder,
                 train_kinds=train_kinds, eval_kinds=eval_kinds, progress=progress, rejected=rejected)
    mined.short_time = short_time
    if first_train_queries is not None:  # a young project: only its first N train duplicates (by filing date)
        n = len(inp.ev)

        def filed(g: Group) -> np.datetime64:
            return inp.ev.created[g.query if g.query < n else mined.short[g.query - n].ticket]

        mined.groups = sorted(mined.groups, key=filed)[:first_train_queries]
    log(f"    mined {len(mined.groups)} train queries ({', '.join(k.label for k in train_kinds)}; "
        f"{sum(len(g.negatives) for g in mined.groups)} negatives, {mined.feedback_negatives} of them rejected by "
        f"agents), {len(mined.valid)} validation and {len(mined.test)} test queries with their top {RERANK_DEPTH}")
    base_data, fs, _ = build_train_data(store, inp, encoder, index_dir, mined, with_pair=True, progress=progress)
    first = {"valid": first_stage_ranks(mined.valid), "test": first_stage_ranks(mined.test)}
    results: dict[str, Any] = {"test": {}, "valid": {}, "variants": {}, "extra": {},
                               "train_pairs": {"queries": len(mined.groups),
                                               "positives": sum(len(g.positives) for g in mined.groups),
                                               "negatives": sum(len(g.negatives) for g in mined.groups),
                                               "rejected_by_agents": mined.feedback_negatives}, "kinds": {
        label: {"test": {}, "valid": {}, "first_stage": {
            "valid": metrics_from_ranks(first_stage_ranks(mined.valid_by_kind[label])),
            "test": metrics_from_ranks(first_stage_ranks(mined.test_by_kind[label]))}}
        for label in mined.test_by_kind}, "train_queries": [k.label for k in train_kinds]}
    fuse = fusion_fn(fusion, depth)
    extra_sets: dict[str, tuple[Mined, TrainData]] = {}
    for set_name, pools in (extra or {}).items():
        m = Mined(groups=[], valid=[], test=[], short_time=short_time)
        m.valid = rank_lists(pools, fuse, m)
        d, _, _ = build_train_data(store, inp, encoder, index_dir, m, with_pair=True, progress=progress,
                                   query_kinds=mined.trains_short)
        extra_sets[set_name] = (m, d)
        results["extra"][set_name] = {}
    ranks: dict[str, np.ndarray] = {"hybrid (top 100)": first["test"]}
    best: VariantResult | None = None
    ltr_train = ltr_train_lists(mined)
    for name in variants or default_variants():
        spec = VARIANTS[name]
        data = TrainData(tokens=base_data.tokens, feats=base_data.feats,
                         pair=base_data.pair if spec["pair"] else None, groups=base_data.groups, valid=base_data.valid)
        vcfg = TrainConfig(**{**tcfg.__dict__, "shuffle_features": bool(spec.get("shuffle"))})
        vr = train_variant(name, data, fs, store.schema.to_dict(), mined, spec["arch"], spec["pair"], out_dir,
                           encoder, vcfg, progress, log, prior=spec.get("prior", True),
                           ltr_train=ltr_train if spec.get("ltr") else None)
        results["test"][name] = metrics_from_ranks(vr.test_ranks)
        results["valid"][name] = metrics_from_ranks(vr.valid_ranks)
        results["variants"][name] = {"history": vr.history, "seconds": round(vr.seconds, 1),
                                     "model_dir": str(vr.model_dir)}
        ranks[name] = vr.test_ranks
        perm = np.random.default_rng(vcfg.seed).permutation(len(data.feats)) if vcfg.shuffle_features else None
        for label, rows in results["kinds"].items():
            for part, lists in (("valid", mined.valid_by_kind[label]), ("test", mined.test_by_kind[label])):
                rows[part][name] = metrics_from_ranks(reranked_ranks(lists, vr.scores(data, lists, perm)))
        for set_name, (m, d) in extra_sets.items():
            # the base items' features (tickets first, as in every set), so that the shuffled ablation's
            # permutation of them applies here too
            dx = TrainData(tokens=d.tokens, feats=base_data.feats, pair=d.pair if spec["pair"] else None, groups=[],
                           valid=[])
            scores = vr.scores(dx, m.valid, perm)
            results["extra"][set_name][name] = metrics_from_ranks(reranked_ranks(m.valid, scores))
        if not spec.get("shuffle") and (best is None or vr.valid_mrr > best.valid_mrr):
            best = vr
    comparisons = {}
    for a, b in (("rerank-concat", "rerank-cross"), ("hybrid (top 100)", "rerank-cross"),
                 ("hybrid (top 100)", "rerank-cross+pair"),
                 ("rerank-cross", "rerank-cross+pair"), ("rerank-cross-shuffled", "rerank-cross"),
                 ("rerank-concat-noprior", "rerank-cross-noprior"), ("rerank-cross-noprior", "rerank-cross")):
        if a in ranks and b in ranks:
            comparisons[f"{b} vs {a}"] = {m: paired_bootstrap(ranks[a], ranks[b], m) for m in ("MRR", "RR@10")}
    results["comparisons"] = comparisons
    # the first stage's order of the same lists (the experiment's tables have it as its own `hybrid` row)
    results["first_stage"] = {"valid": metrics_from_ranks(first["valid"]), "test": metrics_from_ranks(first["test"])}
    rank_general = general_ranker(store, inp, encoder, index_dir, mined, progress, general_dir)
    general = None
    if rank_general is not None:  # the shipped model for teams with too few links, on the same lists
        general = rank_general(mined.valid)
        test_general = rank_general(mined.test)
        results["valid"]["rerank-general"] = metrics_from_ranks(general)
        results["test"]["rerank-general"] = metrics_from_ranks(test_general)
        results["comparisons"]["rerank-general vs hybrid (top 100)"] = {
            m: paired_bootstrap(first["test"], test_general, m) for m in ("MRR", "RR@10")}
        for label, rows in results["kinds"].items():
            rows["valid"]["rerank-general"] = metrics_from_ranks(rank_general(mined.valid_by_kind[label]))
            rows["test"]["rerank-general"] = metrics_from_ranks(rank_general(mined.test_by_kind[label]))
    decision = decide_install(best.name if best else None, best.valid_ranks if best else None, first["valid"],
                              general)
    results["decision"] = decision.to_dict()
    if not install:  # a measurement: the index keeps what it had
        return results
    where = IndexDir(index_dir)
    if decision.install and best is not None:
        source = best.model_dir
        atomic_write_dir(where.reranker_path, lambda tmp: shutil.copytree(source, tmp, dirs_exist_ok=True))
        results["installed"] = best.name
        # the row a user gets by default: the variant chosen on validation
        results["test"]["rerank"] = results["test"][best.name]
        results["valid"]["rerank"] = results["valid"][best.name]
        for rows in results["extra"].values():
            rows["rerank"] = rows[best.name]
        for rows in results["kinds"].values():
            rows["test"]["rerank"], rows["valid"]["rerank"] = rows["test"][best.name], rows["valid"][best.name]
        log(f"    installed {best.name} as {where.reranker_path}: {decision.reason}")
    else:
        where.uninstall_reranker()  # a model installed before no longer stands against this validation
        if decision.use == "general":
            for rows in (results, *results["kinds"].values()):
                rows["test"]["rerank"], rows["valid"]["rerank"] = rows["test"]["rerank-general"], rows["valid"][
                    "rerank-general"]
        log(f"    installed no reranker of its own: {decision.reason}")
    where.save_rerank_decision(decision.to_dict())
    return results


def time_split(inp: EvalInputs, train_frac: float = 0.8, valid_frac: float = 0.1) -> tuple[datetime, datetime]:
    """Dates that split the tickets by creation time into train / validation / test (80/10/10)."""
    c = inp.ev.created
    n = len(c)
    tb = c[min(n - 1, int(n * train_frac))].astype("datetime64[s]").astype(datetime)
    vb = c[min(n - 1, int(n * (train_frac + valid_frac)))].astype("datetime64[s]").astype(datetime)
    return tb, vb


def train_index(
    index_dir: Path, train_before: datetime | None, valid_before: datetime | None, variant: str,
    settings: Any, tcfg: TrainConfig, progress: bool = True, log: Callable[[str], None] = print,
    train_kinds: Sequence[QueryKind] = (FULL,), short_time: ShortTime = "none", store: TicketStore | None = None,
) -> dict[str, Any]:
    """`ticketsearch train`: mine, train one variant, install it and compute candidate vectors.

    `store`: the index's store as a running service holds it open (its engine then computes the candidate
    vectors itself, when it swaps the model in: `Engine.reload_reranker`)."""
    d = IndexDir(index_dir)
    if store is not None:
        return _train(d, store, train_before, valid_before, variant, settings, tcfg, progress, log, train_kinds,
                      short_time, vectors=False)
    with d.open_store(read_only=False) as own:
        return _train(d, own, train_before, valid_before, variant, settings, tcfg, progress, log, train_kinds,
                      short_time, vectors=True)


def feedback_rejections(inp: EvalInputs, pairs: Sequence[tuple[str, str]]) -> dict[int, set[int]]:
    """Rejected pairs as EvalSet indices: the later-created ticket -> the earlier ones agents said it does not
    duplicate (a query's candidates are earlier tickets)."""
    pos = {tid: i for i, tid in enumerate(inp.ev.ids)}
    out: dict[int, set[int]] = {}
    for x, y in pairs:
        if x in pos and y in pos:
            a, b = sorted((pos[x], pos[y]))
            out.setdefault(b, set()).add(a)
    return out


def link_count(store: TicketStore) -> int:
    """How many stored tickets name the ticket they duplicate (the links training learns from)."""
    row = store.con.execute("SELECT count(*) FROM tickets WHERE duplicate_of IS NOT NULL").fetchone()
    return int(row[0]) if row else 0


def _train(
    d: IndexDir, store: TicketStore, train_before: datetime | None, valid_before: datetime | None, variant: str,
    settings: Any, tcfg: TrainConfig, progress: bool, log: Callable[[str], None], train_kinds: Sequence[QueryKind],
    short_time: ShortTime, vectors: bool,
) -> dict[str, Any]:
    from ticketsearch.index_data import feedback
    from ticketsearch.retrieval.eval_index import load_eval_inputs

    index_dir = d.root
    manifest = d.load_manifest()
    encoder = d.open_encoder(settings, manifest)
    decisions = feedback.all_decisions(store)
    confirmed = [(x.ticket_id, x.candidate_id) for x in decisions if x.label == "duplicate"]
    inp = load_eval_inputs(index_dir, store, encoder, extra_links=confirmed)
    rejected = feedback_rejections(inp, [(x.ticket_id, x.candidate_id) for x in decisions
                                         if x.label == "not_duplicate"])
    log(f"agents' feedback: {len(confirmed)} confirmed pairs (joined to the links as positives), "
        f"{sum(len(v) for v in rejected.values())} rejected pairs (hard negatives)")
    if train_before is None or valid_before is None:
        tb, vb = time_split(inp)
        train_before, valid_before = train_before or tb, valid_before or vb
    log(f"train before {train_before:%Y-%m-%d}, validate before {valid_before:%Y-%m-%d}, test after")
    res = run_rerankers(store, inp, encoder, index_dir, manifest.fusion, settings.fusion_depth, train_before,
                        valid_before, d.rerankers_path, variants=[variant], tcfg=tcfg,
                        progress=progress, log=log, train_kinds=train_kinds, short_time=short_time,
                        rejected=rejected)
    res["feedback"] = {"confirmed": len(confirmed), "rejected": sum(len(v) for v in rejected.values())}
    if "installed" in res and vectors:
        n = build_rerank_vectors(d, store, encoder, progress=progress)
        log(f"computed reranker vectors for {n} tickets")
    return res
