"""What the batch-size finder, the learning-rate range test and DDP's set-up ask of a trainer without training:
one forward and backward whose effects are undone (weights, buffers, gradients and random streams as they
were). A mixin of :class:`~aam.training.trainer.Trainer`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from aam.training.runtime import rng_state, set_rng_state


class TrainerProbes:
    """Probing steps of a trainer (it provides ``model``, ``forward_model``, ``optimizer``, ``strategy``,
    ``precision``, ``distributed``, ``ready``, ``_forward``, ``_training_losses`` and ``_autocast``)."""

    def _parameters_with_gradients(self, batch) -> set[nn.Parameter]:
        """Parameters that one forward and backward of the bare model on ``batch`` reach; weights, buffers,
        gradients and random streams are left as they were."""
        self.model.train()
        with self._state_restored():
            with self._autocast():
                losses = self._training_losses(self._forward(self.model, batch), batch)
            losses["total"].backward()
            return {p for p in self.model.parameters() if p.grad is not None}

    def probe_step(self, batch) -> None:
        """Forward, losses and backward on ``batch`` without an optimizer step, for memory probing.

        Weights, buffers (e.g. BatchNorm statistics), gradients and random streams are as they were before.
        """
        batch = batch.to(self.device)
        self.ready(batch)
        self.forward_model.train()  # also when it was built earlier and evaluation left it in eval mode
        with self._state_restored():
            with self._autocast():
                losses = self._training_losses(self._forward(self.forward_model, batch), batch)
            self.precision.backward(losses["total"])

    @contextmanager
    def _state_restored(self) -> Iterator[None]:
        """Buffers (normalisation statistics), random streams and gradients as they were before the block."""
        buffers = [b.detach().clone() for b in self.model.buffers()]
        state = rng_state()
        try:
            yield
        finally:
            self.optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                for buffer, saved in zip(self.model.buffers(), buffers, strict=True):
                    buffer.copy_(saved)
            set_rng_state(state)

    def find_lr(self, loader: Iterable, num_iters: int = 100):
        """Learning-rate range test on ``loader``; model and optimizer are restored afterwards."""
        from aam.training.optim import find_lr

        def step(batch) -> torch.Tensor:
            batch = batch.to(self.device)
            self.ready(batch)
            with self._autocast():
                total = self._training_losses(self._forward(self.forward_model, batch), batch)["total"]
            if self.distributed is None:
                return total
            # every rank sees the mean loss (and keeps its own gradient), so all ranks end the sweep together
            mean = self.strategy.reduce_sum(total.detach()) / self.strategy.world_size
            return total + (mean - total.detach())

        self.forward_model.train()
        return find_lr(self.model, lambda: iter(loader), step, self.optimizer, num_iters=num_iters)
