"""The cross-attention fusion pair model (the article's architecture, with its defects fixed) and the
concatenation baseline.

Each item (the query ticket = source, a candidate = target) becomes one vector:
- cross: the item's feature embedding is the attention query over the item's token states (key/value),
  then residual + LayerNorm, a feed-forward block, residual + LayerNorm;
- concat: an MLP over concat(mean-pooled token states, feature vector).
A head scores [s, t, s - t, s * t] (+ optional pair-level inputs) to one logit.

Fixes over the article: a key padding mask (padding gets exactly zero attention, so extra padding leaves
every score unchanged) and attention weights that stay aligned with every token, [CLS] and [SEP] included.
Because an item's vector depends on that item alone, candidate vectors can be computed once and cached.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ticketsearch.retrieval.encoder import mean_pool, pooled_unit


@dataclass
class RerankConfig:
    feat_dim: int
    text_dim: int = 384
    arch: Literal["cross", "concat"] = "cross"
    feat_hidden: int = 256
    heads: int = 8
    ff_dim: int = 1024
    dropout: float = 0.1
    pair_dim: int = 0
    pooled_residual: bool = False  # experimental: add the mean-pooled token states to each item vector
    # a prior the model can only refine: each item vector starts as the (scaled) mean-pooled text embedding,
    # the fused vector enters through a gate that starts at zero, and the cosine of the two item vectors
    # reaches the logit through the linear skip, so training starts from dense-retrieval order
    cosine_prior: bool = False
    # pair inputs laid out by query kind (`pair_features.by_query_kind`): trained on short queries as well
    query_kinds: bool = False
    # pair inputs end with the agreement of the two texts' code terms (`pair_features.code_agreement`)
    code: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


class FeatureEncoder(nn.Module):
    """The article's MLP: structured feature vector -> text width (LayerNorm, GELU, Dropout)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, dropout: float) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(input_dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden_dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden_dim, output_dim), nn.LayerNorm(output_dim),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.encoder(features).unsqueeze(1)  # [B, 1, D]


