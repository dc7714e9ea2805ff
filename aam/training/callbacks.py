"""The training loop's duties besides optimising, one callback each: the weight average (EMA), early stopping,
epoch logging, step validation, stop signals, best/last and step checkpoints, and progress lines. The
:class:`~aam.training.trainer.Trainer` calls the hooks in the order of its callback list and keeps only the
loop (batches, accumulation, optimizer and scheduler steps, validation).

Hooks (each optional): ``on_fit_start/on_fit_end(trainer)``; ``on_epoch_start(trainer, epoch, done,
n_batches)`` and ``on_batch_end(trainer, BatchEnd)`` and ``on_train_end(trainer)`` around the training pass;
``on_optimizer_step(trainer)`` right after each optimizer step; ``on_step_end(trainer, StepEnd)`` mid-epoch
after an optimizer step; ``on_epoch_end(trainer, EpochEnd)`` after validation. ``training_state(trainer)``
adds to what a checkpoint keeps for ``--resume-from`` and ``load_training_state(trainer, state)`` restores it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from aam.models.build import unwrap_model
from aam.outputs.checkpoint import strip_wrapper_prefixes
from aam.training.early_stopping import EarlyStopping
from aam.training.ema import ema_model
from aam.training.preemption import StopSignals
from aam.training.runtime import rng_state, set_rng_state
from aam.training.validation import EvalResult

log = logging.getLogger("aam.training.trainer")

STOP_SYNC_STEPS = 10  # under DDP/FSDP, ranks agree on a stop signal every this many optimizer steps


@dataclass
class BatchEnd:
    """Where the training pass is after a batch: its index ``batch`` (from 0), the batches of the epoch, those
    done before a resume (``first``), samples and loss sums so far (``resumed``: samples before the resume),
    and the seconds since this process started the epoch."""

    epoch: int
    batch: int
    n_batches: int
    first: int
    n_samples: int
    resumed: int
    sums: dict[str, Any]
    elapsed: float
    earlier: float


@dataclass
class StepEnd:
    """Mid-epoch after an optimizer step: batches of the epoch done, samples and loss sums so far, seconds spent
    on the epoch; ``stop`` (a signal number) and ``checkpoint`` (the path written) are filled by callbacks."""

    epoch: int
    batches: int
    n_samples: int
    sums: dict[str, Any]
    elapsed: float
    stop: int | None = None
    checkpoint: Path | None = None


@dataclass
class EpochEnd:
    """After an epoch's validation: its history ``row`` and ``result``; callbacks fill whether the selected
    metric improved, the checkpoint written, a stop signal and whether early stopping ends the fit."""

    epoch: int
    row: dict[str, float]
    result: EvalResult
    improved: bool = False
    checkpoint: Path | None = None
    stop: int | None = None
    finished: bool = False


class Callback:
    """A duty of the loop; every hook does nothing unless overridden."""

    def on_fit_start(self, trainer) -> None: ...
    def on_fit_end(self, trainer) -> None: ...
    def on_epoch_start(self, trainer, epoch: int, done: int, n_batches: int) -> None: ...
    def on_batch_end(self, trainer, end: BatchEnd) -> None: ...
    def on_train_end(self, trainer) -> None: ...
    def on_optimizer_step(self, trainer) -> None: ...
    def on_step_end(self, trainer, end: StepEnd) -> None: ...
    def on_epoch_end(self, trainer, end: EpochEnd) -> None: ...

    def training_state(self, trainer) -> dict[str, Any]:
        return {}

    def load_training_state(self, trainer, state: dict[str, Any]) -> None: ...


class WeightAverage(Callback):
    """``--ema-decay``: an exponential moving average of the weights, updated after every optimizer step; it
    is what validation scores and checkpoints hold, and the raw weights ride in the training state."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.average = ema_model(unwrap_model(model), decay)

    def on_optimizer_step(self, trainer) -> None:
        self.average.update_parameters(unwrap_model(trainer.model))

    def training_state(self, trainer) -> dict[str, Any]:
        return {"ema_n_averaged": self.average.count,
                "raw_model_state": {k: v.detach().cpu() for k, v in
                                    strip_wrapper_prefixes(unwrap_model(trainer.model).state_dict()).items()}}

    def load_training_state(self, trainer, state: dict[str, Any]) -> None:
        if "raw_model_state" in state:  # the checkpoint's weights are the average
            self.average.set_count(state["ema_n_averaged"])
            unwrap_model(trainer.model).load_state_dict(state["raw_model_state"])


class EarlyStoppingCallback(Callback):
    """Tracks the selected metric: whether an epoch improved (a new best) and when patience ran out."""

    def __init__(self, metric: str, patience: int):
        self.tracker = EarlyStopping(metric, patience)

    def on_epoch_end(self, trainer, end: EpochEnd) -> None:
        end.improved = self.tracker.update(end.result.metrics, end.epoch)
        end.finished = self.tracker.should_stop

    def training_state(self, trainer) -> dict[str, Any]:
        return self.tracker.state_dict()

    def load_training_state(self, trainer, state: dict[str, Any]) -> None:
        self.tracker.load_state_dict(state)


class EpochLog(Callback):
    """Each epoch's row and validation result to TensorBoard (and the log line of the diagnostics)."""

    def on_epoch_end(self, trainer, end: EpochEnd) -> None:
        trainer.diagnostics.log_epoch(end.row, end.result, end.epoch, end.improved)


