"""Categorical fusion: how metadata columns condition the target branch of a `SequencePredictor`.

`CategoricalEmbedder` turns `categoricals` [B, K] (0 = unknown) into one token per column [B, K, E] (index 0
is the zero vector) and a presence mask [B, K]. Every fusion implements one interface, `CategoricalFusion`,
and acts at one `stage` of the target branch:

- `sequence`: on the ASV positions [B, S, D] before the target transformer (`concat`, `add`,
  `cross-attention`);
- `pooled`: on the pooled vector [B, D] after pooling and the target LayerNorm (`gmu`);
- `replace`: takes [B, S, D] and returns the pooled [B, D] in place of the target transformer and pooling
  (`perceiver`).

`forward(hidden, asv_mask, metadata, present) -> (fused, diagnostics)`, where diagnostics holds `gate`
(gmu) or `cross_attention_weights` (cross-attention). `FUSIONS` maps the CLI names to the classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor, nn

from aam.models.layers import FeedForward, MultiHeadAttention, TransformerStack
from aam.models.registries import FUSIONS  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    from aam.models.config import PredictorConfig

Diagnostics = dict[str, Tensor]


class CategoricalEmbedder(nn.Module):
    """One `nn.Embedding(cardinality, E, padding_idx=0)` per column: [B, K] -> tokens [B, K, E], present [B, K]."""

    def __init__(self, cardinalities: Sequence[int], embed_dim: int):
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(card, embed_dim, padding_idx=0) for card in cardinalities)

    @property
    def num_columns(self) -> int:
        return len(self.embeddings)

    def forward(self, categoricals: Tensor) -> tuple[Tensor, Tensor]:
        tokens = torch.stack([emb(categoricals[:, k]) for k, emb in enumerate(self.embeddings)], dim=1)
        return tokens, categoricals != 0


class CategoricalFusion(nn.Module):
    """Interface of the fusion modes; see the module docstring for `stage` and `forward`."""

    stage: ClassVar[str] = "sequence"

    @classmethod
    def from_config(cls, config: PredictorConfig) -> CategoricalFusion:
        raise NotImplementedError

    def forward(self, hidden: Tensor, asv_mask: Tensor, metadata: Tensor, present: Tensor
                ) -> tuple[Tensor, Diagnostics]:
        raise NotImplementedError


def _zero_padding(hidden: Tensor, asv_mask: Tensor) -> Tensor:
    return hidden * asv_mask.unsqueeze(-1).to(hidden.dtype)


class ConcatFusion(CategoricalFusion):
    """Linear(D + K*E -> D)([h ; c]) at every ASV position, c = the K column tokens concatenated.

    The h block of the weight starts as the identity, so fusion starts from the base's embeddings.
    """

    def __init__(self, dim: int, embed_dim: int, num_columns: int):
        super().__init__()
        self.projection = nn.Linear(dim + num_columns * embed_dim, dim)
        nn.init.xavier_uniform_(self.projection.weight)
        nn.init.zeros_(self.projection.bias)
        with torch.no_grad():
            self.projection.weight[:, :dim].copy_(torch.eye(dim))
        self.dim = dim

    @classmethod
    def from_config(cls, config: PredictorConfig) -> ConcatFusion:
        return cls(config.encoder.embedding_dim, config.categorical_embed_dim, len(config.categorical_cardinalities))

    def forward(self, hidden: Tensor, asv_mask: Tensor, metadata: Tensor, present: Tensor
                ) -> tuple[Tensor, Diagnostics]:
        weight, bias = self.projection.weight, self.projection.bias
        from_sequence = hidden @ weight[:, :self.dim].T  # [B, S, D]
        from_metadata = metadata.flatten(1) @ weight[:, self.dim:].T + bias  # [B, D], once per sample
        return _zero_padding(from_sequence + from_metadata.unsqueeze(1), asv_mask), {}


class AddFusion(CategoricalFusion):
    """h + Linear(K*E -> D)(c) at every ASV position."""

    def __init__(self, dim: int, embed_dim: int, num_columns: int):
        super().__init__()
        self.projection = nn.Linear(num_columns * embed_dim, dim)
        nn.init.xavier_uniform_(self.projection.weight)
        nn.init.zeros_(self.projection.bias)

    @classmethod
    def from_config(cls, config: PredictorConfig) -> AddFusion:
        return cls(config.encoder.embedding_dim, config.categorical_embed_dim, len(config.categorical_cardinalities))

    def forward(self, hidden: Tensor, asv_mask: Tensor, metadata: Tensor, present: Tensor
                ) -> tuple[Tensor, Diagnostics]:
        shift = self.projection(metadata.flatten(1)).unsqueeze(1)  # [B, 1, D]
        return _zero_padding(hidden + shift, asv_mask), {}


class GMUFusion(CategoricalFusion):
    """Gated multimodal unit on the pooled vector: out = z * h + (1 - z) * tanh(W_c c).

    z = sigmoid(W_g [h ; c] + b) [B, D] is the weight of the sequence branch; b starts at
    `gate_bias_init` (2.0: z ~ 0.88), so the output starts close to h and metadata earns its say. h is
    passed through untransformed (no tanh on the sequence side, which flattened predictions in the
    reference), which keeps the unit residual-friendly. Ablations fix z: `open` = 1 (sequence only,
    metadata blocked) and `closed` = 0 (metadata only); the metadata projection is kept in both.
    The gate values are returned as `gate` [B, D].
    """

    stage = "pooled"
    FIXED_GATES: ClassVar[dict[str, float]] = {"open": 1.0, "closed": 0.0}

    def __init__(self, dim: int, embed_dim: int, num_columns: int, gate: str = "learned",
                 gate_bias_init: float = 2.0):
        super().__init__()
        features = num_columns * embed_dim
        self.metadata_projection = nn.Linear(features, dim)
        nn.init.xavier_uniform_(self.metadata_projection.weight)
        nn.init.zeros_(self.metadata_projection.bias)
        self.fixed_gate = self.FIXED_GATES.get(gate)
        self.gate = None
        if self.fixed_gate is None:
            self.gate = nn.Linear(dim + features, dim)
            nn.init.normal_(self.gate.weight, std=0.02)
            nn.init.constant_(self.gate.bias, gate_bias_init)

    @classmethod
    def from_config(cls, config: PredictorConfig) -> GMUFusion:
        return cls(config.encoder.embedding_dim, config.categorical_embed_dim, len(config.categorical_cardinalities),
                   config.gmu_gate, config.gmu_gate_bias_init)

    def forward(self, hidden: Tensor, asv_mask: Tensor, metadata: Tensor, present: Tensor
                ) -> tuple[Tensor, Diagnostics]:
        features = metadata.flatten(1)  # [B, K*E]
        from_metadata = torch.tanh(self.metadata_projection(features))  # [B, D]
        if self.gate is None:
            z = torch.full_like(hidden, self.fixed_gate)
        else:
            z = torch.sigmoid(self.gate(torch.cat([hidden, features], dim=-1)))  # [B, D]
        return z * hidden + (1 - z) * from_metadata, {"gate": z}


class CrossAttentionFusion(CategoricalFusion):
    """Each ASV position queries one metadata token per column: LN(h + MHA(h, W c_k)).

    Keys/values are the K column tokens projected to D ([B, K, D]); unknown columns (index 0) are masked
    out, and a sample with no known column gets no update. Returns `cross_attention_weights` [B, S, K]
    (averaged over heads; zero on padded slots).
    """

    def __init__(self, dim: int, embed_dim: int, heads: int = 8, dropout: float = 0.0):
        super().__init__()
        self.metadata_projection = nn.Linear(embed_dim, dim)
        self.attention = MultiHeadAttention(dim, heads, dropout)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    @classmethod
    def from_config(cls, config: PredictorConfig) -> CrossAttentionFusion:
        return cls(config.encoder.embedding_dim, config.categorical_embed_dim, config.cross_attn_heads,
                   config.encoder.dropout)

    def forward(self, hidden: Tensor, asv_mask: Tensor, metadata: Tensor, present: Tensor
                ) -> tuple[Tensor, Diagnostics]:
        keys = self.metadata_projection(metadata)  # [B, K, D]
        update, weights = self.attention(hidden, keys, present, need_weights=True)  # weights [B, H, S, K]
        fused = _zero_padding(self.norm(hidden + self.dropout(update)), asv_mask)
        weights = weights.mean(dim=1) * asv_mask.unsqueeze(-1).to(weights.dtype)  # [B, S, K]
        return fused, {"cross_attention_weights": weights}


class PerceiverFusion(CategoricalFusion):
    """Learned latents [M, D] cross-attend to the ASV tokens and the metadata tokens, then self-attend.

    Keys are [Linear(h) ; Linear(c_k)] ([B, S + K, D]) with padded ASV slots and unknown columns masked,
    so padding changes nothing. Pre-LN cross-attention + FFN, `num_layers` self-attention blocks, mean
    over latents, Linear -> [B, D]; replaces the target transformer and pooling.
    """

    stage = "replace"

    def __init__(self, dim: int, embed_dim: int, cross_heads: int = 8, self_heads: int = 4,
                 num_latents: int = 64, num_layers: int = 2, ffn_ratio: int = 4, dropout: float = 0.0,
                 gradient_checkpointing: bool = False):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(num_latents, dim) * 0.02)
        self.asv_projection = nn.Linear(dim, dim)
        self.metadata_projection = nn.Linear(embed_dim, dim)
        self.input_norm = nn.LayerNorm(dim)
        self.latent_norm = nn.LayerNorm(dim)
        self.cross_attention = MultiHeadAttention(dim, cross_heads, dropout)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_ratio, dropout)
        self.dropout = nn.Dropout(dropout)
        self.self_attention = TransformerStack(dim, self_heads, num_layers, ffn_ratio, dropout,
                                               gradient_checkpointing)
        self.out = nn.Linear(dim, dim)

    @classmethod
    def from_config(cls, config: PredictorConfig) -> PerceiverFusion:
        enc = config.encoder
        return cls(enc.embedding_dim, config.categorical_embed_dim, config.cross_attn_heads, enc.attention_heads,
                   config.perceiver_num_latents, config.perceiver_num_layers, enc.ffn_ratio, enc.dropout,
                   enc.gradient_checkpointing)

    def forward(self, hidden: Tensor, asv_mask: Tensor, metadata: Tensor, present: Tensor
                ) -> tuple[Tensor, Diagnostics]:
        inputs = torch.cat([self.asv_projection(hidden), self.metadata_projection(metadata)], dim=1)  # [B, S+K, D]
        key_mask = torch.cat([asv_mask, present], dim=1)  # [B, S+K]
        latents = self.latents.unsqueeze(0).expand(hidden.shape[0], -1, -1)  # [B, M, D]
        attended, _ = self.cross_attention(self.latent_norm(latents), self.input_norm(inputs), key_mask)
        latents = latents + self.dropout(attended)
        latents = latents + self.dropout(self.ffn(self.ffn_norm(latents)))
        latents = self.self_attention(latents)
        return self.out(latents.mean(dim=1)), {}  # [B, D]




class ConditionalOutputScaling(nn.Module):
    """Per-category scale (init 1) and bias (init 0) on the output, applied column after column.

    `cardinalities` and `columns` describe the scaled columns (indices into `categoricals`' K columns).
    Works on [B, out_dim] and [B, out_dim, Q] outputs.
    """

    def __init__(self, cardinalities: Sequence[int], columns: Sequence[int], out_dim: int):
        super().__init__()
        self.columns = tuple(columns)
        self.scales = nn.ModuleList(nn.Embedding(cardinalities[c], out_dim) for c in self.columns)
        self.biases = nn.ModuleList(nn.Embedding(cardinalities[c], out_dim) for c in self.columns)
        for scale, bias in zip(self.scales, self.biases):
            nn.init.ones_(scale.weight)
            nn.init.zeros_(bias.weight)

    def forward(self, prediction: Tensor, categoricals: Tensor) -> Tensor:
        extra = (1,) * (prediction.dim() - 2)
        for column, scale, bias in zip(self.columns, self.scales, self.biases):
            index = categoricals[:, column]
            shape = (prediction.shape[0], -1) + extra
            prediction = prediction * scale(index).view(shape) + bias(index).view(shape)
        return prediction
