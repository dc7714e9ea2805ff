"""Learning-rate schedules behind one handle that knows when it must be stepped.

:func:`build_scheduler` looks a name up in :data:`SCHEDULERS` and returns a :class:`SchedulerHandle`. The trainer
calls ``handle.step()`` after every optimizer step when ``handle.interval == 'step'`` and
``handle.step(val_metric)`` once per epoch when it is ``'epoch'`` (or calls both :meth:`SchedulerHandle.after_optimizer_step`
and :meth:`SchedulerHandle.after_epoch`, which step only at their own interval). Each schedule is therefore
stepped exactly once per optimizer step or epoch, never both.

``total_steps`` counts optimizer steps (after gradient accumulation; see :func:`optimizer_steps_per_epoch`), so
the step-wise schedules end exactly at the end of training: warmup_cosine and cosine reach ``eta_min`` after
``total_steps`` steps and stay there, and onecycle never runs past its last step.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    LRScheduler,
    OneCycleLR,
    ReduceLROnPlateau,
)

from aam.training.registries import SCHEDULERS

__all__ = [
    "SCHEDULERS",
    "SchedulerHandle",
    "SchedulerOptions",
    "WarmupCosineLR",
    "build_scheduler",
    "optimizer_steps_per_epoch",
]

log = logging.getLogger(__name__)


def optimizer_steps_per_epoch(num_batches: int, accumulation_steps: int = 1) -> int:
    """Optimizer steps in one epoch of ``num_batches`` when a leftover accumulation is flushed at epoch end."""
    return math.ceil(num_batches / max(1, accumulation_steps))


class WarmupCosineLR(LRScheduler):
    """Linear warmup to each group's base LR, then cosine decay to ``eta_min``; constant at ``eta_min`` after.

    The LR after ``s`` steps (the one used by optimizer step ``s + 1``) is ``base * (s + 1) / (W + 1)`` during
    warmup (``s < W``: starts near 0, never exactly 0), ``base`` at ``s = W``, and
    ``eta_min + (base - eta_min) * (1 + cos(pi * (s - W) / (T - W))) / 2`` until ``s = T`` where it is ``eta_min``.
    """

    def __init__(self, optimizer: Optimizer, warmup_steps: int, total_steps: int, eta_min: float = 0.0,
                 last_epoch: int = -1):
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.eta_min = float(eta_min)
        super().__init__(optimizer, last_epoch)

    def _factor(self, step: int) -> float:
        """Position on the curve: 0..1 share of the way from ``eta_min`` (0) to the base LR (1)."""
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    def get_lr(self) -> list[float]:
        step = max(0, self.last_epoch)
        factor = self._factor(step)
        if step < self.warmup_steps:
            return [base * factor for base in self.base_lrs]
        return [self.eta_min + (base - self.eta_min) * factor for base in self.base_lrs]


@dataclass(frozen=True)
class SchedulerOptions:
    """Resolved knobs of every schedule (``None`` in :func:`build_scheduler` means these defaults)."""

    total_steps: int
    steps_per_epoch: int
    warmup_steps: int
    t0: int
    t_mult: int
    eta_min: float
    patience: int
    factor: float
    min_lr: float
    mode: str


@dataclass
class SchedulerHandle:
    """A scheduler plus when to step it.

    Attributes:
        name: registry name.
        scheduler: the torch scheduler.
        interval: ``'step'`` (after every optimizer step) or ``'epoch'`` (after validation).
        needs_metric: whether :meth:`step` needs the validation metric (plateau).
    """

    name: str
    scheduler: LRScheduler
    interval: str
    needs_metric: bool = False

    def step(self, metric: float | None = None) -> None:
        """Advance one interval; ``metric`` (the validation metric) is required when ``needs_metric``."""
        if self.needs_metric:
            if metric is None:
                raise ValueError(f"scheduler {self.name!r} needs the validation metric to step")
            self.scheduler.step(float(metric))
        else:
            self.scheduler.step()

    def after_optimizer_step(self) -> None:
        """Step if this schedule advances per optimizer step."""
        if self.interval == "step":
            self.step()

    def after_epoch(self, metric: float | None = None) -> None:
        """Step if this schedule advances per epoch."""
        if self.interval == "epoch":
            self.step(metric)

    def get_last_lr(self) -> list[float]:
        return list(self.scheduler.get_last_lr())

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "interval": self.interval, "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"scheduler state is for {state.get('name')!r}, not {self.name!r}")
        self.scheduler.load_state_dict(state["scheduler"])


def warmup_cosine(optimizer: Optimizer, opts: SchedulerOptions) -> SchedulerHandle:
    scheduler = WarmupCosineLR(optimizer, opts.warmup_steps, opts.total_steps, opts.eta_min)
    return SchedulerHandle("warmup_cosine", scheduler, "step")


def cosine(optimizer: Optimizer, opts: SchedulerOptions) -> SchedulerHandle:
    return SchedulerHandle("cosine", CosineAnnealingLR(optimizer, T_max=opts.total_steps, eta_min=opts.eta_min),
                           "step")


def cosine_restarts(optimizer: Optimizer, opts: SchedulerOptions) -> SchedulerHandle:
    scheduler = CosineAnnealingWarmRestarts(optimizer, T_0=opts.t0, T_mult=opts.t_mult, eta_min=opts.eta_min)
    return SchedulerHandle("cosine_restarts", scheduler, "step")


def plateau(optimizer: Optimizer, opts: SchedulerOptions) -> SchedulerHandle:
    scheduler = ReduceLROnPlateau(optimizer, mode=opts.mode, patience=opts.patience, factor=opts.factor,
                                  min_lr=opts.min_lr)
    return SchedulerHandle("plateau", scheduler, "epoch", needs_metric=True)


def onecycle(optimizer: Optimizer, opts: SchedulerOptions) -> SchedulerHandle:
    max_lrs = [group["lr"] for group in optimizer.param_groups]
    return SchedulerHandle("onecycle", OneCycleLR(optimizer, max_lr=max_lrs, total_steps=opts.total_steps), "step")




def _resolve_warmup(total_steps: int, warmup_steps: int | None, warmup_fraction: float) -> int:
    if warmup_steps is None:
        return int(round(warmup_fraction * total_steps))
    if warmup_steps > total_steps:
        log.warning("warmup steps (%d) exceed the %d optimizer steps of this run; using %d",
                    warmup_steps, total_steps, total_steps)
        return total_steps
    return max(0, int(warmup_steps))


def build_scheduler(name: str, optimizer: Optimizer, total_steps: int, steps_per_epoch: int, *,
                    warmup_steps: int | None = None, warmup_fraction: float = 0.05, t0: int | None = None,
                    t_mult: int | None = None, eta_min: float | None = None, patience: int | None = None,
                    factor: float | None = None, min_lr: float | None = None, mode: str = "min") -> SchedulerHandle:
    """Build the ``--scheduler`` named ``name`` for ``total_steps`` optimizer steps.

    Defaults: warmup = ``warmup_fraction`` of ``total_steps`` (an explicit ``warmup_steps`` larger than the run
    is clipped with a warning); cosine_restarts ``T_0 = total_steps // 4`` and ``T_mult = 2``; ``eta_min = 0``;
    plateau ``patience = 5``, ``factor = 0.3``, ``min_lr = 0`` with ``mode`` the validation metric's direction.
    """
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose from {', '.join(SCHEDULERS)}")
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    opts = SchedulerOptions(
        total_steps=int(total_steps),
        steps_per_epoch=int(steps_per_epoch),
        warmup_steps=_resolve_warmup(total_steps, warmup_steps, warmup_fraction),
        t0=max(1, total_steps // 4) if t0 is None else int(t0),
        t_mult=2 if t_mult is None else int(t_mult),
        eta_min=0.0 if eta_min is None else float(eta_min),
        patience=5 if patience is None else int(patience),
        factor=0.3 if factor is None else float(factor),
        min_lr=0.0 if min_lr is None else float(min_lr),
        mode=mode,
    )
    return SCHEDULERS[name](optimizer, opts)
