"""Sample-level encoder: a sample's ASV vectors [B, S, D] attend to each other -> [B, S, D].

ASVs are a set, so there is no ASV-slot position embedding: the slot order (by abundance, from the data
layer) carries no meaning of its own here, and abundance enters only through the optional count embedding.
The count embedding reads `abundance_feature(counts)`, a depth-independent function of relative abundance,
so a model pretrained on one table sees the same scale when fine-tuned on another (rarefied or not).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from aam.models.layers import TransformerStack
from aam.models.registries import COUNT_EMBEDDINGS  # noqa: F401 (re-exported)

ABUNDANCE_SCALE = 1e4  # relative abundance is read per 10,000 reads before the log


def relative_abundance(counts: Tensor | None, asv_mask: Tensor) -> Tensor:
    """[B, S] share of each kept ASV in the sample's kept reads (uniform when counts are missing); 0 on padding."""
    weights = asv_mask.to(torch.get_default_dtype()) if counts is None else counts * asv_mask.to(counts.dtype)
    return weights / weights.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(weights.dtype).tiny)


def abundance_feature(counts: Tensor, asv_mask: Tensor) -> Tensor:
    """[B, S] counts -> [B, S, 1] log1p(1e4 * relative abundance) / log1p(1e4), in [0, 1], 0 on padding."""
    relative = relative_abundance(counts, asv_mask)
    return (torch.log1p(ABUNDANCE_SCALE * relative) / math.log1p(ABUNDANCE_SCALE)).unsqueeze(-1)


class AddCountEmbedding(nn.Module):
    """h + Linear(1 -> D)(a)."""

    def __init__(self, dim: int):
        super().__init__()
        self.projection = nn.Linear(1, dim)

    def forward(self, hidden: Tensor, abundance: Tensor) -> Tensor:
        return hidden + self.projection(abundance)


class ConcatCountEmbedding(nn.Module):
    """Linear(2D -> D)([h ; Linear(1 -> D)(a)])."""

    def __init__(self, dim: int):
        super().__init__()
        self.projection = nn.Linear(1, dim)
        self.mix = nn.Linear(2 * dim, dim)

    def forward(self, hidden: Tensor, abundance: Tensor) -> Tensor:
        return self.mix(torch.cat([hidden, self.projection(abundance)], dim=-1))


class FiLMCountEmbedding(nn.Module):
    """h * (1 + gamma) + beta with [gamma, beta] = Linear(1 -> 2D)(a), initialised to the identity."""

    def __init__(self, dim: int):
        super().__init__()
        self.projection = nn.Linear(1, 2 * dim)
        nn.init.zeros_(self.projection.weight)
        nn.init.zeros_(self.projection.bias)

    def forward(self, hidden: Tensor, abundance: Tensor) -> Tensor:
        gamma, beta = self.projection(abundance).chunk(2, dim=-1)
        return hidden * (1 + gamma) + beta




class SampleSequenceEncoder(nn.Module):
    """[B, S, D] ASV vectors (+ optional count embedding) -> sample transformer -> [B, S, D]."""

    def __init__(self, dim: int, heads: int, layers: int, ffn_ratio: int = 4, dropout: float = 0.1,
                 gradient_checkpointing: bool = False,
                 count_embedding: str | None = None):
        super().__init__()
        self.count_embedding = None if count_embedding is None else COUNT_EMBEDDINGS[count_embedding](dim)
        self.transformer = TransformerStack(dim, heads, layers, ffn_ratio, dropout,
                                            gradient_checkpointing)

    def forward(self, asv_embeddings: Tensor, asv_mask: Tensor, counts: Tensor | None = None) -> Tensor:
        hidden = asv_embeddings  # [B, S, D]
        if self.count_embedding is not None:
            if counts is None:
                raise ValueError("this model embeds counts: pass counts [B, S]")
            hidden = self.count_embedding(hidden, abundance_feature(counts, asv_mask))
            hidden = hidden * asv_mask.unsqueeze(-1).to(hidden.dtype)
        return self.transformer(hidden, asv_mask)  # [B, S, D]


def by_size_groups(stack: Callable[..., tuple[Tensor, ...]], size_groups, hidden: Tensor, asv_mask: Tensor,
                   counts: Tensor | None) -> tuple[Tensor, ...]:
    """``stack(hidden, asv_mask, counts)`` -> [B, S, D] outputs, run on groups of like-sized samples, each cut
    to its own largest sample (``size_groups``: the collator's ``SizeGroups``, or None for one pass over the
    whole batch). The stack must treat samples independently and zero their padding slots, as the sample-level
    transformers do: the outputs then equal one pass's, with less work on padding."""
    if size_groups is None:
        return stack(hidden, asv_mask, counts)
    order, restore, bounds = size_groups
    slots = hidden.shape[1]
    hidden, asv_mask = hidden[order], asv_mask[order]
    counts = None if counts is None else counts[order]
    parts = []
    for start, stop, used in bounds:
        outputs = stack(hidden[start:stop, :used], asv_mask[start:stop, :used],
                        None if counts is None else counts[start:stop, :used])
        parts.append([nn.functional.pad(output, (0, 0, 0, slots - used)) for output in outputs])
    return tuple(torch.cat(column)[restore] for column in zip(*parts))
