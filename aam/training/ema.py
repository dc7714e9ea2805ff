"""Exponential moving average of a model's weights (``--ema-decay``), on top of ``torch.optim.swa_utils``.

The average covers parameters and floating-point buffers (the ASV normalisation's running statistics), so
the statistics match the averaged weights rather than the raw ones; integer buffers are copied. The decay
warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so the first epochs' average is not
dominated by the initial weights.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel


def warmed_up_decay(decay: float, n_averaged: int) -> float:
    """The decay applied at update ``n_averaged`` (1 for the first copy, rising to ``decay``)."""
    return min(decay, (1 + n_averaged) / (10 + n_averaged))


def ema_model(model: nn.Module, decay: float) -> AveragedModel:
    """An ``AveragedModel`` copy of ``model`` that ``update_parameters(model)`` moves by the warmed-up EMA."""

    @torch.no_grad()
    def update(averaged: list[Tensor], current: list[Tensor], n_averaged: Tensor) -> None:
        if torch.is_floating_point(averaged[0]):
            # the warmed-up decay computed on the device: no host synchronisation in the training step
            n = n_averaged.to(averaged[0].dtype)
            weight = 1.0 - torch.clamp((1.0 + n) / (10.0 + n), max=decay)
            torch._foreach_mul_(averaged, 1.0 - weight)
            torch._foreach_add_(averaged, torch._foreach_mul(current, weight))
        else:  # step counters
            torch._foreach_copy_(averaged, current)

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)