class CrossAttentionFusion(nn.Module):
    """Features (query) attend over the item's token states (key/value), with a key padding mask."""

    def __init__(self, embed_dim: int, num_heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.shortcuts = True  # the single-query attention below; False: nn.MultiheadAttention itself
        self.cross_attention = nn.MultiheadAttention(embed_dim, num_heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.ffn = nn.Sequential(
            nn.Linear(embed_dim, ff_dim), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(ff_dim, embed_dim), nn.Dropout(dropout),
        )

    def forward(
        self, feature_embedding: torch.Tensor, tokens: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """feature_embedding [B,1,D], tokens [B,T,D], attention_mask [B,T] (1 = real token).

        Returns the fused vector [B, D] and the head-averaged attention over tokens [B, T] (zero on padding).
        """
        pad = attention_mask == 0
        if not self.shortcuts:
            attended, weights = self.cross_attention(
                query=feature_embedding, key=tokens, value=tokens, key_padding_mask=pad,
                need_weights=True, average_attn_weights=True,
            )
        else:
            attended, weights = self._single_query_attention(feature_embedding, tokens, pad)
        x = self.norm1(feature_embedding + attended)
        fused = self.norm2(x + self.ffn(x))
        return fused.squeeze(1), weights.squeeze(1)


    def _single_query_attention(
        self, query: torch.Tensor, tokens: torch.Tensor, pad: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The same multi-head attention for a single query vector, without projecting every token.

        With one query, q . (W_k x + b_k) = (W_k^T q) . x + const, and sum_t a_t (W_v x_t + b_v) =
        W_v (sum_t a_t x_t) + b_v. So each head folds its query into the key weights once and attends over
        the raw token states: O(T D H) work instead of the O(T D^2) of projecting every token to keys and
        values. Equal to `nn.MultiheadAttention` up to float rounding (tested), gradients included; in training
        the attention weights get the same dropout.
        """
        mha = self.cross_attention
        b, t, d = tokens.shape
        h = mha.num_heads
        dh = d // h
        w_q, w_k, w_v = mha.in_proj_weight.split(d)
        b_q, _, b_v = mha.in_proj_bias.split(d)
        q = (query.squeeze(1) @ w_q.T + b_q).view(b, h, dh)  # [B, H, dh]
        # W_k^T q per head: [H, B, dh] x [H, dh, D] -> [B, H, D] (batched matmuls; einsum was 10x slower here)
        u = torch.matmul(q.transpose(0, 1), w_k.view(h, dh, d)).transpose(0, 1)
        scores = torch.matmul(u, tokens.transpose(1, 2)) / dh**0.5  # [B, H, T]; the key bias: a per-head constant
        scores = scores.masked_fill(pad.unsqueeze(1), float("-inf"))
        attn = torch.softmax(scores, dim=-1)  # [B, H, T]; exactly zero on padding
        dropped = nn.functional.dropout(attn, mha.dropout, self.training) if mha.dropout else attn
        pooled = torch.matmul(dropped, tokens)  # [B, H, D]
        v = torch.matmul(pooled.transpose(0, 1), w_v.view(h, dh, d).transpose(1, 2)).transpose(0, 1)  # [B, H, dh]
        v = v + b_v.view(h, dh)
        attended = mha.out_proj(v.reshape(b, d)).unsqueeze(1)
        return attended, attn.mean(dim=1, keepdim=True)


class ConcatItem(nn.Module):
    """The baseline item vector: an MLP over concat(mean-pooled token states, feature vector)."""

    def __init__(self, text_dim: int, feat_dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(text_dim + feat_dim, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden, text_dim), nn.LayerNorm(text_dim),
        )

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([mean_pool(tokens, attention_mask), feats], dim=-1))


class PairModel(nn.Module):
    """Scores (source, target) pairs from per-item vectors; see the module docstring."""

    def __init__(self, cfg: RerankConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.text_dim
        if cfg.arch == "cross":
            self.feature_encoder = FeatureEncoder(cfg.feat_dim, cfg.feat_hidden, d, cfg.dropout)
            self.fusion_source = CrossAttentionFusion(d, cfg.heads, cfg.ff_dim, cfg.dropout)
            self.fusion_target = CrossAttentionFusion(d, cfg.heads, cfg.ff_dim, cfg.dropout)
        elif cfg.arch == "concat":
            self.concat_source = ConcatItem(d, cfg.feat_dim, cfg.feat_hidden * 2, cfg.dropout)
            self.concat_target = ConcatItem(d, cfg.feat_dim, cfg.feat_hidden * 2, cfg.dropout)
        else:
            raise ValueError(f"unknown architecture {cfg.arch!r}")
        self.classifier = nn.Sequential(
            nn.Linear(4 * d + cfg.pair_dim, d), nn.LayerNorm(d), nn.GELU(), nn.Dropout(cfg.dropout),
            nn.Linear(d, d // 2), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(d // 2, 1),
        )
        # pair-level inputs (and, with the cosine prior, cos(s, t)) also reach the logit through a linear skip,
        # so first-stage evidence (scores, rank, field agreement) is usable from the first step instead of
        # only through the deep head
        skip_dim = cfg.pair_dim + int(cfg.cosine_prior)
        self.pair_skip = nn.Linear(skip_dim, 1) if skip_dim else None
        self.fused_gate = nn.Parameter(torch.zeros(())) if cfg.cosine_prior else None
        if self.pair_skip is not None:
            # the deep head starts at zero and learns a correction on top of the pair-level evidence
            last = self.classifier[-1]
            assert isinstance(last, nn.Linear)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    @property
    def head_first(self) -> nn.Linear:
        """The head's first layer (its input is [s, t, s - t, s * t, pair])."""
        first = self.classifier[0]
        assert isinstance(first, nn.Linear)
        return first

    @property
    def shortcuts(self) -> bool:
        return self.__dict__.get("_shortcuts", True)

    def set_shortcuts(self, on: bool) -> None:
        """Folded single-query attention and head (default) or the plain computation (for the equality tests)."""
        self.__dict__["_shortcuts"] = on
        for m in self.modules():
            if isinstance(m, CrossAttentionFusion):
                m.shortcuts = on

    def item_vectors(
        self, tokens: torch.Tensor, attention_mask: torch.Tensor, feats: torch.Tensor, side: Literal["source", "target"]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One vector per item [B, D] (and attention over its tokens [B, T] for the cross model)."""
        tokens = tokens.to(self.head_first.weight.dtype)
        if self.cfg.arch == "cross":
            fusion = self.fusion_source if side == "source" else self.fusion_target
            v, attn = fusion(self.feature_encoder(feats), tokens, attention_mask)
        else:
            mlp = self.concat_source if side == "source" else self.concat_target
            v, attn = mlp(tokens, attention_mask, feats), None
        if self.cfg.pooled_residual:
            v = v + pooled_unit(tokens, attention_mask)
        if self.fused_gate is not None:
            v = pooled_unit(tokens, attention_mask) * self.cfg.text_dim ** 0.5 + self.fused_gate * v
        return v, attn

    def score(self, s: torch.Tensor, t: torch.Tensor, pair: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B] for source vectors s [B, D] (or [1, D], broadcast) and target vectors t [B, D]."""
        if s.shape[0] == 1 and self.shortcuts:
            return self._score_one_source(s[0], t, pair)
        s = s.expand_as(t)
        parts = [s, t, s - t, s * t]
        if self.cfg.pair_dim:
            if pair is None:
                raise ValueError("this model needs pair-level inputs")
            parts.append(pair)
        logit = self.classifier(torch.cat(parts, dim=-1)).squeeze(-1)
        if self.pair_skip is not None:
            skip_in: list[torch.Tensor] = [pair] if self.cfg.pair_dim and pair is not None else []
            if self.cfg.cosine_prior:
                skip_in.append(F.cosine_similarity(s, t, dim=-1, eps=1e-6).unsqueeze(-1))
            logit = logit + self.pair_skip(torch.cat(skip_in, dim=-1)).squeeze(-1)
        return logit

    def _score_one_source(
        self, s: torch.Tensor, t: torch.Tensor, pair: torch.Tensor | None, cache: bool = True
    ) -> torch.Tensor:
        """`score` for one source against many targets, with the head's first layer folded.

        W [s, t, s - t, s * t] = (W_s + W_d) s + (W_t - W_d + W_p diag(s)) t: one [H, D] matrix per query,
        then one product with the targets, instead of building and multiplying the [N, 4D] input. Equal to
        the plain path up to float rounding (tested), gradients included.
        """
        first = self.head_first
        w_td, w_sd, w_p, w_pair = self._head_blocks(s.shape[-1], cache)
        folded = w_td + w_p * s  # [H, D]
        h = t @ folded.T + (w_sd @ s + first.bias)
        if self.cfg.pair_dim:
            if pair is None:
                raise ValueError("this model needs pair-level inputs")
            h = h + pair @ w_pair.T
        logit = self.classifier[1:](h).squeeze(-1)
        if self.pair_skip is not None:
            skip_in: list[torch.Tensor] = [pair] if self.cfg.pair_dim and pair is not None else []
            if self.cfg.cosine_prior:
                cos = (t @ s) / (t.norm(dim=-1).clamp(min=1e-6) * s.norm().clamp(min=1e-6))
                skip_in.append(cos.unsqueeze(-1))
            logit = logit + self.pair_skip(torch.cat(skip_in, dim=-1)).squeeze(-1)
        return logit

    def _head_blocks(self, d: int, cache: bool = True) -> tuple[torch.Tensor, ...]:
        """W_t - W_d, W_s + W_d, W_p and W_pair of the head's first layer, contiguous. Kept between calls
        at inference (until the weights change); recomputed on every call while gradients flow, and when
        `cache` is False (an export traces the computation itself)."""
        w = self.head_first.weight
        cache = cache and not torch.is_grad_enabled()
        if cache:
            cached = self.__dict__.get("_blocks")
            if cached is not None and cached[0] == (w._version, w.data_ptr()):
                return cached[1]
        blocks = (
            w[:, d : 2 * d] - w[:, 2 * d : 3 * d], w[:, :d] + w[:, 2 * d : 3 * d],
            w[:, 3 * d : 4 * d].contiguous(), w[:, 4 * d :].contiguous(),
        )
        if cache:
            self.__dict__["_blocks"] = ((w._version, w.data_ptr()), blocks)
        return blocks

    def forward(
        self,
        src_tokens: torch.Tensor, src_mask: torch.Tensor, src_feats: torch.Tensor,
        tgt_tokens: torch.Tensor, tgt_mask: torch.Tensor, tgt_feats: torch.Tensor,
        pair: torch.Tensor | None = None,
    ) -> torch.Tensor:
        s, _ = self.item_vectors(src_tokens, src_mask, src_feats, "source")
        t, _ = self.item_vectors(tgt_tokens, tgt_mask, tgt_feats, "target")
        return self.score(s, t, pair)
