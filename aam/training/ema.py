"""Exponential moving average of a model's weights (``--ema-decay``), on top of ``torch.optim.swa_utils``.

The average covers parameters and floating-point buffers (the ASV normalisation's running statistics), so
the statistics match the averaged weights rather than the raw ones; integer buffers are copied. The decay
warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so the first epochs' average is not
dominated by the initial weights.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def warmed_up_decay(decay: float, n_averaged: int) -> float:
    """The decay applied at update ``n_averaged`` (1 for the first copy, rising to ``decay``)."""
    return min(decay, (1 + n_averaged) / (10 + n_averaged))


class ExponentialAverage(AveragedModel):
    """An ``AveragedModel`` (its ``module`` and ``n_averaged`` buffer, so checkpoints keep their keys) whose
    update reads its count from a host copy: torch's own reads the device buffer twice a step (``== 0``,
    ``> 0``), each a host synchronisation on a GPU. Floating tensors move by the warmed-up EMA; integer
    buffers (step counters) are copied."""

    def __init__(self, model: nn.Module, decay: float):
        super().__init__(model, use_buffers=True)
        self.decay = float(decay)
        self._count: int | None = None  # read from the buffer once, at the first update

    @property
    def count(self) -> int:
        """Updates so far (host copy; a checkpoint's count after :meth:`set_count`)."""
        return int(self.n_averaged) if self._count is None else self._count

    def set_count(self, n: int) -> None:
        """A resumed run's count, into the buffer and the host copy."""
        self.n_averaged.fill_(int(n))
        self._count = int(n)

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        count = self.count
        averaged = [*self.module.parameters(), *self.module.buffers()]
        current = [t.detach().to(a.device) for t, a in zip([*model.parameters(), *model.buffers()], averaged)]
        moving: tuple[list, list] = ([], [])  # floating tensors after the first update: the EMA
        copied: tuple[list, list] = ([], [])  # the first update, and integer buffers (step counters)
        for a, c in zip(averaged, current):
            pair = moving if count > 0 and a.is_floating_point() else copied
            pair[0].append(a)
            pair[1].append(c)
        if moving[0]:
            torch._foreach_lerp_(*moving, 1.0 - warmed_up_decay(self.decay, count))
        if copied[0]:
            torch._foreach_copy_(*copied)
        self.n_averaged += 1  # on the device, without reading it
        self._count = count + 1


def ema_model(model: nn.Module, decay: float) -> ExponentialAverage:
    """An :class:`ExponentialAverage` copy of ``model`` that ``update_parameters(model)`` moves by the
    warmed-up EMA."""
    return ExponentialAverage(model, decay)
