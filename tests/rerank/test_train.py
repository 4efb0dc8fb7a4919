"""The pair model's training (rerank/train.py): the logistic start of its skip, what each epoch keeps, the seeds."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ticketsearch.rerank.model import PairModel, RerankConfig
from ticketsearch.rerank.token_cache import Tokens
from ticketsearch.rerank.train import Group, RankList, TrainConfig, TrainData, fit_logistic, fit_pair_skip, train


def _reference_fit(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """The objective spelled out in torch: mean BCE with pos_weight + l2 * |w|^2, bias unpenalised."""
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.float64))
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    pos_weight = torch.tensor((len(y) - y.sum()) / y.sum(), dtype=torch.float64)
    opt = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe", tolerance_grad=1e-12)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(xt @ w + b, yt, pos_weight=pos_weight) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), float(b.detach())


def test_fit_pair_skip_minimises_the_weighted_l2_logistic_loss() -> None:
    rng = np.random.default_rng(0)
    n_tickets, pair_dim = 400, 3
    pair_x = rng.normal(size=(n_tickets, n_tickets, pair_dim)).astype(np.float32)
    true_w = np.array([2.0, -1.0, 0.0], dtype=np.float32)
    groups, xs, ys = [], [], []
    for q in range(0, 200):
        cands = rng.choice(np.arange(200, n_tickets), size=8, replace=False)
        prob = 1.0 / (1.0 + np.exp(-(pair_x[q, cands] @ true_w - 2.0)))
        label = rng.random(8) < prob
        groups.append(Group(query=q, positives=[int(c) for c in cands[label]],
                            negatives=[int(c) for c in cands[~label]]))
        for c in [*groups[-1].positives, *groups[-1].negatives]:
            xs.append(pair_x[q, c])
        ys += [1] * len(groups[-1].positives) + [0] * len(groups[-1].negatives)
    data = TrainData(tokens=lambda i: None, feats=np.zeros((n_tickets, 4), np.float32),  # type: ignore[arg-type,return-value]  # no prior: tokens are never read
                     pair=lambda q, c: pair_x[q, c], groups=groups, valid=[])
    model = PairModel(RerankConfig(feat_dim=4, pair_dim=pair_dim))
    fit_pair_skip(model, data, groups, l2=1e-3)
    assert model.pair_skip is not None
    w = model.pair_skip.weight.detach().numpy()[0]
    b = float(model.pair_skip.bias.detach()[0])
    ref_w, ref_b = _reference_fit(np.stack(xs).astype(np.float64), np.asarray(ys), 1e-3)
    assert np.abs(w - ref_w).max() < 1e-3 and abs(b - ref_b) < 1e-3
    # and it found the generating direction: the informative inputs carry their signs, the noise input little
    assert w[0] > 1.0 and w[1] < -0.5 and abs(w[2]) < 0.3


def _tiny_data(seed: int = 0) -> TrainData:
    """60 tickets of random token states (width 16) in 20 topics; each train query's positive shares its topic."""
    rng = np.random.default_rng(seed)
    topics = rng.normal(size=(20, 16))
    toks = [Tokens((topics[i % 20] + 0.5 * rng.normal(size=(5, 16))).astype(np.float16), np.arange(5, dtype=np.int32))
            for i in range(60)]
    groups = [Group(query=q, positives=[q + 20], negatives=[int(c) for c in range(60) if c % 20 != q % 20][:9])
              for q in range(20)]
    valid = [RankList(q, [c for c in range(20, 60) if c != q][:12], np.array([c % 20 == q % 20 for c in
                      [c for c in range(20, 60) if c != q][:12]]), float("inf")) for q in range(40, 60)]
    return TrainData(tokens=lambda i: toks[i], feats=np.zeros((60, 4), np.float32),
                     pair=lambda q, c: np.array([float(q % 3 == c % 3)], np.float32), groups=groups, valid=valid)


