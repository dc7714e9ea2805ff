"""The one place that maps a :class:`~aam.data.dataset.Batch` onto a model's arguments (training, validation,
prediction, attribution and embeddings all call it), and how the training model is compiled."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from aam.models.build import unwrap_model


def forward_batch(model: nn.Module, batch, *, mask_nucleotides: bool = False,
                  asv_embeddings: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Run ``model`` on a :class:`Batch` (the one place that maps batch fields onto model arguments).

    The nucleotide mask is drawn here, before the forward pass (from ``generator``, else the global stream),
    so a compiled or wrapped model receives it as an input and holds no random-number calls.
    """
    kwargs: dict[str, Any] = {}
    if asv_embeddings is None:  # a frozen encoder's cached ASV embeddings (set by the training run)
        cache = getattr(unwrap_model(model), "asv_cache", None)
        asv_embeddings = None if cache is None else cache[batch.asv_ids]
    if asv_embeddings is not None:
        kwargs["asv_embeddings"] = asv_embeddings
    elif mask_nucleotides:
        mask = unwrap_model(model).draw_nucleotide_mask(batch.tokens, generator)
        if mask is not None:
            kwargs["nucleotide_mask"] = mask
    if not batch.tokens_padded:  # equal-length sequences: attention without a mask (flash kernels)
        kwargs["tokens_padded"] = False
    if batch.size_groups is not None:  # like-sized samples grouped for the sample-level stacks
        kwargs["size_groups"] = batch.size_groups
    return model(batch.tokens, batch.asv_index, batch.asv_mask, counts=batch.counts,
                 categoricals=batch.categoricals, **kwargs)


def compile_for_training(module: nn.Module, backend: str = "inductor") -> nn.Module:
    """``torch.compile`` with dynamic shapes: batches differ in samples, distinct ASVs and slots, so one
    graph serves them all instead of a recompilation per new shape."""
    return torch.compile(module, backend=backend, dynamic=True)
