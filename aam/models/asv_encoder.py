"""Nucleotide-level encoder: one vector per distinct ASV, plus masked-nucleotide prediction.

Input `tokens` [U, L] integers, uint8 from the collator (the batch's distinct ASVs, START first, PAD after the
end). Each distinct sequence is encoded once; `gather_asv_embeddings` places the vectors into the samples' ASV slots [B, S, D].
Masking is applied whenever `mask_nucleotides=True` (the caller decides, so validation can measure masked
accuracy the same way as training); eligible positions are nucleotide tokens (A, C, G, T, UNK), never PAD
or START, and masked positions are replaced by the MASK token.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from aam.data.vocabulary import MASK, NUCLEOTIDE_TOKENS, PAD, A
from aam.models.layers import AttentionPooling, PositionEmbedding, TransformerStack, recomputed
from aam.models.registries import MASK_STRATEGIES

SPAN_LENGTHS = (3, 5)  # inclusive range of span lengths for `span` masking


@dataclass(frozen=True)
class MaskStrategy:
    """A masked-nucleotide strategy: ``draw(eligible [U, L] bool, ratio, generator)`` -> [U, L] bool positions
    to mask; ``most_per_row(ratio, L)``: the most positions one row can hold, a number known without looking at
    the draw, which sets the static width of the positions the nucleotide head scores (``None``: every
    position, for a strategy whose count per row is not bounded)."""

    draw: Callable[[Tensor, float, torch.Generator | None], Tensor]
    most_per_row: Callable[[float, int], int] | None = None

    def __call__(self, eligible: Tensor, ratio: float, generator: torch.Generator | None = None) -> Tensor:
        return self.draw(eligible, ratio, generator)

    def width(self, ratio: float, length: int) -> int:
        """Positions scored per row for sequences of ``length`` tokens."""
        return length if self.most_per_row is None else max(1, min(length, self.most_per_row(ratio, length)))


def fixed_count_mask(eligible: Tensor, ratio: float, generator: torch.Generator | None = None) -> Tensor:
    """Exactly round(`ratio` x its eligible positions) positions of each row, uniformly without replacement.
    [U, L] bool. A fixed count per row bounds the positions to score by ceil(ratio x L) (no host sync)."""
    draws = torch.rand(eligible.shape, generator=generator, device=eligible.device).masked_fill(~eligible, 2.0)
    ranks = draws.argsort(dim=1).argsort(dim=1)  # rank of each position's draw in its row; ineligible last
    counts = torch.round(eligible.sum(dim=1, keepdim=True) * ratio)
    return ranks < counts


def span_mask(eligible: Tensor, ratio: float, generator: torch.Generator | None = None) -> Tensor:
    """Spans of 3-5 consecutive positions, about `ratio` of eligible positions in all. [U, L] bool.

    Vectorised: span starts are drawn per position with probability ratio / mean span length, each with
    its own length, and coverage is built by shifting the starts (a loop over offsets, not sequences).
    """
    shortest, longest = SPAN_LENGTHS
    start_probability = ratio / ((shortest + longest) / 2)
    draws = torch.rand(eligible.shape, generator=generator, device=eligible.device)
    starts = eligible & (draws < start_probability)  # [U, L]
    lengths = torch.randint(shortest, longest + 1, eligible.shape, generator=generator, device=eligible.device)
    covered = starts.clone()
    for offset in range(1, longest):
        covered[:, offset:] |= starts[:, :-offset] & (lengths[:, :-offset] > offset)
    return covered & eligible


RANDOM_MASK = MaskStrategy(fixed_count_mask, lambda ratio, length: math.ceil(ratio * length))
SPAN_MASK = MaskStrategy(span_mask)  # spans overlap and vary in number: every position may be scored


def scored_positions(masked: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """[U, L] bool -> ([U, width] indices of each row's masked positions, in order, then unmasked ones;
    [U, width] bool, which of them are masked). Static shapes: no host synchronisation. A row with more than
    ``width`` masked positions has the rest masked in its input but not scored (never for masks drawn by a
    strategy whose ``width`` this is)."""
    order = torch.sort(masked.to(torch.uint8), dim=1, descending=True, stable=True).indices[:, :width]
    return order, masked.gather(1, order)


def nucleotide_positions(tokens: Tensor) -> Tensor:
    """[U, L] bool: positions holding a nucleotide (or UNK) token."""
    eligible = torch.zeros_like(tokens, dtype=torch.bool)
    for token in NUCLEOTIDE_TOKENS:
        eligible |= tokens == token
    return eligible


def gather_asv_embeddings(asv_embeddings: Tensor, asv_index: Tensor, asv_mask: Tensor) -> Tensor:
    """[U, D] distinct-ASV vectors -> [B, S, D] per sample slot, zero on padding slots."""
    return asv_embeddings[asv_index] * asv_mask.unsqueeze(-1).to(asv_embeddings.dtype)


class ASVNorm(nn.BatchNorm1d):
    """Standardises ASV embeddings [U, D] per feature with running statistics over the ASVs seen in training.

    After attention pooling, the embeddings of related sequences share a large common component (at
    initialisation they differ by a few percent of their norm), which downstream layers cannot tell apart.
    Centring and scaling each feature makes their differences unit-sized from the first step.

    Unlike BatchNorm, training also normalises with the running statistics (updated from each batch without
    gradient; the first batch sets them): an ASV's embedding then never depends on which other ASVs share its
    batch, so training, validation, prediction and the frozen-encoder cache all see the same map. (With
    batch statistics, predicted UniFrac distances shifted by ~25% between training and evaluation.)
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] > 1:
            with torch.no_grad():
                first = self.num_batches_tracked == 0
                if self.momentum is None:  # cumulative average
                    weight = 1.0 / (self.num_batches_tracked + 1).to(x.dtype)
                else:
                    weight = torch.where(first, 1.0, self.momentum).to(x.dtype)
                self.running_mean.lerp_(x.mean(0).to(self.running_mean.dtype), weight)
                self.running_var.lerp_(x.var(0, unbiased=False).to(self.running_var.dtype), weight)
                self.num_batches_tracked += 1
        # in float32, like the running statistics (bf16 weights under FSDP's mixed precision, bf16 inputs)
        dtype = torch.promote_types(x.dtype, self.running_mean.dtype)
        weight = None if self.weight is None else self.weight.to(dtype)
        bias = None if self.bias is None else self.bias.to(dtype)
        return F.batch_norm(x.to(dtype), self.running_mean, self.running_var, weight, bias, False, 0.0,
                            self.eps).to(x.dtype)


