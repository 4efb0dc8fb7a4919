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
from torch import nn


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
        self.cross_attention = nn.MultiheadAttention(embed_dim, num_heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.ffn = nn.Sequential(
            nn.Linear(embed_dim, ff_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff_dim, embed_dim), nn.Dropout(dropout)
        )

    def forward(
        self, feature_embedding: torch.Tensor, tokens: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """feature_embedding [B,1,D], tokens [B,T,D], attention_mask [B,T] (1 = real token).

        Returns the fused vector [B, D] and the head-averaged attention over tokens [B, T] (zero on padding).
        """
        pad = attention_mask == 0
        attended, weights = self.cross_attention(
            query=feature_embedding, key=tokens, value=tokens, key_padding_mask=pad,
            need_weights=True, average_attn_weights=True,
        )
        x = self.norm1(feature_embedding + attended)
        fused = self.norm2(x + self.ffn(x))
        return fused.squeeze(1), weights.squeeze(1)


class ConcatItem(nn.Module):
    """The baseline item vector: an MLP over concat(mean-pooled token states, feature vector)."""

    def __init__(self, text_dim: int, feat_dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(text_dim + feat_dim, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden, text_dim), nn.LayerNorm(text_dim),
        )

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        m = attention_mask.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * m).sum(1) / m.sum(1).clamp(min=1.0)
        return self.mlp(torch.cat([pooled, feats], dim=-1))


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
        # pair-level inputs also reach the logit through a linear skip, so first-stage evidence (scores,
        # rank, field agreement) is usable from the first step instead of only through the deep head
        self.pair_skip = nn.Linear(cfg.pair_dim, 1) if cfg.pair_dim else None
        if self.pair_skip is not None:
            # the deep head starts at zero and learns a correction on top of the pair-level evidence
            nn.init.zeros_(self.classifier[-1].weight)
            nn.init.zeros_(self.classifier[-1].bias)

    def item_vectors(
        self, tokens: torch.Tensor, attention_mask: torch.Tensor, feats: torch.Tensor, side: Literal["source", "target"]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One vector per item [B, D] (and attention over its tokens [B, T] for the cross model)."""
        tokens = tokens.to(self.classifier[0].weight.dtype)
        if self.cfg.arch == "cross":
            fusion = self.fusion_source if side == "source" else self.fusion_target
            v, attn = fusion(self.feature_encoder(feats), tokens, attention_mask)
        else:
            mlp = self.concat_source if side == "source" else self.concat_target
            v, attn = mlp(tokens, attention_mask, feats), None
        if self.cfg.pooled_residual:
            m = attention_mask.unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * m).sum(1) / m.sum(1).clamp(min=1.0)
            v = v + pooled / pooled.norm(dim=-1, keepdim=True).clamp(min=1e-6)
        return v, attn

    def score(self, s: torch.Tensor, t: torch.Tensor, pair: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B] for source vectors s [B, D] (or [1, D], broadcast) and target vectors t [B, D]."""
        s = s.expand_as(t)
        parts = [s, t, s - t, s * t]
        if self.cfg.pair_dim:
            if pair is None:
                raise ValueError("this model needs pair-level inputs")
            parts.append(pair)
        logit = self.classifier(torch.cat(parts, dim=-1)).squeeze(-1)
        if self.pair_skip is not None:
            logit = logit + self.pair_skip(pair).squeeze(-1)
        return logit

    def forward(
        self,
        src_tokens: torch.Tensor, src_mask: torch.Tensor, src_feats: torch.Tensor,
        tgt_tokens: torch.Tensor, tgt_mask: torch.Tensor, tgt_feats: torch.Tensor,
        pair: torch.Tensor | None = None,
    ) -> torch.Tensor:
        s, _ = self.item_vectors(src_tokens, src_mask, src_feats, "source")
        t, _ = self.item_vectors(tgt_tokens, tgt_mask, tgt_feats, "target")
        return self.score(s, t, pair)