class StepValidation(Callback):
    """``--val-every-steps N``: every N optimizer steps, score the step-validation loader and log it; the random
    streams and the training mode are left as they were, so a run validated mid-epoch trains the same."""

    def __init__(self, every: int | None):
        self.every = every

    def on_step_end(self, trainer, end: StepEnd) -> None:
        if not self.every or trainer.global_step % self.every or trainer.step_val_loader is None:
            return
        state = rng_state()
        result = trainer.evaluate(trainer.step_val_loader)
        set_rng_state(state)
        trainer.forward_model.train()
        row = {"epoch": end.epoch, "step": trainer.global_step, **result.metrics}
        trainer.step_history.append(row)
        trainer.diagnostics.log_step_validation(row, trainer.global_step)


class StopOnSignal(Callback):
    """SIGTERM, SIGUSR1 or SIGINT during the fit ask the run to stop: after the next optimizer step (under
    DDP/FSDP every ``STOP_SYNC_STEPS`` steps, all ranks agreeing) or at the epoch's end, once the checkpoint is
    written; the trainer then raises :class:`~aam.training.preemption.RunInterrupted`."""

    def __init__(self) -> None:
        self.signals = StopSignals(())

    def on_fit_start(self, trainer) -> None:
        self.signals = StopSignals()
        self.signals.__enter__()

    def on_fit_end(self, trainer) -> None:
        self.signals.__exit__(None, None, None)
        self.signals = StopSignals(())

    def requested(self, trainer, every_step: bool) -> int | None:
        if trainer.distributed is None:
            return self.signals.requested
        if not every_step and trainer.global_step % STOP_SYNC_STEPS:
            return None
        return trainer.strategy.agree_max(self.signals.requested or 0, trainer.device) or None

    def on_step_end(self, trainer, end: StepEnd) -> None:
        end.stop = self.requested(trainer, every_step=False)

    def on_epoch_end(self, trainer, end: EpochEnd) -> None:
        end.stop = self.requested(trainer, every_step=True)


class Checkpoints(Callback):
    """``best`` when the selected metric improves (with ``trainer.on_best``, e.g. the validation predictions),
    ``last`` after every epoch, and mid-epoch ``last`` every ``checkpoint_every_steps`` optimizer steps or when
    a stop was asked for (with how far the epoch got, so a resume continues it)."""

    def __init__(self, every_steps: int | None):
        self.every = every_steps

    def on_epoch_end(self, trainer, end: EpochEnd) -> None:
        snapshot = trainer.snapshot(end.epoch) if trainer.save_checkpoint is not None else None
        if end.improved:
            if trainer.on_best is not None:
                trainer.on_best(end.result, end.epoch)
            if snapshot is not None:
                trainer.save_checkpoint("best", snapshot)
        end.checkpoint = trainer.save_checkpoint("last", snapshot) if snapshot is not None else None

    def on_step_end(self, trainer, end: StepEnd) -> None:
        periodic = bool(self.every) and trainer.global_step % self.every == 0
        if not (periodic or end.stop):
            return
        if trainer.save_checkpoint is not None:
            n_total, totals = (end.n_samples, end.sums) if trainer.distributed is None else trainer.global_sums(
                end.n_samples, end.sums)
            if trainer.distributed is not None and trainer.distributed.rank != 0:
                n_total, totals = 0, {k: torch.zeros_like(v) for k, v in totals.items()}  # rank 0 carries them
            progress = {"epoch": end.epoch, "batches": end.batches, "n_samples": n_total, "elapsed": end.elapsed,
                        "sums": {k: float(v) for k, v in totals.items()}}
            end.checkpoint = trainer.save_checkpoint("last", trainer.snapshot(end.epoch - 1, progress))
        if not end.stop:
            log.info("step checkpoint at %s", trainer.position(end))


class Progress(Callback):
    """A progress bar on a terminal; elsewhere (a log file on a cluster) one line every ``interval`` seconds
    with position, throughput since the (re)start, mean loss and the epoch's ETA."""

    def __init__(self, show_bar: bool, interval: float):
        self.show_bar, self.interval = show_bar, interval
        self.bar: Any = None
        self.last_line = 0.0

    def on_epoch_start(self, trainer, epoch: int, done: int, n_batches: int) -> None:
        self.bar = tqdm(total=n_batches, initial=done, desc=f"epoch {epoch + 1}/{trainer.config.epochs}",
                        leave=False, disable=None if self.show_bar else True,  # None: off when not a terminal
                        dynamic_ncols=True)
        self.last_line = time.perf_counter()

    def on_batch_end(self, trainer, end: BatchEnd) -> None:
        self.bar.update(1)
        now = time.perf_counter()
        i = end.batch
        if self.bar.disable and now - self.last_line >= self.interval:
            remaining = (end.n_batches - i - 1) * end.elapsed / max(i + 1 - end.first, 1)
            log.info("epoch %d/%d  batch %d/%d  step %d  %.1f samples/s  loss %.4g  epoch ETA %s", end.epoch + 1,
                     trainer.config.epochs, i + 1, end.n_batches, trainer.global_step,
                     (end.n_samples - end.resumed) / max(end.elapsed, 1e-9),
                     float(end.sums["total"]) / max(end.n_samples, 1), _duration(remaining))
            self.last_line = now
        elif not self.bar.disable and (i % 10 == 0 or i + 1 == end.n_batches):
            rate = end.n_samples / max(end.earlier + end.elapsed, 1e-9)
            self.bar.set_postfix(loss=f"{(end.sums['total'] / end.n_samples).item():.4f}", samples_s=f"{rate:.1f}")

    def on_train_end(self, trainer) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"
