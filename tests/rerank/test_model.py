from __future__ import annotations

import pytest
import torch

from ticketsearch.index_data.features import FeatureSpace
from ticketsearch.index_data.schema import load_schema
from ticketsearch.rerank.model import PairModel, RerankConfig


def batch(b: int = 3, t: int = 7, d: int = 384, feat: int = 20, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(b, t, d, generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    mask[0, 5:] = 0  # first item is shorter: its tail is padding
    feats = torch.rand(b, feat, generator=g)
    return tokens, mask, feats


@pytest.mark.parametrize("schema", ["support", "jira"])
@pytest.mark.parametrize("arch", ["cross", "concat"])
def test_shapes_for_both_schemas(schema: str, arch: str) -> None:
    rows = [{}] if schema == "jira" else [{"category": "high", "affected_count": 3.0}]
    fs = FeatureSpace.fit(load_schema(schema), rows)
    model = PairModel(RerankConfig(feat_dim=fs.dim, arch=arch, pair_dim=5)).eval()
    tokens, mask, _ = batch()
    feats = torch.from_numpy(fs.matrix([{}] * 3))
    s, attn = model.item_vectors(tokens, mask, feats, "source")
    assert s.shape == (3, 384)
    if arch == "cross":
        assert attn.shape == (3, 7) and torch.allclose(attn.sum(1), torch.ones(3), atol=1e-5)
    logits = model(tokens, mask, feats, tokens, mask, feats, torch.zeros(3, 5))
    assert logits.shape == (3,)


@pytest.mark.parametrize("pooled", [False, True])
@pytest.mark.parametrize("shortcuts", [True, False])  # the folded attention and nn.MultiheadAttention
def test_padding_gets_zero_attention_and_extra_padding_changes_nothing(pooled: bool, shortcuts: bool) -> None:
    torch.manual_seed(0)
    model = PairModel(RerankConfig(feat_dim=20, pooled_residual=pooled)).eval()
    model.set_shortcuts(shortcuts)
    tokens, mask, feats = batch()
    with torch.no_grad():
        s, attn = model.item_vectors(tokens, mask, feats, "source")
        assert (attn[0, 5:] == 0).all()
        # garbage in padded positions must not matter
        noisy = tokens.clone()
        noisy[0, 5:] = 1e3
        s2, _ = model.item_vectors(noisy, mask, feats, "source")
        assert torch.allclose(s, s2, atol=1e-5)
        # ten extra padding positions leave every vector and score unchanged
        pad_tokens = torch.cat([tokens, torch.randn(3, 10, 384)], dim=1)
        pad_mask = torch.cat([mask, torch.zeros(3, 10, dtype=torch.long)], dim=1)
        s3, attn3 = model.item_vectors(pad_tokens, pad_mask, feats, "source")
        assert torch.allclose(s, s3, atol=1e-5) and (attn3[:, 7:] == 0).all()
        a = model(tokens, mask, feats, tokens, mask, feats)
        b = model(pad_tokens, pad_mask, feats, tokens, mask, feats)
        assert torch.allclose(a, b, atol=1e-5)


def test_cached_item_vectors_equal_the_full_forward() -> None:
    torch.manual_seed(1)
    model = PairModel(RerankConfig(feat_dim=20, pair_dim=3)).eval()
    tokens, mask, feats = batch(b=5)
    pair = torch.rand(5, 3)
    with torch.no_grad():
        full = model(tokens[:1].expand(5, -1, -1), mask[:1].expand(5, -1), feats[:1].expand(5, -1),
                     tokens, mask, feats, pair)
        s, _ = model.item_vectors(tokens[:1], mask[:1], feats[:1], "source")
        t, _ = model.item_vectors(tokens, mask, feats, "target")  # what the index stores per candidate
        cached = model.score(s, t, pair)
    assert torch.allclose(full, cached, atol=1e-5)


def test_source_and_target_blocks_are_separate() -> None:
    model = PairModel(RerankConfig(feat_dim=4))
    assert model.fusion_source is not model.fusion_target
    names = {n.split(".")[0] for n, _ in model.named_parameters()}
    assert {"feature_encoder", "fusion_source", "fusion_target", "classifier"} == names
    assert PairModel(RerankConfig(feat_dim=4, pair_dim=3)).pair_skip is not None


@pytest.mark.parametrize("arch,pair_dim,prior", [("cross", 0, False), ("cross", 5, False), ("cross", 5, True),
                                                 ("concat", 0, True)])
def test_inference_shortcuts_equal_the_plain_computation(arch: str, pair_dim: int, prior: bool) -> None:
    """Attention folds the single query into the key/value weights and the head folds its first layer per
    source; both must give what nn.MultiheadAttention and the [s, t, s-t, s*t] head give, gradients too."""
    torch.manual_seed(3)
    model = PairModel(RerankConfig(feat_dim=20, arch=arch, pair_dim=pair_dim, cosine_prior=prior)).eval()
    for p in model.parameters():  # no zero-initialised layer: every term of the head must count
        torch.nn.init.normal_(p, std=0.05)
    tokens, mask, feats = batch(b=4, t=9)
    pair = torch.rand(4, pair_dim) if pair_dim else None
    def run(shortcuts: bool) -> tuple[torch.Tensor, ...]:
        model.set_shortcuts(shortcuts)
        model.zero_grad()
        s, a = model.item_vectors(tokens, mask, feats, "source")
        t, _ = model.item_vectors(tokens, mask, feats, "target")
        logits = model.score(s[:1], t, pair)
        logits.sum().backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        return s.detach(), a, logits.detach(), grads

    s_fast, a_fast, fast, g_fast = run(True)
    s_plain, a_plain, plain, g_plain = run(False)
    assert torch.allclose(s_fast, s_plain, atol=1e-5, rtol=1e-5)
    if arch == "cross":
        assert torch.allclose(a_fast, a_plain, atol=1e-6) and (a_fast[0, 5:] == 0).all()
    assert fast.abs().max() > 1e-3  # a score that reads the vectors, not a constant
    assert torch.allclose(fast, plain, atol=1e-5, rtol=1e-5)
    # training takes the same shortcuts: the gradients agree too
    assert g_fast.abs().max() > 0 and torch.allclose(g_fast, g_plain, atol=1e-5, rtol=1e-4)


def test_cosine_prior_starts_from_the_pooled_text_cosine() -> None:
    """With the prior, an untrained item vector is the scaled mean-pooled text embedding (the fused vector's
    gate starts at zero), so the cosine the skip reads is the bi-encoder's cosine; training moves the gate."""
    from ticketsearch.retrieval.encoder import pooled_unit

    torch.manual_seed(4)
    model = PairModel(RerankConfig(feat_dim=20, cosine_prior=True)).eval()
    tokens, mask, feats = batch(b=4, t=9)
    with torch.no_grad():
        s, _ = model.item_vectors(tokens, mask, feats, "source")
        t, _ = model.item_vectors(tokens, mask, feats.flip(0), "target")  # features do not matter yet
    pooled = pooled_unit(tokens, mask)
    cos = torch.nn.functional.cosine_similarity(s[:1], t)
    assert torch.allclose(cos, (pooled[:1] * pooled).sum(-1), atol=1e-5)
    assert model.pair_skip is not None and model.pair_skip.in_features == 1
    # one optimiser step on a pair loss opens the gate: the fused (feature-dependent) part starts to count
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    logits = model(tokens, mask, feats, tokens.flip(0), mask.flip(0), feats.flip(0))
    torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([1.0, 0.0, 1.0, 0.0])).backward()
    opt.step()
    assert model.fused_gate is not None and model.fused_gate.item() != 0.0
