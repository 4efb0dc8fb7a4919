"""Tuning the bi-encoder on a team's own duplicate links (`ticketsearch tune-encoder`).

- Examples: each train-period duplicate with an earlier member of its group (up to MAX_POSITIVES, the
  hybrid's best-ranked first) and one hard negative, sampled from the hybrid first stage's top non-members
  (never a group member, never a ticket resolved "Duplicate" without an in-file group: its true master is
  outside the file).
- Loss: sentence-transformers' `MultipleNegativesRankingLoss` in both directions (duplicate -> member and
  member -> duplicate), with the other examples of a batch as negatives. Batches are group-safe: no two
  examples of a batch touch the same duplicate group, so no duplicate is ever another's in-batch negative.
- Early stopping on the hybrid's validation RR@10 + RR@100 (what fusion tuning maximises), checked after each
  epoch on a fixed subset of the corpus (the validation queries, their groups, each query's top VALID_TOP under
  the current encoder, and a random background up to `valid_cap` tickets), so that a check re-encodes a few
  thousand tickets rather than the whole index. The subset's figures are a proxy for choosing the epoch.
- The exact check: the best epoch's model re-encodes the whole index (cached in the store under its own key:
  config and weights hash), fusion is re-tuned on validation for it and for the current encoder, and the tuned
  encoder is installed only when its validation objective beats the current one's and the reranked pipeline on
  top of it validates better too (`reranked_validation`: a reranker trained on each first stage, and what search
  would then use, its own model, the general one or first-stage order, on the same validation queries: what a
  user gets, not the first stage it reranks). Installed, it lives in the
  index as a sentence-transformers directory (`IndexDir.encoder_path`: config + safetensors); every cache
  (embeddings, token states, the int8 query export) is keyed by its identity, the first stage is rebuilt with
  the re-tuned fusion, and the reranker (trained on the old encoder's token states) is retrained on top.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ticketsearch.atomic import atomic_write_dir, atomic_write_json
from ticketsearch.errors import QueryError
from ticketsearch.index_data.records import ticket_text
from ticketsearch.index_data.store import TicketStore
from ticketsearch.index_dir import IndexDir
from ticketsearch.pipeline.ingest import build_index
from ticketsearch.pipeline.parts import load_manifest, open_encoder, open_store
from ticketsearch.pipeline.training import excluded_negatives, run_rerankers, time_split, train_index, train_variants
from ticketsearch.rerank.train import TrainConfig
from ticketsearch.retrieval.encoder import MODEL_META, Encoder
from ticketsearch.retrieval.eval_index import EvalInputs, fusion_fn, kind_pools, load_eval_inputs, scorers
from ticketsearch.retrieval.evaluation import QueryPool, build_pools, evaluate, paired_bootstrap
from ticketsearch.retrieval.fusion_tuning import choose_fusion, objective
from ticketsearch.retrieval.manifest import Manifest
from ticketsearch.retrieval.quantized import prepare_query_encoder
from ticketsearch.retrieval.query_kinds import FULL
from ticketsearch.settings import Settings


@dataclass
class TuneConfig:
    budget_s: float = 20 * 60  # training and its validation checks (the exact check and re-encode come after)
    batch_size: int = 16
    lr: float = 2e-5
    seq_length: int = 128  # training truncates here (4x faster than 256 on the CPU); encoding keeps the index's
    max_epochs: int = 4
    patience: int = 1  # epochs without a better validation check before stopping
    max_positives: int = 2
    hard_depth: int = 10  # the hard negative is sampled from this many of the hybrid's best non-members
    valid_top: int = 10
    valid_cap: int = 2500
    seed: int = 0


@dataclass(frozen=True)
class TuneExample:
    query: int  # EvalSet index of a train-period duplicate
    positive: int  # an earlier member of its group
    negative: int  # a hard negative from the hybrid first stage
    groups: frozenset[int]  # the duplicate groups the example touches (its own and its negative's)


def tuning_examples(inp: EvalInputs, banned: np.ndarray, pools: Sequence[QueryPool],
                    score: Callable[[QueryPool], np.ndarray], cfg: TuneConfig) -> list[TuneExample]:
    """Train examples from the scored pools of train-period duplicates (`score`: the hybrid first stage)."""
    rng = np.random.default_rng(cfg.seed)
    ev = inp.ev
    out = []
    for p in pools:
        order = np.argsort(-score(p), kind="stable")
        ok = ~p.hits & ~banned[p.pool]
        hard = [int(p.pool[i]) for i in order[ok[order]][: cfg.hard_depth]]
        if not hard:
            continue
        for pos in [int(p.pool[i]) for i in order if p.hits[i]][: cfg.max_positives]:
            neg = hard[int(rng.integers(len(hard)))]
            out.append(TuneExample(p.q, pos, neg, frozenset({int(ev.group[p.q]), int(ev.group[neg])})))
    return out


def group_safe_batches(examples: Sequence[TuneExample], batch_size: int, seed: int) -> list[list[int]]:
    """Examples in shuffled batches of at most `batch_size` where no two examples share a duplicate group (a
    query, positive or hard negative of one is never a group member of another's)."""
    rng = np.random.default_rng(seed)
    open_batches: list[tuple[list[int], set[int]]] = []
    done: list[list[int]] = []
    for i in rng.permutation(len(examples)):
        groups = examples[int(i)].groups
        for batch, used in open_batches:
            if not groups & used:
                batch.append(int(i))
                used |= groups
                break
        else:
            open_batches.append(([int(i)], set(groups)))
        full = [b for b in open_batches if len(b[0]) >= batch_size]
        done += [b for b, _ in full]
        open_batches = [b for b in open_batches if len(b[0]) < batch_size]
    done += [b for b, _ in open_batches]
    order = rng.permutation(len(done))
    return [done[int(j)] for j in order]


@dataclass
class ValidSubset:
    """Validation queries over a fixed subset of the corpus, for cheap early-stopping checks."""

    inp: EvalInputs
    items: np.ndarray  # EvalSet indices, ascending (time order)
    queries: np.ndarray  # positions in `items` of the validation queries
    fusion: dict[str, Any]
    depth: int

    def evaluate(self, dense: np.ndarray, title: np.ndarray) -> dict[str, Any]:
        """The hybrid's and dense's metrics over the subset, given its items' embeddings."""
        ev = self.inp.ev
        sub = ev.subset(self.items)
        sinp = EvalInputs(sub, dense, title, self.inp.bm25, self.inp.bm25_pos[self.items], self.inp.manifest)
        pools = build_pools(sub, self.queries, scorers(sinp))
        hybrid, _ = evaluate(pools, fusion_fn(self.fusion, self.depth))
        dense_m, _ = evaluate(pools, lambda p: p.scores["dense"])
        return {"score": hybrid["RR@10"] + hybrid["RR@100"], "hybrid": brief(hybrid), "dense": brief(dense_m)}


def brief(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m[k] for k in ("queries", "RR@10", "RR@100", "MRR")}


def validation_subset(inp: EvalInputs, pools: Sequence[QueryPool], fusion: dict[str, Any], depth: int,
                      valid_before: datetime, cfg: TuneConfig) -> ValidSubset:
    ev = inp.ev
    fuse = fusion_fn(fusion, depth)
    keep: set[int] = set()
    for p in pools:
        keep.add(p.q)
        keep.update(int(x) for x in p.pool[p.hits])
        keep.update(int(p.pool[i]) for i in np.argsort(-fuse(p), kind="stable")[: cfg.valid_top])
    rng = np.random.default_rng(cfg.seed)
    earlier = np.setdiff1d(np.flatnonzero(ev.created < np.datetime64(valid_before, "s")), np.array(sorted(keep)))
    n_bg = min(max(0, cfg.valid_cap - len(keep)), len(earlier))
    background = rng.choice(earlier, size=n_bg, replace=False) if n_bg else np.zeros(0, np.int64)
    items = np.array(sorted(keep | {int(x) for x in background}), dtype=np.int64)
    pos = {int(x): i for i, x in enumerate(items)}
    return ValidSubset(inp, items, np.array([pos[p.q] for p in pools], dtype=np.int64), dict(fusion), depth)


@dataclass
class FitResult:
    history: list[dict[str, Any]]
    best_epoch: int  # the best tuned epoch (its weights are what the model holds)
    best: dict[str, Any]  # its figures
    beats_start: bool  # above the weights it started from
    seconds: float
    stopped: str


def fit_encoder(encoder: Encoder, texts: Sequence[str], examples: Sequence[TuneExample], cfg: TuneConfig,
                check: Callable[[], dict[str, Any]], start: dict[str, Any], progress: bool,
                log: Callable[[str], None], first_batches: list[list[int]] | None = None) -> FitResult:
    """Train `encoder.model` in place, checking after each epoch; leave it holding the best tuned epoch's
    weights, and say whether they beat `start` (the figures of the weights it came with). Stops after
    `patience` epochs without a check above the best so far (the starting weights included)."""
    # deferred: sentence-transformers (training only)
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    st = encoder.model
    torch.manual_seed(cfg.seed)
    loss_fn = MultipleNegativesRankingLoss(st, directions=("query_to_doc", "doc_to_query"))
    opt = torch.optim.AdamW(st.parameters(), lr=cfg.lr, weight_decay=0.01)
    if first_batches is None:
        first_batches = group_safe_batches(examples, cfg.batch_size, cfg.seed)
    warmup = max(1, len(first_batches) // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))

    def feats(idx: Sequence[int]) -> dict[str, torch.Tensor]:
        f = encoder.tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=cfg.seq_length,
                              return_tensors="pt")
        return {k: v.to(encoder.device) for k, v in f.items()}

    t0 = time.perf_counter()
    history: list[dict[str, Any]] = [{"epoch": 0, **start, "seconds": 0.0}]
    best = start  # the best check so far, the starting weights included (early stopping)
    tuned_epoch, tuned_fig, tuned_state = 0, start, None  # the best tuned epoch (what is kept)
    stopped, bad, check_s, epoch_s = "max_epochs", 0, 0.0, 0.0
    for epoch in range(1, cfg.max_epochs + 1):
        if time.perf_counter() - t0 + epoch_s + check_s > cfg.budget_s and epoch > 1:
            stopped = "budget"
            break
        batches = first_batches if epoch == 1 else group_safe_batches(examples, cfg.batch_size, cfg.seed + epoch)
        st.train()
        losses: list[float] = []
        e0 = time.perf_counter()
        with tqdm(batches, desc=f"tune epoch {epoch}", unit=" batch", disable=not progress, mininterval=0.5) as bar:
            for b in bar:
                if time.perf_counter() - t0 > cfg.budget_s * 0.85 and losses:  # the rest is for the check
                    stopped = "budget"
                    break
                ex = [examples[i] for i in b]
                cols = [feats([e.query for e in ex]), feats([e.positive for e in ex]), feats([e.negative for e in ex])]
                loss = loss_fn(cols, torch.zeros(len(ex), device=encoder.device))
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(st.parameters(), 1.0)
                opt.step()
                sched.step()
                losses.append(float(loss.detach()))
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        epoch_s = time.perf_counter() - e0
        st.eval()
        c0 = time.perf_counter()
        fig = check()
        check_s = time.perf_counter() - c0
        history.append({"epoch": epoch, **fig, "loss": float(np.mean(losses)) if losses else None,
                        "seconds": round(time.perf_counter() - t0, 1)})
        log(f"      epoch {epoch}: loss {history[-1]['loss']:.3f}, validation (subset) {line(fig)} "
            f"({history[-1]['seconds']:.0f}s)")
        if tuned_state is None or objective_of(fig) > objective_of(tuned_fig):
            tuned_epoch, tuned_fig = epoch, fig
            tuned_state = {k: v.detach().clone() for k, v in st.state_dict().items()}
        if objective_of(fig) > objective_of(best):
            best, bad = fig, 0
        else:
            bad += 1
        if stopped == "budget":
            break
        if bad >= cfg.patience:
            stopped = "early_stopping"
            break
    if tuned_state is not None:
        st.load_state_dict(tuned_state)
    st.eval()
    return FitResult(history, tuned_epoch, tuned_fig, objective_of(tuned_fig) > objective_of(start),
                     time.perf_counter() - t0, stopped)


def objective_of(fig: dict[str, Any]) -> tuple[float, float]:
    return objective(fig["hybrid"])


@dataclass
class Comparison:
    """The current and the tuned encoder on the whole validation period (exact: whole index, fusion re-tuned)."""

    figures: dict[str, Any]
    tuned_fusion: dict[str, Any]
    better: bool


def compare_on_validation(current: list[QueryPool], tuned: list[QueryPool], depth: int) -> Comparison:
    figs: dict[str, Any] = {}
    ranks: dict[str, dict[str, np.ndarray]] = {}
    fusions: dict[str, dict[str, Any]] = {}
    for name, pools in (("current", current), ("tuned", tuned)):
        _, fusion, _, _, _ = choose_fusion(pools, depth)
        hybrid, hr = evaluate(pools, fusion_fn(fusion, depth))
        dense, dr = evaluate(pools, lambda p: p.scores["dense"])
        figs[name] = {"hybrid": brief(hybrid), "dense": brief(dense), "fusion": fusion}
        ranks[name], fusions[name] = {"hybrid": hr, "dense": dr}, fusion
    figs["difference"] = {
        f"{method} {metric}": paired_bootstrap(ranks["current"][method], ranks["tuned"][method], metric)
        for method, metric in (("dense", "RR@10"), ("hybrid", "RR@10"), ("hybrid", "RR@100"), ("hybrid", "MRR"))}
    better = objective(figs["tuned"]["hybrid"]) > objective(figs["current"]["hybrid"]) if current else False
    return Comparison(figs, fusions["tuned"], better)


RETRAINED = "auto"  # what `tune_index` retrains on a tuned encoder, and the check trains (`train_variants`)


def reranked_validation(store: TicketStore, inp: EvalInputs, encoder: Encoder, index_dir: Path,
                        fusion: dict[str, Any], depth: int, train_before: datetime, valid_before: datetime,
                        progress: bool, log: Callable[[str], None]) -> dict[str, Any] | None:
    """What a user would get on validation with this first stage: the validation MRR of the order search would
    use after training on it (`decide_install`'s choice among RETRAINED trained on it, the general model and
    first-stage order), over every validation duplicate (a master outside the top 100 counts at its own rank).
    Nothing is installed. None when there is nothing to train on (then the first stage is the pipeline)."""
    where = IndexDir(index_dir)
    out_dir = where.root / ".pipeline-check"
    shutil.rmtree(out_dir, ignore_errors=True)
    try:
        rr = run_rerankers(store, inp, encoder, index_dir, fusion, depth, train_before, valid_before, out_dir,
                           variants=train_variants(RETRAINED), progress=progress, log=log, install=False)
    except QueryError as exc:
        log(f"    no reranker to compare: {exc}")
        return None
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    d = rr["decision"]
    mrr = {"own": d["valid_mrr"], "general": d["general_valid_mrr"], "first_stage": d["first_stage_valid_mrr"]}
    return {"use": d["use"], "MRR": mrr[d["use"]], "first_stage_MRR": d["first_stage_valid_mrr"],
            "queries": d["queries"]}


@dataclass
class TuneResult:
    installed: bool
    reason: str
    base_model: str
    examples: int
    batches: int
    fit: dict[str, Any] | None = None
    validation: dict[str, Any] | None = None  # the exact comparison (None when the subset showed no gain)
    encoder_key: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    # for the caller that evaluates further (the experiment): the tuned encoder, its inputs and fusion
    encoder: Encoder | None = None
    inputs: EvalInputs | None = None
    fusion: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        keep = ("installed", "reason", "base_model", "examples", "batches", "fit", "validation", "encoder_key",
                "seconds", "fusion")
        return {k: getattr(self, k) for k in keep}


def line(fig: dict[str, Any]) -> str:
    h, d = fig["hybrid"], fig["dense"]
    return f"hybrid RR@10 {h['RR@10']:.3f} RR@100 {h['RR@100']:.3f} MRR {h['MRR']:.3f}, dense RR@10 {d['RR@10']:.3f}"


def tune_encoder(
    index_dir: Path, store: TicketStore, inp: EvalInputs, encoder: Encoder, train_before: datetime,
    valid_before: datetime, settings: Settings, cfg: TuneConfig | None = None, progress: bool = True,
    log: Callable[[str], None] = print, install: bool = True, measure: bool = False,
) -> TuneResult:
    """Tune a copy of the index's encoder on its train-period links; install it when validation improves.

    `encoder` and `inp` are the index's current encoder and its evaluation inputs (left as they are). With
    `install=False` nothing in the index changes; the tuned model's embeddings are still cached in the store
    under its own key. With `measure`, the best tuned epoch is checked on the whole index even when it does not
    beat the current encoder on the validation subset (an experiment reports its rows either way). The
    reranker is not retrained here (`tune_index` does it); the whole pipeline is checked by
    `reranked_validation`, for the current and the tuned first stage, once the tuned one validates better."""
    cfg = cfg or TuneConfig()
    where = IndexDir(index_dir)
    manifest = Manifest.load(index_dir)
    base = str(manifest.extra.get("tuned_from", manifest.model))
    depth = settings.fusion_depth
    fusion = manifest.fusion
    ev = inp.ev
    t0 = time.perf_counter()
    train_pools, _ = kind_pools(inp, store, encoder, FULL, ev.queries(until=train_before))
    examples = tuning_examples(inp, excluded_negatives(store, inp), train_pools, fusion_fn(fusion, depth), cfg)
    valid_pools, _ = kind_pools(inp, store, encoder, FULL, ev.queries(train_before, valid_before))
    batches = group_safe_batches(examples, cfg.batch_size, cfg.seed)
    result = TuneResult(False, "", base, len(examples), len(batches))
    log(f"    {len(examples)} train examples from {len(train_pools)} train duplicates ({len(batches)} group-safe "
        f"batches of up to {cfg.batch_size}); {len(valid_pools)} validation queries")
    if len(examples) < 2 or not valid_pools:
        result.reason = (f"too few links to tune on: {len(examples)} train examples and {len(valid_pools)} "
                         "validation queries; the current encoder stays")
        return result
    subset = validation_subset(inp, valid_pools, fusion, depth, valid_before, cfg)
    start = subset.evaluate(inp.dense[subset.items], inp.title[subset.items])
    log(f"    validation subset: {len(subset.items)} tickets, {len(subset.queries)} queries; current encoder: "
        f"{line(start)}")
    texts = [ticket_text(store.schema, t, b) for t, b in zip(ev.titles, ev.bodies)]
    tuned = Encoder(base, settings=settings.model_copy(update={"max_seq_length": encoder.max_seq_length}))

    def check() -> dict[str, Any]:
        items = [int(i) for i in subset.items]
        dense = tuned.encode([texts[i] for i in items], progress=progress, desc="validation subset")
        title = tuned.encode([ev.titles[i] for i in items], progress=progress, desc="validation titles")
        return subset.evaluate(dense, title)

    fit = fit_encoder(tuned, texts, examples, cfg, check, start, progress, log, batches)
    result.fit = {"history": fit.history, "best_epoch": fit.best_epoch, "beats_start": fit.beats_start,
                  "seconds": round(fit.seconds, 1),
                  "stopped": fit.stopped, "subset": {"tickets": len(subset.items), "queries": len(subset.queries)},
                  "config": asdict(cfg)}
    result.seconds["fit"] = round(fit.seconds, 1)
    if not fit.beats_start:
        result.reason = (f"no epoch beat the current encoder on the validation subset ({line(start)}; best tuned "
                         f"epoch {fit.best_epoch}: {line(fit.best)}); the current encoder stays")
        if not measure:
            return result
    # the exact check: the whole index re-encoded by the best epoch's model
    staged = where.staged_encoder_path
    shutil.rmtree(staged, ignore_errors=True)
    meta = {"name": f"{tuned.name}-tuned", "tuned_from": base,  # `tuned` was loaded from the base model
            "tuned_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "train_before": train_before.isoformat(), "valid_before": valid_before.isoformat(),
            "examples": len(examples), "best_epoch": fit.best_epoch, "loss": "MultipleNegativesRankingLoss "
            "(query_to_doc + doc_to_query), group-safe batches, hybrid hard negatives"}

    def write(tmp: Path) -> None:
        tuned.model.save(str(tmp))
        atomic_write_json(tmp / MODEL_META, meta)

    atomic_write_dir(staged, write)
    try:
        tuned_enc = Encoder(str(staged), settings=settings.model_copy(
            update={"max_seq_length": encoder.max_seq_length}))
        r0 = time.perf_counter()
        log(f"    re-encoding the index with the tuned encoder ({tuned_enc.key})")
        tinp = load_eval_inputs(index_dir, store, tuned_enc)
        result.seconds["re_encode"] = round(time.perf_counter() - r0, 1)
        tuned_pools, _ = kind_pools(tinp, store, tuned_enc, FULL, ev.queries(train_before, valid_before))
        cmp = compare_on_validation(valid_pools, tuned_pools, depth)
        result.validation, result.encoder_key = cmp.figures, tuned_enc.key
        result.encoder, result.inputs, result.fusion = tuned_enc, tinp, cmp.tuned_fusion
        figures = (f"validation (whole index, fusion re-tuned for each) current {line(cmp.figures['current'])}; "
                   f"tuned {line(cmp.figures['tuned'])}")
        if not cmp.better:
            result.reason = (f"the tuned encoder (epoch {fit.best_epoch}) does not improve validation: {figures}; "
                             "the current encoder stays")
            return result
        # the whole pipeline: a reranker trained on each first stage, and what search would use on top of it
        log("    the reranked pipeline on each encoder (validation)")
        now = reranked_validation(store, inp, encoder, index_dir, fusion, depth, train_before, valid_before,
                                  progress, log)
        then = reranked_validation(store, tinp, tuned_enc, index_dir, cmp.tuned_fusion, depth, train_before,
                                   valid_before, progress, log)
        if now is not None and then is not None:
            cmp.figures["reranked"] = {"current": now, "tuned": then}
            said = (f"reranked validation MRR current {now['MRR']:.3f} ({now['use']}) against tuned "
                    f"{then['MRR']:.3f} ({then['use']}) over {then['queries']} queries")
            if then["MRR"] <= now["MRR"]:
                result.reason = (f"the tuned encoder's first stage improves validation ({figures}), but the reranked "
                                 f"pipeline on it does not: {said}; the current encoder stays")
                return result
            figures += f"; {said}"
        result.reason = f"the tuned encoder improves validation: {figures}"
        if not install:
            return result
        atomic_write_dir(where.encoder_path, lambda tmp: shutil.copytree(staged, tmp, dirs_exist_ok=True))
        installed = Encoder(str(where.encoder_path), settings=tuned_enc.settings)
        if installed.key != tuned_enc.key:  # the identity must not depend on the folder
            raise RuntimeError(f"tuned encoder key changed on install: {tuned_enc.key} -> {installed.key}")
        where.uninstall_reranker()  # trained on the old encoder's token states
        build_index(index_dir, store, installed, str(where.encoder_path), settings, progress=progress)
        m = Manifest.load(index_dir)
        m.fusion = cmp.tuned_fusion
        m.extra = {**m.extra, "tuned_from": base, "tuning": {
            "validation": cmp.figures, "best_epoch": fit.best_epoch, "examples": len(examples),
            "train_before": train_before.isoformat(), "valid_before": valid_before.isoformat()}}
        m.save(index_dir)
        prepare_query_encoder(installed, log)  # the tuned encoder's own, here, not on the first search
        result.encoder, result.installed = installed, True
        result.seconds["total"] = round(time.perf_counter() - t0, 1)
        return result
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def tune_index(
    index_dir: Path, train_before: datetime | None, valid_before: datetime | None, settings: Settings,
    cfg: TuneConfig | None = None, progress: bool = True, log: Callable[[str], None] = print,
    retrain: bool = True,
) -> dict[str, Any]:
    """`ticketsearch tune-encoder`: tune, install when validation improves, then retrain the reranker on top."""

    d = IndexDir(index_dir)
    manifest = load_manifest(d)
    with open_store(d, read_only=False) as store:
        encoder = open_encoder(d, settings, manifest)
        inp = load_eval_inputs(index_dir, store, encoder)
        if train_before is None or valid_before is None:
            tb, vb = time_split(inp)
            train_before, valid_before = train_before or tb, valid_before or vb
        log(f"tune {encoder.name} on links before {train_before:%Y-%m-%d}, validate before {valid_before:%Y-%m-%d}")
        res = tune_encoder(index_dir, store, inp, encoder, train_before, valid_before, settings, cfg, progress, log)
    out: dict[str, Any] = {"tune": res.to_dict()}
    log(("installed the tuned encoder: " if res.installed else "kept the current encoder: ") + res.reason)
    if res.installed and retrain:
        log("retraining the reranker on the tuned encoder")
        rr = train_index(index_dir, train_before, valid_before, RETRAINED, settings, TrainConfig(),
                         progress=progress, log=log)
        out["rerank"] = {k: rr[k] for k in ("decision", "installed", "test", "first_stage") if k in rr}
    atomic_write_json(d.tune_decision_path, json.loads(json.dumps(out, default=str)))
    return out
