"""Training the pair model on mined groups (one query, its positives, its hard and random negatives).

Losses: BCE with pos_weight (the article's), a listwise softmax over one positive and its negatives, or
both. Early stopping on the validation MRR after reranking each validation query's top candidates.
Runs are seeded. The text encoder stays frozen: token states come from the on-disk TokenCache.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ticketsearch.retrieval.encoder import pooled_unit
from ticketsearch.retrieval.evaluation import first_hit_rank

from .model import PairModel, RerankConfig
from .token_cache import Tokens, pad_batch


@dataclass
class Group:
    query: int  # ticket index
    positives: list[int]
    negatives: list[int]


@dataclass
class RankList:
    """A query's first-stage top candidates (in first-stage order) for validation and evaluation."""

    query: int
    candidates: list[int]
    hits: np.ndarray  # bool per candidate
    fallback_rank: float  # rank of the first hit beyond the list (first stage), or inf


@dataclass
class TrainData:
    tokens: Callable[[int], Tokens]  # ticket index -> token states
    feats: np.ndarray  # [n_tickets, feat_dim]
    pair: Callable[[int, int], np.ndarray] | None  # (query, candidate) -> pair vector
    groups: list[Group]
    valid: list[RankList]


@dataclass
class TrainConfig:
    loss: Literal["bce", "listwise", "both"] = "both"
    epochs: int = 20
    patience: int = 3
    groups_per_batch: int = 16
    negatives_per_group: int = 7
    lr: float = 1e-4
    skip_lr_mult: float = 1.0  # the linear pair-input skip starts from its logistic-regression fit
    weight_decay: float = 0.01
    seed: int = 0
    init_seed: int | None = None  # the model's initial weights (None: `seed`); `seed` alone then orders the data
    shuffle_features: bool = False  # ablation: features permuted across tickets
    time_budget_s: float = 15 * 60  # per training run; early stopping usually ends it sooner


@dataclass
class TrainResult:
    model: PairModel
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_valid_mrr: float = 0.0
    seconds: float = 0.0
    epoch_ranks: list[np.ndarray] = field(default_factory=list)  # each epoch's validation ranks, as history


def _feats(data: TrainData, idx: Sequence[int], perm: np.ndarray | None) -> torch.Tensor:
    rows = np.asarray(idx) if perm is None else perm[np.asarray(idx)]
    return torch.from_numpy(data.feats[rows])


def item_vectors(
    model: PairModel, data: TrainData, idx: Sequence[int], side: str, perm: np.ndarray | None = None,
    batch: int = 64,
) -> torch.Tensor:
    out = []
    for b in range(0, len(idx), batch):
        part = list(idx[b : b + batch])
        toks, mask = pad_batch([data.tokens(i) for i in part])
        v, _ = model.item_vectors(toks, mask, _feats(data, part, perm), side)  # type: ignore[arg-type]  # side is "source" or "target" (callers pass the literals as str)
        out.append(v)
    return torch.cat(out) if out else torch.zeros(0, model.cfg.text_dim)


def pair_tensor(data: TrainData, q: int, cands: Sequence[int]) -> torch.Tensor | None:
    if data.pair is None:
        return None
    return torch.from_numpy(np.stack([data.pair(q, c) for c in cands]))


@torch.no_grad()
def rerank_scores(
    model: PairModel, data: TrainData, lists: Sequence[RankList], perm: np.ndarray | None = None
) -> list[np.ndarray]:
    """Model logits for every candidate of every list (target vectors computed once per ticket)."""
    model.eval()
    uniq = sorted({c for r in lists for c in r.candidates})
    tv = item_vectors(model, data, uniq, "target", perm)
    pos = {c: i for i, c in enumerate(uniq)}
    qv = item_vectors(model, data, [r.query for r in lists], "source", perm)
    out = []
    for i, r in enumerate(lists):
        t = tv[[pos[c] for c in r.candidates]]
        out.append(model.score(qv[i : i + 1], t, pair_tensor(data, r.query, r.candidates)).numpy())
    return out


def reranked_ranks(lists: Sequence[RankList], scores: Sequence[np.ndarray]) -> np.ndarray:
    """Rank of the first hit after reordering each list by score (ties against the model); a query whose
    list holds no hit keeps its first-stage rank."""
    ranks: list[float] = []
    for r, s in zip(lists, scores):
        if r.hits.any():
            ranks.append(first_hit_rank(s, r.hits))
        else:
            ranks.append(r.fallback_rank)
    return np.asarray(ranks, dtype=np.float64)


