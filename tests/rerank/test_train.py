"""The logistic start of the pair model's linear skip (rerank/train.py: fit_pair_skip)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ticketsearch.rerank.model import PairModel, RerankConfig
from ticketsearch.rerank.train import Group, TrainData, fit_pair_skip


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