def kmer_ids(tokens: Tensor, k: int) -> Tensor:
    """[U, L] tokens -> [U, L - k + 1] ids in [0, 4^k] of each window of `k` nucleotides, read base 4.

    A window holding anything but A, C, G or T (UNK, PAD, START, MASK) gets the id 4^k, the empty bag slot.
    """
    digits = tokens.long() - A  # A, C, G, T -> 0..3 (compact uint8 tokens would wrap below A)
    acgt = (digits >= 0) & (digits < 4)
    digits = digits.clamp(0, 3)
    width = tokens.shape[1] - k + 1
    if width < 1:
        return torch.full((tokens.shape[0], 1), 4**k, dtype=torch.long, device=tokens.device)
    ids = torch.zeros(tokens.shape[0], width, dtype=torch.long, device=tokens.device)
    valid = torch.ones_like(ids, dtype=torch.bool)
    for offset in range(k):
        ids = ids * 4 + digits[:, offset:offset + width]
        valid &= acgt[:, offset:offset + width]
    return ids.masked_fill(~valid, 4**k)


class KmerEmbedding(nn.Module):
    """Mean of learned vectors of an ASV's overlapping k-mers: [U, L] tokens -> [U, D].

    A direct, order-free signature of the sequence: two ASVs one substitution apart differ in up to `k` of
    their ~L k-mers, and an ASV never seen in training still shares most k-mers with its relatives.
    """

    def __init__(self, k: int, dim: int):
        super().__init__()
        self.k = k
        self.bag = nn.EmbeddingBag(4**k + 1, dim, mode="mean", padding_idx=4**k)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.bag(kmer_ids(tokens, self.k))


