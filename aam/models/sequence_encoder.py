"""The pretrainable base: ASV encoder -> sample encoder -> encoder transformer -> pooled [B, D].

Its pooled `embeddings` feed the distance head (pairwise UniFrac) and, for `faith_pd`, a Linear(D -> 1)
head. `sample_embeddings` [B, S, D] (the sample-transformer output) feed a `SequencePredictor`'s branches.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from aam.models.asv_encoder import ASVEncoder, gather_asv_embeddings
from aam.models.config import EncoderConfig
from aam.models.diagnostics import DistancePairs, MaskedNucleotides
from aam.models.heads import DistanceHead
from aam.models.layers import AttentionPooling, TransformerStack
from aam.models.sample_encoder import SampleSequenceEncoder, by_size_groups


class SequenceEncoder(nn.Module):
    """Batch (tokens, asv_index, asv_mask, counts) -> sample embeddings and predicted distances."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        dim, heads = config.embedding_dim, config.attention_heads
        common = dict(ffn_ratio=config.ffn_ratio, dropout=config.dropout,
                      gradient_checkpointing=config.gradient_checkpointing)
        self.asv_encoder = ASVEncoder(config.vocab_size, config.max_length, dim, heads, config.layers("asv"),
                                      mask_ratio=config.nuc_mask_ratio, mask_strategy=config.nuc_mask_strategy,
                                      chunk_size=config.asv_chunk_size, kmer_size=config.kmer_size,
                                      **common)
        count_embedding = config.count_embedding_method if config.count_embedding else None
        self.sample_encoder = SampleSequenceEncoder(dim, heads, config.layers("sample"),
                                                    count_embedding=count_embedding, **common)
        self.encoder = TransformerStack(dim, heads, config.layers("encoder"), **common)
        self.pooling = AttentionPooling(dim)
        self.distance_head = DistanceHead(dim)
        self.faith_head = nn.Linear(dim, 1) if config.distance_metric == "faith_pd" else None

    def draw_nucleotide_mask(self, tokens: Tensor, generator: torch.Generator | None = None) -> Tensor | None:
        """[U, L] bool positions to mask for the masked-nucleotide objective (None when it is off), drawn
        outside the forward pass so a compiled model holds no random-number calls."""
        return self.asv_encoder.mask_tokens(tokens, generator) if self.asv_encoder.mask_ratio > 0 else None

    def categorical_parameters(self) -> Iterator[nn.Parameter]:
        """None: the encoder never sees metadata (the same method as :class:`SequencePredictor`'s)."""
        yield from ()

    def encode_asvs(self, tokens: Tensor) -> Tensor:
        """[U, L] tokens -> [U, D] ASV embeddings (no masking), e.g. to cache for a frozen encoder."""
        return self.asv_encoder(tokens)["embeddings"]

    def _sample_stacks(self, per_slot: Tensor, asv_mask: Tensor, counts: Tensor | None) -> tuple[Tensor, Tensor]:
        """[B, S, D] ASV vectors per slot -> the sample encoder's output and the encoder's, both [B, S, D]."""
        sample_embeddings = self.sample_encoder(per_slot, asv_mask, counts)
        return sample_embeddings, self.encoder(sample_embeddings, asv_mask)

    def validation_diagnostics(self) -> list:
        """What validation reports about this model besides its losses (:mod:`aam.models.diagnostics`)."""
        return [DistancePairs(), MaskedNucleotides()]

    def forward(self, tokens: Tensor, asv_index: Tensor, asv_mask: Tensor, counts: Tensor | None = None,
                categoricals: Tensor | None = None, mask_nucleotides: bool = False,
                asv_embeddings: Tensor | None = None, generator: torch.Generator | None = None,
                nucleotide_mask: Tensor | None = None, tokens_padded: bool = True,
                size_groups=None) -> dict[str, Tensor]:
        """Returns `embeddings` [B, D], `distances` [B, B], `sample_embeddings` [B, S, D], `asv_mask` [B, S],
        `faith_pd` [B] for that metric, and the nucleotide keys when masking (`nucleotide_mask` [U, L] from
        :meth:`draw_nucleotide_mask`, or drawn inside with `mask_nucleotides`).

        `categoricals` is accepted for a common signature and ignored (the base never sees metadata).
        `asv_embeddings` [U, D] replaces the ASV encoder (no nucleotide outputs then). `size_groups` (the
        batch's ``SizeGroups``) runs the two sample-level stacks on groups of like-sized samples
        (:func:`by_size_groups`): the same outputs with less padding.
        """
        outputs: dict[str, Tensor] = {}
        if asv_embeddings is None:
            asv_outputs = self.asv_encoder(tokens, mask_nucleotides, generator, nucleotide_mask, tokens_padded)
            asv_embeddings = asv_outputs.pop("embeddings")
            outputs.update(asv_outputs)
        per_slot = gather_asv_embeddings(asv_embeddings, asv_index, asv_mask)  # [B, S, D]
        sample_embeddings, encoded = by_size_groups(self._sample_stacks, size_groups, per_slot, asv_mask, counts)
        pooled = self.pooling(encoded, asv_mask)  # [B, D]
        outputs.update(embeddings=pooled, distances=self.distance_head(pooled),
                       sample_embeddings=sample_embeddings, asv_mask=asv_mask)
        if self.faith_head is not None:
            outputs["faith_pd"] = self.faith_head(pooled).squeeze(-1)  # [B]
        return outputs