def train(data: TrainData, cfg: RerankConfig, tcfg: TrainConfig, progress: bool = True,
          log: Callable[[str], None] = print) -> TrainResult:
    torch.manual_seed(tcfg.seed if tcfg.init_seed is None else tcfg.init_seed)
    rng = np.random.default_rng(tcfg.seed)
    perm = rng.permutation(len(data.feats)) if tcfg.shuffle_features else None
    model = PairModel(cfg)
    if tcfg.init_seed is not None:
        torch.manual_seed(tcfg.seed)  # dropout follows the run's seed
    skip = [p for n, p in model.named_parameters() if n.startswith("pair_skip")]
    deep = [p for n, p in model.named_parameters() if not n.startswith("pair_skip")]
    opt = torch.optim.AdamW(
        [{"params": deep, "lr": tcfg.lr}, {"params": skip, "lr": tcfg.lr * tcfg.skip_lr_mult, "weight_decay": 0.0}],
        weight_decay=tcfg.weight_decay,
    )
    groups = [g for g in data.groups if g.positives and g.negatives]
    n_pos = sum(1 for _ in groups)
    n_neg = sum(min(len(g.negatives), tcfg.negatives_per_group) for g in groups)
    pos_weight = torch.tensor(n_neg / max(n_pos, 1))
    result = TrainResult(model=model)
    start = time.perf_counter()
    if model.pair_skip is not None:
        # start from the convex part: a logistic regression on the skip inputs (pair inputs, and the
        # prior's cosine) with the deep head at zero; keep it unless the deep part improves validation MRR
        fit_pair_skip(model, data, groups)
        ranks = reranked_ranks(data.valid, rerank_scores(model, data, data.valid, perm)) if data.valid else np.array([])
        mrr0 = float(np.mean(1.0 / ranks)) if len(ranks) else 0.0
        result.epoch_ranks.append(ranks)
        result.history.append({"epoch": 0, "loss": math.nan, "valid_mrr": mrr0,
                               "valid_rr10": float(np.mean(ranks <= 10)) if len(ranks) else 0.0})
        result.best_valid_mrr, result.best_epoch = mrr0, 0
        log(f"      epoch 0 (logistic regression on the skip inputs): validation MRR {mrr0:.4f}")
    best_state = copy.deepcopy(model.state_dict())
    bad = 0
    for epoch in range(tcfg.epochs):
        model.train()
        order = rng.permutation(len(groups))
        losses = []
        steps = range(0, len(order), tcfg.groups_per_batch)
        for b in tqdm(steps, desc=f"epoch {epoch + 1}", disable=not progress, mininterval=1.0):
            batch = [groups[i] for i in order[b : b + tcfg.groups_per_batch]]
            n = tcfg.negatives_per_group
            targets, labels, pairs_q = [], [], []
            for g in batch:
                pos = g.positives[rng.integers(len(g.positives))]
                negs = list(rng.choice(g.negatives, size=min(n, len(g.negatives)), replace=False))
                negs += [negs[-1]] * (n - len(negs))  # pad to a fixed width by repeating
                targets.append([pos, *negs])
                labels.append([1.0] + [0.0] * n)
                pairs_q.append(g.query)
            qv = item_vectors(model, data, [g.query for g in batch], "source", perm, batch=len(batch))
            flat = [c for row in targets for c in row]
            tv = item_vectors(model, data, flat, "target", perm, batch=len(flat)).view(len(batch), n + 1, -1)
            pair = None
            if data.pair is not None:
                pair = torch.stack([pair_tensor(data, q, row) for q, row in zip(pairs_q, targets)])  # type: ignore[misc]  # pair_tensor is not None here: data.pair is set
            logits = torch.stack([
                model.score(qv[i : i + 1], tv[i], None if pair is None else pair[i]) for i in range(len(batch))
            ])
            y = torch.tensor(labels)
            loss = torch.zeros(())
            if tcfg.loss in ("bce", "both"):
                loss = loss + F.binary_cross_entropy_with_logits(logits, y, pos_weight=pos_weight)
            if tcfg.loss in ("listwise", "both"):
                loss = loss + F.cross_entropy(logits, torch.zeros(len(batch), dtype=torch.long))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(float(loss.detach()))
        ranks = reranked_ranks(data.valid, rerank_scores(model, data, data.valid, perm)) if data.valid else np.array([])
        mrr = float(np.mean(1.0 / ranks)) if len(ranks) else 0.0
        rr10 = float(np.mean(ranks <= 10)) if len(ranks) else 0.0
        result.epoch_ranks.append(ranks)
        result.history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else math.nan,
                               "valid_mrr": mrr, "valid_rr10": rr10})
        log(f"      epoch {epoch + 1}: loss {result.history[-1]['loss']:.4f}, "
            f"validation MRR {mrr:.4f}, RR@10 {rr10:.3f}")
        if mrr > result.best_valid_mrr or result.best_epoch < 0:  # epoch 0 (if any) counts as best so far
            result.best_valid_mrr, result.best_epoch = mrr, epoch + 1
            best_state = copy.deepcopy(model.state_dict())
            bad = 0
        else:
            bad += 1
            if bad >= tcfg.patience:
                break
        if time.perf_counter() - start > tcfg.time_budget_s:
            log("      time budget reached")
            break
    model.load_state_dict(best_state)
    model.eval()
    result.seconds = time.perf_counter() - start
    return result