class ASVEncoder(nn.Module):
    """Token + learned position embedding -> transformer over [U, L] -> attention pooling (+ optional k-mer
    bag) -> ASVNorm -> [U, D]."""

    def __init__(self, vocab_size: int, max_length: int, dim: int, heads: int, layers: int, ffn_ratio: int = 4,
                 dropout: float = 0.1, gradient_checkpointing: bool = False,
                 mask_ratio: float = 0.15, mask_strategy: str = "random", chunk_size: int | None = None,
                 kmer_size: int = 0):
        super().__init__()
        self.mask_ratio = mask_ratio
        self.mask_strategy = mask_strategy
        self.chunk_size = chunk_size
        self.token_embedding = nn.Embedding(vocab_size, dim, padding_idx=PAD)
        # unit-scale embeddings: with pre-LN blocks, a residual stream much smaller than the first attention
        # output is swamped by the sequence average and every ASV starts out looking the same
        nn.init.normal_(self.token_embedding.weight, std=1.0)
        with torch.no_grad():
            self.token_embedding.weight[PAD].zero_()
        self.position_embedding = PositionEmbedding(max_length, dim, init_std=1.0)
        self.transformer = TransformerStack(dim, heads, layers, ffn_ratio, dropout,
                                            gradient_checkpointing)
        self.pooling = AttentionPooling(dim)
        self.norm = ASVNorm(dim, momentum=0.3)  # tracks the features quickly while they move early in training
        self.nucleotide_head = nn.Linear(dim, vocab_size)
        self.kmer_embedding = KmerEmbedding(kmer_size, dim) if kmer_size else None

    def mask_tokens(self, tokens: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """[U, L] bool: positions to mask under the configured strategy and ratio."""
        return MASK_STRATEGIES[self.mask_strategy](nucleotide_positions(tokens), self.mask_ratio, generator)

    def forward(self, tokens: Tensor, mask_nucleotides: bool = False,
                generator: torch.Generator | None = None, nucleotide_mask: Tensor | None = None,
                tokens_padded: bool = True) -> dict[str, Tensor]:
        """`embeddings` [U, D] of the clean sequences; with `mask_nucleotides`, also `nucleotide_logits`
        [U, L, V], `nucleotide_mask` [U, L] bool (positions scored) and `nucleotide_targets` [U, L] from a
        second pass over masked copies.

        A given `nucleotide_mask` (from :meth:`mask_tokens`, drawn before the call) is used as is: no random
        numbers are drawn inside the forward pass, which ``torch.compile`` then traces as one graph.
        `tokens_padded=False` (no PAD anywhere, as for equal-length amplicons; the collator knows it on the
        host) runs attention without a padding mask, so FlashAttention kernels can be used.

        Embeddings never come from masked input: what downstream layers (and the normalisation's running
        statistics) learn from is what they see at validation and prediction time.
        """
        pooled = self._chunked(self._pooled, tokens, tokens_padded)  # [U, D]
        if self.kmer_embedding is not None:
            pooled = pooled + self.kmer_embedding(tokens)
        real = (tokens != PAD).any(dim=1, keepdim=True)  # [U, 1]; the collator never emits all-PAD rows
        outputs = {"embeddings": self.norm(pooled) * real.to(pooled.dtype)}
        if nucleotide_mask is not None or (mask_nucleotides and self.mask_ratio > 0):
            outputs.update(self.predict_masked(tokens, generator, nucleotide_mask, tokens_padded))
        return outputs

    def predict_masked(self, tokens: Tensor, generator: torch.Generator | None = None,
                       masked: Tensor | None = None, padded: bool = True) -> dict[str, Tensor]:
        """Mask nucleotides of [U, L] `tokens` (at `masked`, else drawn) and predict them where masked only:
        logits [U, M, V], targets and mask [U, M] at each row's masked positions (M: the strategy's
        :meth:`MaskStrategy.width`; a row with fewer masked positions pads with unscored ones)."""
        if masked is None:
            masked = self.mask_tokens(tokens, generator)
        strategy = MASK_STRATEGIES[self.mask_strategy]  # a plain function registered by a user: every position
        width = (strategy.width(self.mask_ratio, tokens.shape[1]) if isinstance(strategy, MaskStrategy)
                 else tokens.shape[1])
        positions, scored = scored_positions(masked, width)
        inputs = tokens.masked_fill(masked, MASK)
        logits = self._chunked(self._nucleotide_logits, inputs, padded, positions)  # [U, M, V]
        return {"nucleotide_logits": logits, "nucleotide_mask": scored,
                "nucleotide_targets": tokens.gather(1, positions)}

    def _chunked(self, encode: Callable[..., Tensor], tokens: Tensor, padded: bool, *per_row: Tensor) -> Tensor:
        """``encode(tokens, padded, *per_row)`` over [U, L] ``tokens`` (and ``per_row`` tensors [U, ...] split
        alike), ``chunk_size`` rows at a time when set. While training, each chunk keeps only its input and
        output for backward and is recomputed there (activation checkpointing), so activation memory stays flat
        in the batch's distinct ASVs instead of growing ~layers x L x D each."""
        recompute = bool(self.chunk_size) and self.training and torch.is_grad_enabled()
        if not self.chunk_size:
            return encode(tokens, padded, *per_row)
        parts = zip(tokens.split(self.chunk_size), *(extra.split(self.chunk_size) for extra in per_row))
        outputs = [recomputed(encode, part, padded, *extra) if recompute else encode(part, padded, *extra)
                   for part, *extra in parts]
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    def _pooled(self, tokens: Tensor, padded: bool = True) -> Tensor:
        return self._encode(tokens, padded)[1]

    def _nucleotide_logits(self, tokens: Tensor, padded: bool, positions: Tensor) -> Tensor:
        """[u, L] masked tokens, [u, M] positions -> [u, M, V] logits at those positions only."""
        hidden = self._encode(tokens, padded)[0]  # [u, L, D]
        at = positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
        return self.nucleotide_head(hidden.gather(1, at))

    def _encode(self, tokens: Tensor, padded: bool = True) -> tuple[Tensor, Tensor]:
        """[u, L] -> hidden [u, L, D], pooled [u, D]; attention is unmasked when nothing is ``padded``."""
        valid = tokens != PAD  # START and MASK are real positions
        hidden = self.position_embedding(self.token_embedding(tokens.int()))  # uint8 batches: int32 indices
        hidden = self.transformer(hidden, valid if padded else None)
        return hidden, self.pooling(hidden, valid)
