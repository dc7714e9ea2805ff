"""The fine-tuning model: a `SequenceEncoder` base plus a count branch and a target branch.

Target branch, on the base's `sample_embeddings` [B, S, D]:
fusion (`sequence` stage) -> target transformer -> attention pooling -> optional LayerNorm -> fusion
(`pooled` stage, gmu) -> head -> [quantile reshape] -> conditional output scaling -> output constraint
(or log-probabilities for a classifier). A `replace`-stage fusion (perceiver) stands in for the target
transformer and pooling. The base and count branch never see the categoricals.

With a frozen base (`freeze_base`), the base has no gradients, runs under `no_grad`, and stays in eval
mode (no dropout) even when the predictor is put in train mode.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from aam.models.config import PredictorConfig
from aam.models.diagnostics import CrossAttentionMap, DistancePairs, FusionGate, MaskedNucleotides
from aam.models.fusion import FUSIONS, CategoricalEmbedder, ConditionalOutputScaling
from aam.models.heads import (
    OUTPUT_CONSTRAINTS,
    REGRESSION_HEADS,
    ClassLogProbabilities,
    CountHead,
    QuantileReshape,
    head_name,
)
from aam.models.layers import AttentionPooling, CompositionPooling, TransformerStack
from aam.models.sample_encoder import relative_abundance
from aam.models.sequence_encoder import SequenceEncoder


class SequencePredictor(nn.Module):
    """Batch -> base outputs + `prediction` (+ `count_prediction`, fusion diagnostics)."""

    def __init__(self, config: PredictorConfig, base: SequenceEncoder | None = None):
        super().__init__()
        self.asv_cache: Tensor | None = None  # [N_asvs, D] a frozen encoder's ASV embeddings (training only)
        if base is not None and base.config != config.encoder:
            raise ValueError("the given base was built from a different EncoderConfig than config.encoder")
        self.config = config
        enc = config.encoder
        dim, heads = enc.embedding_dim, enc.attention_heads
        common = dict(ffn_ratio=enc.ffn_ratio, dropout=enc.dropout,
                      gradient_checkpointing=enc.gradient_checkpointing)
        self.base = base if base is not None else SequenceEncoder(enc)
        self.count_head = CountHead(dim, heads, config.layers("count"), **common) if config.count_prediction else None

        has_categoricals = bool(config.categorical_cardinalities)
        self.categorical_embedder = (CategoricalEmbedder(config.categorical_cardinalities,
                                                         config.categorical_embed_dim) if has_categoricals else None)
        self.fusion = FUSIONS[config.categorical_fusion].from_config(config) if has_categoricals else None
        replaced = self.fusion is not None and self.fusion.stage == "replace"
        self.target_encoder = None if replaced else TransformerStack(dim, heads, config.layers("target"), **common)
        pooling = config.target_pooling
        self.target_pooling = None if replaced or "attention" not in pooling else AttentionPooling(dim)
        self.composition_pooling = (CompositionPooling(dim) if not replaced and pooling == "composition"
                                    else None)
        self.pooling_mix = nn.Linear(2 * dim, dim) if not replaced and pooling == "attention+abundance" else None
        self.target_norm = nn.LayerNorm(dim) if config.target_layer_norm else nn.Identity()

        quantiles = config.num_quantiles
        self.head = REGRESSION_HEADS[head_name(config.regressor_hidden_dims, config.residual_regression_head)](
            dim, config.out_dim * max(quantiles, 1), config.regressor_hidden_dims, config.regressor_dropout)
        self.quantile_reshape = QuantileReshape(config.out_dim, quantiles) if quantiles else None
        self.output_scaling = (ConditionalOutputScaling(config.categorical_cardinalities,
                                                        config.conditional_output_scaling_columns, config.out_dim)
                               if config.conditional_output_scaling_columns else None)
        self.output = (ClassLogProbabilities() if config.classifier
                       else OUTPUT_CONSTRAINTS[config.output_constraint](config.out_dim))
        self._base_frozen = False
        self.freeze_base(config.freeze_base)

    def freeze_base(self, frozen: bool = True) -> None:
        """Stop (or resume) training the base: no gradients, eval mode, forward under `no_grad`."""
        self._base_frozen = frozen
        for parameter in self.base.parameters():
            parameter.requires_grad_(not frozen)
        self.config = dataclasses.replace(self.config, freeze_base=frozen)
        self.train(self.training)

    @property
    def base_frozen(self) -> bool:
        return self._base_frozen

    def train(self, mode: bool = True) -> SequencePredictor:
        super().train(mode)
        if self._base_frozen:
            self.base.eval()
        return self

    @property
    def distance_head(self) -> nn.Module:
        """The base's UniFrac distance head (trained alongside the target when a tree or matrix is given)."""
        return self.base.distance_head

    def encode_asvs(self, tokens: Tensor) -> Tensor:
        """[U, L] tokens -> [U, D] ASV embeddings of the base (to cache when it is frozen)."""
        with torch.no_grad() if self._base_frozen else contextlib.nullcontext():
            return self.base.encode_asvs(tokens)

    def draw_nucleotide_mask(self, tokens: Tensor, generator: torch.Generator | None = None) -> Tensor | None:
        """See :meth:`SequenceEncoder.draw_nucleotide_mask`."""
        return self.base.draw_nucleotide_mask(tokens, generator)

    def categorical_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the categorical embedder, fusion and conditional scaling (for `--categorical-lr`)."""
        for module in (self.categorical_embedder, self.fusion, self.output_scaling):
            if module is not None:
                yield from module.parameters()

    def validation_diagnostics(self) -> list:
        """What validation reports about this model besides its losses (:mod:`aam.models.diagnostics`)."""
        return [DistancePairs(), MaskedNucleotides(), FusionGate(), CrossAttentionMap()]

    def forward(self, tokens: Tensor, asv_index: Tensor, asv_mask: Tensor, counts: Tensor | None = None,
                categoricals: Tensor | None = None, mask_nucleotides: bool = False,
                asv_embeddings: Tensor | None = None, generator: torch.Generator | None = None,
                nucleotide_mask: Tensor | None = None, tokens_padded: bool = True,
                size_groups=None) -> dict[str, Tensor]:
        """The base's outputs plus `prediction` [B, out_dim] ([B, out_dim, Q] with quantiles; log-probabilities
        for a classifier), `count_prediction` [B, S] and the fusion's diagnostics (`gate` [B, D],
        `cross_attention_weights` [B, S, K]). Missing `categoricals` count as unknown (all 0)."""
        with torch.no_grad() if self._base_frozen else contextlib.nullcontext():
            outputs = self.base(tokens, asv_index, asv_mask, counts, mask_nucleotides=mask_nucleotides,
                                asv_embeddings=asv_embeddings, generator=generator,
                                nucleotide_mask=nucleotide_mask, tokens_padded=tokens_padded,
                                size_groups=size_groups)
        sample_embeddings = outputs["sample_embeddings"]  # [B, S, D]
        if self.count_head is not None:
            outputs["count_prediction"] = self.count_head(sample_embeddings, asv_mask)
        if categoricals is None and self.categorical_embedder is not None:
            categoricals = asv_index.new_zeros(asv_index.shape[0], self.categorical_embedder.num_columns)
        pooled, diagnostics = self._target_branch(sample_embeddings, asv_mask, counts, categoricals)
        outputs.update(diagnostics)
        prediction = self.head(pooled)  # [B, out_dim * Q]
        if self.quantile_reshape is not None:
            prediction = self.quantile_reshape(prediction)  # [B, out_dim, Q]
        if self.output_scaling is not None:
            prediction = self.output_scaling(prediction, categoricals)
        outputs["prediction"] = self.output(prediction)
        return outputs

    def _pool(self, hidden: Tensor, asv_mask: Tensor, counts: Tensor | None) -> Tensor:
        """[B, S, D] -> [B, D]: attention pooling, the abundance-weighted mean, both mixed, the plain mean
        over the sample's ASVs, or the log-ratio composition of learned ASV groups (`target_pooling`).

        Attention weights are learned and sum to one whatever the sample holds; the abundance-weighted mean
        is the composition itself projected through the ASV vectors (the view a forest on relative
        abundances has); the plain mean weighs rare and dominant ASVs alike (which ASVs are present).
        """
        if self.composition_pooling is not None:
            return self.composition_pooling(hidden, relative_abundance(counts, asv_mask))
        parts = []
        if self.target_pooling is not None:
            parts.append(self.target_pooling(hidden, asv_mask))
        if self.config.target_pooling != "attention":  # a weighted mean over the ASVs
            uniform = self.config.target_pooling == "mean"  # each present ASV counts once
            weights = relative_abundance(None if uniform else counts, asv_mask).to(hidden.dtype)
            parts.append(torch.einsum("bs,bsd->bd", weights, hidden))
        return self.pooling_mix(torch.cat(parts, dim=-1)) if self.pooling_mix is not None else parts[0]

    def _target_branch(self, hidden: Tensor, asv_mask: Tensor, counts: Tensor | None,
                       categoricals: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
        """[B, S, D] -> pooled [B, D] and fusion diagnostics."""
        fusion, diagnostics = self.fusion, {}
        stage = None if fusion is None else fusion.stage
        if fusion is not None:
            metadata, present = self.categorical_embedder(categoricals)  # [B, K, E], [B, K]
        if stage == "sequence":
            hidden, diagnostics = fusion(hidden, asv_mask, metadata, present)
        if stage == "replace":
            pooled, diagnostics = fusion(hidden, asv_mask, metadata, present)
        else:
            pooled = self._pool(self.target_encoder(hidden, asv_mask), asv_mask, counts)
        pooled = self.target_norm(pooled)
        if stage == "pooled":
            pooled, diagnostics = fusion(pooled, asv_mask, metadata, present)
        return pooled, diagnostics