def fit_pair_skip(model: PairModel, data: TrainData, groups: Sequence[Group], l2: float = 1e-3) -> None:
    """Fit the linear skip as an L2-regularised logistic regression on every training pair. Its inputs are
    the pair inputs and, with the cosine prior, cos(s, t), which at the start (gate zero) is the cosine of
    the two items' mean-pooled text embeddings."""
    assert model.pair_skip is not None
    prior = model.cfg.cosine_prior
    assert data.pair is not None or prior
    pooled: dict[int, np.ndarray] = {}

    def unit(i: int) -> np.ndarray:
        if i not in pooled:
            toks, mask = pad_batch([data.tokens(i)])
            pooled[i] = pooled_unit(toks.float(), mask)[0].numpy()
        return pooled[i]

    def row(q: int, c: int) -> np.ndarray:
        parts = [data.pair(q, c)] if data.pair is not None else []
        if prior:
            parts.append(np.array([float(unit(q) @ unit(c))], dtype=np.float32))
        return np.concatenate(parts).astype(np.float32)

    xs, ys = [], []
    for g in groups:
        for c in g.positives:
            xs.append(row(g.query, c))
            ys.append(1.0)
        for c in g.negatives:
            xs.append(row(g.query, c))
            ys.append(0.0)
    w, b = fit_logistic(np.stack(xs), np.asarray(ys), l2)
    with torch.no_grad():
        model.pair_skip.weight.copy_(torch.from_numpy(w).float().unsqueeze(0))
        model.pair_skip.bias.copy_(torch.tensor([b], dtype=torch.float32))


def fit_logistic(x: np.ndarray, labels: np.ndarray, l2: float = 1e-3,
                 prior: tuple[np.ndarray, float] | None = None) -> tuple[np.ndarray, float]:
    """The article's BCE with pos_weight (negatives / positives), averaged over the pairs, plus l2 * |w|^2 (the
    bias unpenalised), minimised exactly: scikit-learn minimises C * sum(sample_weight * log loss) + |w|^2 / 2,
    the same objective at C = 1 / (2 l2 n). Returns (weights, bias); zeros when one class is missing.
    With `prior` (weights, bias) the penalty is l2 * |w - prior weights|^2 (a refit of another model on these
    pairs, pulled toward it), and a missing class returns the prior."""
    from sklearn.linear_model import LogisticRegression  # deferred: scikit-learn, pyarrow

    x = np.asarray(x, np.float64)
    y = np.asarray(labels).astype(np.int64)
    if len(np.unique(y)) < 2:
        return (np.zeros(x.shape[1]), 0.0) if prior is None else (np.asarray(prior[0], np.float64).copy(),
                                                                   float(prior[1]))
    pos_weight = (len(y) - y.sum()) / max(float(y.sum()), 1.0)
    if prior is not None:
        return _fit_toward(x, y, np.where(y == 1, pos_weight, 1.0), l2, np.asarray(prior[0], np.float64),
                           float(prior[1]))
    lr = LogisticRegression(C=1.0 / (2.0 * l2 * len(y)), solver="lbfgs", max_iter=1000, tol=1e-8)
    lr.fit(x, y, sample_weight=np.where(y == 1, pos_weight, 1.0))
    return lr.coef_[0].copy(), float(lr.intercept_[0])


def _fit_toward(x: np.ndarray, y: np.ndarray, sw: np.ndarray, l2: float, w0: np.ndarray,
                b0: float) -> tuple[np.ndarray, float]:
    """mean(sw * log loss) + l2 * |w - w0|^2 by L-BFGS from (w0, b0) (convex: the minimum is unique)."""
    from scipy.optimize import minimize  # deferred: scipy (scikit-learn's)
    from scipy.special import expit

    n = len(y)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:-1], theta[-1]
        z = x @ w + b
        loss = sw * (np.logaddexp(0.0, z) - y * z)  # log loss of sigmoid(z) against y, stably
        g = sw * (expit(z) - y) / n
        d = w - w0
        return float(loss.sum() / n + l2 * d @ d), np.append(x.T @ g + 2.0 * l2 * d, g.sum())

    res = minimize(objective, np.append(w0, b0), jac=True, method="L-BFGS-B", options={"maxiter": 2000,
                                                                                        "gtol": 1e-10})
    return res.x[:-1].copy(), float(res.x[-1])