def test_each_epochs_validation_ranks_are_kept_beside_its_mrr() -> None:
    data = _tiny_data()
    cfg = RerankConfig(feat_dim=4, text_dim=16, heads=2, ff_dim=32, feat_hidden=16, pair_dim=1, cosine_prior=True)
    res = train(data, cfg, TrainConfig(epochs=3, patience=5, groups_per_batch=4), progress=False, log=lambda m: None)
    assert len(res.epoch_ranks) == len(res.history) == 4  # the logistic start, then three epochs
    for h, ranks in zip(res.history, res.epoch_ranks):
        assert len(ranks) == len(data.valid)
        assert abs(float(np.mean(1.0 / ranks)) - h["valid_mrr"]) < 1e-12


def test_init_seed_fixes_the_starting_weights_and_seed_the_rest() -> None:
    data = _tiny_data()
    cfg = RerankConfig(feat_dim=4, text_dim=16, heads=2, ff_dim=32, feat_hidden=16, pair_dim=1, cosine_prior=True)

    def weights(**kw: int) -> list[torch.Tensor]:
        tcfg = TrainConfig(patience=5, groups_per_batch=4, **kw)
        return list(train(data, cfg, tcfg, progress=False, log=lambda m: None).model.state_dict().values())

    def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
        return all(torch.equal(x, y) for x, y in zip(a, b))

    # no epochs: the model is its starting weights (and the deterministic logistic skip)
    assert same(weights(epochs=0, seed=1, init_seed=0), weights(epochs=0, seed=2, init_seed=0))
    assert not same(weights(epochs=0, seed=1), weights(epochs=0, seed=2))
    assert same(weights(epochs=0, seed=0), weights(epochs=0, seed=5, init_seed=0))

    # trained, the seed still orders the data and draws the negatives: the same start, another first epoch
    def first_loss(**kw: int) -> float:
        tcfg = TrainConfig(epochs=1, patience=5, groups_per_batch=4, **kw)
        return float(train(data, cfg, tcfg, progress=False, log=lambda m: None).history[1]["loss"])

    assert first_loss(seed=1, init_seed=0) != first_loss(seed=2, init_seed=0)
    assert first_loss(seed=3, init_seed=0) == first_loss(seed=3, init_seed=0)


def test_a_refit_toward_a_prior_stays_there_when_strong_and_reaches_the_data_when_weak() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 3))
    y = (rng.random(600) < 1.0 / (1.0 + np.exp(-(x @ np.array([2.0, -1.0, 0.0]) - 1.5)))).astype(float)
    prior = (np.array([-1.0, 1.0, 3.0]), 0.5)
    free_w, free_b = fit_logistic(x, y, 1e-6)
    near_w, _ = fit_logistic(x, y, 1e-6, prior=prior)  # hardly pulled: the data's own fit
    assert np.abs(near_w - free_w).max() < 0.05
    far_w, _ = fit_logistic(x, y, 1e3, prior=prior)  # pulled hard: the prior's weights
    assert np.abs(far_w - prior[0]).max() < 0.01
    mid_w, _ = fit_logistic(x, y, 0.05, prior=prior)  # in between, on each weight
    assert all(min(a, b) - 1e-9 <= m <= max(a, b) + 1e-9 for a, m, b in zip(free_w, mid_w, prior[0]))
    assert np.abs(mid_w - free_w).max() > 0.1 and np.abs(mid_w - prior[0]).max() > 0.1
    # its objective, spelled out in torch with the penalty moved to the prior: the same minimum
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    pw = torch.tensor((len(y) - y.sum()) / y.sum(), dtype=torch.float64)

    def objective(w: np.ndarray, b: float) -> float:
        z = xt @ torch.from_numpy(w) + b
        d = torch.from_numpy(w - prior[0])
        return float(F.binary_cross_entropy_with_logits(z, yt, pos_weight=pw) + 0.05 * d.pow(2).sum())

    w_mid, b_mid = fit_logistic(x, y, 0.05, prior=prior)
    for dw in (np.array([0.01, 0, 0]), np.array([0, -0.01, 0]), np.array([0, 0, 0.01])):
        assert objective(w_mid, b_mid) < objective(w_mid + dw, b_mid)
    # one class only: nothing to learn, the prior as it was
    w1, b1 = fit_logistic(x, np.zeros(600), 0.05, prior=prior)
    assert np.array_equal(w1, prior[0]) and b1 == prior[1]
