"""One training loop for pretraining and fine-tuning.

The Trainer knows nothing about files or flags beyond its :class:`TrainerConfig`: it receives a model, a
multi-task loss, data loaders of :class:`~aam.data.dataset.Batch`, an optional :class:`PredictionDecoder` (for
target metrics in original units) and a ``save_checkpoint`` callback. The loop (accumulation exact for partial
groups, clipping, schedulers stepped exactly once per optimizer step or epoch, validation over every sample,
resumable state down to the batch) is the same everywhere; its other duties (the weight average, early
stopping, epoch logging, step validation, stop signals, checkpoints, progress lines) are callbacks
(:mod:`aam.training.callbacks`) and validation is :mod:`aam.training.validation`. What differs between one
device, DataParallel, DDP and FSDP lives in a :class:`~aam.training.strategy.Strategy`, and what differs
between fp32, bf16, fp16 and TF32 in a :class:`~aam.training.precision.Precision`.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from aam.models.build import unwrap_model
from aam.models.layers import attention_backend
from aam.objectives.metrics import metric_direction
from aam.outputs.checkpoint import Snapshot
from aam.outputs.prediction import PredictionDecoder
from aam.training.callbacks import (
    BatchEnd,
    Callback,
    Checkpoints,
    EarlyStoppingCallback,
    EpochEnd,
    EpochLog,
    Progress,
    StepEnd,
    StepValidation,
    StopOnSignal,
    WeightAverage,
)
from aam.training.config import TrainerConfig  # noqa: F401 (re-exported)
from aam.training.diagnostics import Diagnostics
from aam.training.distributed import DeviceDistanceLookup, DistributedContext, gather_with_grad
from aam.training.early_stopping import EarlyStopping
from aam.training.forward import compile_for_training, forward_batch  # noqa: F401 (forward_batch re-exported)
from aam.training.optim import build_optimizer, param_group_lrs
from aam.training.precision import Precision
from aam.training.preemption import RunInterrupted
from aam.training.probes import TrainerProbes
from aam.training.resume_state import TrainerState
from aam.training.runtime import memory_usage, set_rng_state
from aam.training.schedulers import build_scheduler
from aam.training.strategy import build_strategy
from aam.training.validation import EvalResult, loss_name, reduce_sums, validate

log = logging.getLogger(__name__)



@dataclass
class FitResult:
    best_metric: float
    best_epoch: int
    history: list[dict[str, float]]
    best_eval: EvalResult | None


class Trainer(TrainerProbes, TrainerState):
    """Fits ``model`` with ``loss_fn`` (a :class:`~aam.objectives.losses.MultiTaskLoss`).

    The loop's other duties are ``callbacks`` (:mod:`aam.training.callbacks`), built from ``config``: with
    ``config.ema_decay`` a weight average is what validation scores and checkpoints hold.

    Args:
        model: a SequenceEncoder or SequencePredictor (possibly frozen in part).
        loss_fn: maps (model outputs, batch) to a dict with ``total`` and per-objective losses.
        config: optimisation settings.
        device: where the model and batches live.
        decoder: maps target predictions back to original units; None for pretraining.
        save_checkpoint: ``fn(name, snapshot)`` called on every rank for ``best`` and ``last`` with a
            :class:`~aam.outputs.checkpoint.Snapshot` (already gathered under FSDP) to write; returns the
            path written (named in the resume line of a stopped run).
        on_best: ``fn(eval_result, epoch)`` called when the selected metric improves (writes predictions).
        writer: a TensorBoard ``SummaryWriter`` or None (unless ``diagnostics`` is given).
        diagnostics: what TensorBoard receives (:class:`~aam.training.diagnostics.Diagnostics`).
        distributed: this rank's place in a DDP or FSDP run (None: one process).
        distance_lookup: UniFrac targets of AmpliconData rows, for the pairs of the global batch (DDP/FSDP).
        data_parallel: one process over all visible GPUs (:class:`BatchDataParallel`).
        sharded_checkpoint: under FSDP, snapshots hold each rank's shards instead of the gathered state.
    """

    def __init__(self, model: nn.Module, loss_fn: Callable, config: TrainerConfig, *,
                 device: torch.device, decoder: PredictionDecoder | None = None,
                 save_checkpoint: Callable[[str, Snapshot], Any] | None = None,
                 on_best: Callable[[EvalResult, int], None] | None = None,
                 writer: Any = None, diagnostics: Diagnostics | None = None,
                 distributed: DistributedContext | None = None,
                 distance_lookup: Callable[[np.ndarray], np.ndarray] | None = None,
                 data_parallel: bool = False, sharded_checkpoint: bool = False):
        self.config = config
        self.strategy = build_strategy(distributed, data_parallel, sharded_checkpoint)
        self.precision = Precision(config.mixed_precision, device, config.tf32)
        self.distance_lookup = distance_lookup
        # the global batch's targets: on the device when the matrix fits (no host sync in the step)
        self.device_lookup = DeviceDistanceLookup.maybe(distance_lookup, device) if (
            self.distributed is not None and distance_lookup is not None) else None
        self.device = device
        self.model = model.to(device)
        self.strategy.setup(self.model, device, self.precision.name)
        self.loss_fn = loss_fn
        self.decoder = decoder
        self.save_checkpoint = save_checkpoint
        self.on_best = on_best
        self.diagnostics = diagnostics if diagnostics is not None else Diagnostics(writer, [], config.epochs)
        self.optimizer = build_optimizer(self.model, config.optimizer, lr=config.lr,
                                         weight_decay=config.weight_decay, categorical_lr=config.categorical_lr)
        self._compile: Callable[[nn.Module], nn.Module] | None = None
        if config.compile_model and not self.strategy.supports_compile:
            log.warning("--compile-model is ignored with --data-parallel (its replicas would all run the first "
                        "GPU's compiled code); for compiled multi-GPU training use torchrun with --distributed")
        elif config.compile_model:
            self._compile = partial(compile_for_training, backend=config.compile_backend)
        self.eval_model = self._compile(self.model) if self._compile is not None else self.model
        # DDP is built at the first training batch (see ready), once it is known which parameters get gradients
        self.forward_model = self.strategy.wrap(self.model, self.eval_model)
        self.callbacks: list[Callback] = []
        if config.ema_decay is not None:
            if not self.strategy.supports_ema:
                raise ValueError(f"a weight EMA is not supported with {self.strategy.name}")
            self.callbacks.append(WeightAverage(self.model, config.ema_decay))
        self.callbacks += [EarlyStoppingCallback(config.best_metric, config.patience), EpochLog(),
                           StepValidation(config.val_every_steps), StopOnSignal(),
                           Checkpoints(config.checkpoint_every_steps), Progress(config.progress, config.progress_interval)]
        self.scheduler = None
        self.start_epoch = 0
        self.global_step = 0
        self.history: list[dict[str, float]] = []
        self._pending_state: dict[str, Any] | None = None
        self._epoch_progress: dict[str, Any] | None = None  # where a mid-epoch checkpoint left the current epoch
        self.step_val_loader: Iterable | None = None  # scored every val_every_steps optimizer steps
        self.step_history: list[dict[str, float]] = []  # the step validations of this process's fit

    @property
    def distributed(self) -> DistributedContext | None:
        """This rank's place in a DDP or FSDP run (None: one process)."""
        return self.strategy.distributed

    def _callback(self, kind: type) -> Any:
        return next((c for c in self.callbacks if isinstance(c, kind)), None)

    @property
    def ema(self) -> AveragedModel | None:
        """The weight average (``--ema-decay``), or None."""
        average = self._callback(WeightAverage)
        return None if average is None else average.average

    @property
    def early_stopping(self) -> EarlyStopping:
        """The selected metric's best value and epoch, and the patience left."""
        return self._callback(EarlyStoppingCallback).tracker

    def _each(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    # ------------------------------------------------------------------ loop
    def fit(self, train_loader: Iterable, val_loader: Iterable,
            step_val_loader: Iterable | None = None) -> FitResult:
        """Train for the configured epochs, validating on ``val_loader`` after each (best checkpoint, early
        stopping) and, with ``val_every_steps``, on ``step_val_loader`` (default ``val_loader``) every N
        optimizer steps (logged only)."""
        cfg = self.config
        self.step_val_loader = step_val_loader if step_val_loader is not None else val_loader
        steps_per_epoch = math.ceil(len(train_loader) / cfg.gradient_accumulation_steps)
        self.scheduler = build_scheduler(
            cfg.scheduler, self.optimizer, total_steps=max(1, steps_per_epoch * cfg.epochs),
            steps_per_epoch=steps_per_epoch, warmup_steps=cfg.warmup_steps, warmup_fraction=cfg.warmup_fraction,
            t0=cfg.scheduler_t0, t_mult=cfg.scheduler_t_mult, eta_min=cfg.scheduler_eta_min,
            patience=cfg.scheduler_patience, factor=cfg.scheduler_factor, min_lr=cfg.scheduler_min_lr,
            mode=metric_direction(cfg.best_metric))
        self._restore_pending_state()
        self._each("on_fit_start")
        try:
            with attention_backend(cfg.attn_implementation, self.device):
                return self._fit_epochs(train_loader, val_loader)
        finally:
            self._each("on_fit_end")

    def _fit_epochs(self, train_loader: Iterable, val_loader: Iterable) -> FitResult:
        cfg = self.config
        best_eval: EvalResult | None = None
        if self.early_stopping.should_stop and self._epoch_progress is None:  # resumed after it had stopped
            log.info("this run had already stopped early (best %.4g at epoch %d); nothing left to train",
                     self.early_stopping.best_value, self.early_stopping.best_epoch + 1)
            return FitResult(self.early_stopping.best_value, self.early_stopping.best_epoch, self.history, None)
        for epoch in range(self.start_epoch, cfg.epochs):
            for loader in (train_loader, val_loader):
                for part in (getattr(loader, "sampler", None), getattr(loader, "dataset", None)):
                    if hasattr(part, "set_epoch"):
                        part.set_epoch(epoch)
            if cfg.memory_profile:
                memory_usage(self.device, reset=True)
            train_metrics = self.train_epoch(train_loader, epoch)
            result = self.evaluate(val_loader)
            row = {"epoch": epoch, **train_metrics, **result.metrics}
            if cfg.memory_profile:  # peak of this epoch's training and validation
                row.update(memory_usage(self.device))
            row.update({f"lr_{name}": lr for name, lr in param_group_lrs(self.optimizer).items()})
            self.history.append(row)
            if self.scheduler.interval == "epoch":
                self.scheduler.step(result.metrics.get(self.early_stopping.key))
            end = EpochEnd(epoch, row, result)
            self._each("on_epoch_end", end)
            if end.improved:
                best_eval = result
            if end.stop:
                raise RunInterrupted(end.stop, None if end.checkpoint is None else str(end.checkpoint),
                                     f"the end of epoch {epoch + 1}")
            if end.finished:
                log.info("early stopping: %s did not improve for %d epochs (best %.4g at epoch %d)",
                         cfg.best_metric, cfg.patience, self.early_stopping.best_value,
                         self.early_stopping.best_epoch + 1)
                break
        return FitResult(self.early_stopping.best_value, self.early_stopping.best_epoch, self.history, best_eval)

    def _forward(self, model: nn.Module, batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Model outputs: embeddings of clean sequences, plus masked-nucleotide outputs when that objective is on."""
        return forward_batch(model, batch, mask_nucleotides=self.config.mask_nucleotides, generator=generator)

    def _training_losses(self, outputs: dict[str, torch.Tensor], batch) -> dict[str, torch.Tensor]:
        """The multi-task loss; under DDP/FSDP the pairwise UniFrac term covers every pair of the global batch."""
        if self.distributed is None or self.distance_lookup is None or "embeddings" not in outputs:
            return self.loss_fn(outputs, batch)
        world = self.distributed.world_size  # gradients are averaged over ranks; the local slice's is scaled back
        # DistributedSampler pads every rank's shard to the same length, so batch sizes agree across ranks
        embeddings = gather_with_grad(outputs["embeddings"], grad_scale=world, same_size=True)  # [G, D]
        rows = gather_with_grad(batch.sample_index, same_size=True)  # [G] on the device
        if self.device_lookup is not None:
            targets = self.device_lookup(rows)
        else:  # a matrix too large for the device: looked up on the host (one synchronisation per step)
            targets = torch.as_tensor(self.distance_lookup(rows.cpu().numpy())).to(embeddings.device,
                                                                                   non_blocking=True)
        if targets.dim() != 2:  # per-sample targets (Faith PD) need no pairs
            return self.loss_fn(outputs, batch)
        global_outputs = {**outputs, "distances": unwrap_model(self.model).distance_head(embeddings)}
        return self.loss_fn(global_outputs, dataclasses.replace(batch, distances=targets))

    def _autocast(self):
        return self.precision.autocast()

    def train_epoch(self, loader: Iterable, epoch: int) -> dict[str, float]:
        """One pass over ``loader`` (continuing where a mid-epoch checkpoint stopped, if it did).

        After every optimizer step the callbacks' ``on_step_end`` runs (step validation, a stop signal, the step
        checkpoint); a stop ends the run with :class:`RunInterrupted` once its checkpoint is written.
        """
        self.forward_model.train()
        n_batches = len(loader)
        progress, self._epoch_progress = self._epoch_progress, None
        done = int(progress["batches"]) if progress is not None and progress["epoch"] == epoch else 0
        sums: dict[str, Any] = {k: torch.tensor(v, device=self.device)
                                for k, v in (progress["sums"].items() if done else ())}
        n_samples = int(progress["n_samples"]) if done else 0
        earlier = float(progress["elapsed"]) if done else 0.0  # seconds spent on this epoch before the resume
        start = time.perf_counter()
        batches = iter(_skip_batches(loader, done))
        if done:
            set_rng_state(progress["rng"])
        self._each("on_epoch_start", epoch, done, n_batches)
        try:
            n_samples, sums = self._train_batches(batches, epoch, done, n_batches, sums, n_samples, start, earlier,
                                                  int(getattr(loader, "batch_size", None) or 0))
        finally:
            self._each("on_train_end")
        elapsed = earlier + time.perf_counter() - start
        if self.distributed is not None:  # losses and throughput of the whole run, not of this rank
            n_samples, sums = self.global_sums(n_samples, sums)
        metrics = {f"train_{loss_name(k)}": (v / max(n_samples, 1)).item() for k, v in sums.items()}
        metrics["train_samples_per_s"] = n_samples / max(elapsed, 1e-9)
        return metrics

    def _train_batches(self, batches: Iterable, epoch: int, done: int, n_batches: int, sums: dict[str, Any],
                       n_samples: int, start: float, earlier: float, batch_size: int) -> tuple[int, dict[str, Any]]:
        """The training pass over ``batches`` (the epoch's, from batch ``done``); returns the sample count and
        the loss sums."""
        cfg = self.config
        accumulation = cfg.gradient_accumulation_steps
        resumed_samples = n_samples
        self.optimizer.zero_grad(set_to_none=True)
        # each batch's mean loss counts by its share of the samples of its accumulation group, so k batches
        # give the gradient of one batch k times larger, the smaller last batch and partial group included
        group_target = accumulation * batch_size
        group_samples = 0
        for i, batch in enumerate(batches, start=done):
            batch = batch.to(self.device, non_blocking=True)
            self.ready(batch)
            size = len(batch)
            group_target = group_target or accumulation * size
            boundary = (i + 1) % accumulation == 0 or i + 1 == n_batches
            with self.strategy.no_sync(not boundary):
                with self._autocast():
                    outputs = self._forward(self.forward_model, batch)
                    losses = self._training_losses(outputs, batch)
                self.precision.backward(losses["total"] * (size / group_target))
            group_samples += size
            n_samples += size
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + value.detach().float() * size
            if boundary:
                if group_samples != group_target:  # a smaller group: rescale to its own sample count
                    self._scale_grads(group_target / group_samples)
                group_samples = 0
                self._optimizer_step(log_norms=cfg.log_grad_norms and i + 1 == n_batches)
                if i + 1 < n_batches:  # the epoch's end validates and checkpoints anyway
                    step = StepEnd(epoch, i + 1, n_samples, sums, earlier + time.perf_counter() - start)
                    self._each("on_step_end", step)
                    if step.stop:
                        raise RunInterrupted(step.stop, None if step.checkpoint is None else str(step.checkpoint),
                                             self.position(step))
            self._each("on_batch_end", BatchEnd(epoch, i, n_batches, done, n_samples, resumed_samples, sums,
                                                time.perf_counter() - start, earlier))
        return n_samples, sums

    def position(self, step: StepEnd) -> str:
        """Where a mid-epoch step is, as the log and the resume line name it."""
        return f"epoch {step.epoch + 1}, batch {step.batches}, step {self.global_step}"

    def ready(self, batch) -> None:
        """Build what waits for the first batch (the DDP wrapper, in training mode; ``batch`` on the device).
        ``fit`` calls it; call it before using ``forward_model`` directly. A no-op once built."""
        if self.strategy.pending:
            used = self._parameters_with_gradients(batch)
            self.forward_model = self.strategy.wrap_with_batch(self.model, used, self.device, self._compile)
            self.forward_model.train()

    def _scale_grads(self, factor: float) -> None:
        for parameter in self.model.parameters():
            if parameter.grad is not None:
                parameter.grad.mul_(factor)

    def global_sums(self, n_samples: int, sums: dict[str, Any]) -> tuple[int, dict[str, torch.Tensor]]:
        """Sample count and per-loss sums added over all ranks (every rank calls it, keys in the same order)."""
        return reduce_sums(self.strategy, self.device, n_samples, sums)

    def _optimizer_step(self, log_norms: bool) -> None:
        cfg = self.config
        self.strategy.before_optimizer_step(self.model)
        self.precision.unscale_(self.optimizer)
        if log_norms:
            self.diagnostics.log_grad_norms(self.model, self.global_step)
        if cfg.max_grad_norm is not None:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            self.strategy.clip_grad_norm_(params, cfg.max_grad_norm)
        self.precision.step(self.optimizer)
        self.optimizer.zero_grad(set_to_none=True)
        self._each("on_optimizer_step")
        self.global_step += 1
        if self.scheduler.interval == "step":
            self.scheduler.step()

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, loader: Iterable) -> EvalResult:
        """Loss and metrics over every sample of ``loader`` (original units for targets)."""
        model = self.eval_model if self.ema is None else self.ema.module
        model.eval()
        # every rank scores with the weights and statistics rank 0 saves (gathered once under FSDP)
        with self.strategy.evaluation(self.model, None if self.ema is None else self.ema.module), \
                attention_backend(self.config.attn_implementation, self.device):
            return self._evaluate(loader, model)

    def _evaluate(self, loader: Iterable, model: nn.Module) -> EvalResult:
        return validate(model, loader, forward=self._forward, loss_fn=self.loss_fn, decoder=self.decoder,
                        device=self.device, autocast=self._autocast,
                        strategy=self.strategy if self.distributed is not None else None)


def _skip_batches(loader: Iterable, n: int) -> Iterable:
    """``loader`` without its first ``n`` batches: the sampler skips them when it can (no data is loaded),
    otherwise they are drawn and dropped."""
    if n == 0:
        return loader
    sampler = getattr(loader, "sampler", None)
    batch_size = getattr(loader, "batch_size", None)
    if hasattr(sampler, "skip") and batch_size:
        sampler.skip(n * batch_size)
        return loader
    return itertools.islice(loader, n, None)
