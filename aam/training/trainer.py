"""One training loop for pretraining and fine-tuning.

The Trainer knows nothing about files or flags beyond its :class:`TrainerConfig`: it receives a model, a
multi-task loss, data loaders of :class:`~aam.data.dataset.Batch`, an optional :class:`PredictionDecoder` (for
target metrics in original units) and a ``save_checkpoint`` callback. The loop (accumulation exact for partial
groups, clipping, schedulers stepped exactly once per optimizer step or epoch, validation over every sample,
early stopping, resumable state down to the batch, stop signals, progress lines) is the same everywhere; what
differs between one device, DataParallel, DDP and FSDP lives in a :class:`~aam.training.strategy.Strategy`,
and what differs between fp32, bf16, fp16 and TF32 in a :class:`~aam.training.precision.Precision`.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from aam.models.build import unwrap_model
from aam.models.layers import attention_backend
from aam.objectives.metrics import (
    ClassificationMetrics,
    DistanceMetrics,
    RegressionMetrics,
    metric_direction,
)
from aam.outputs.checkpoint import Snapshot, strip_wrapper_prefixes
from aam.outputs.prediction import PredictionDecoder
from aam.training import sharding
from aam.training.asv_cache import encode_all_asvs
from aam.training.config import TrainerConfig  # noqa: F401 (re-exported)
from aam.training.diagnostics import Diagnostics
from aam.training.distributed import DeviceDistanceLookup, DistributedContext, gather_with_grad
from aam.training.early_stopping import EarlyStopping
from aam.training.ema import ema_model
from aam.training.optim import build_optimizer, param_group_lrs
from aam.training.precision import Precision
from aam.training.preemption import RunInterrupted, StopSignals
from aam.training.runtime import memory_usage
from aam.training.schedulers import build_scheduler
from aam.training.strategy import build_strategy

log = logging.getLogger(__name__)

STOP_SYNC_STEPS = 10  # under DDP/FSDP, ranks agree on a stop signal every this many optimizer steps


@dataclass
class EvalResult:
    """Validation metrics (original units) and, when targets exist, per-sample predictions."""

    metrics: dict[str, float]
    predictions: Any = None  # pandas.DataFrame with sample_id, prediction, actual (+ probabilities)
    distance_pairs: tuple[np.ndarray, np.ndarray] | None = None  # (predicted, true) upper-triangle pairs
    confusion: np.ndarray | None = None
    diagnostics: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class FitResult:
    best_metric: float
    best_epoch: int
    history: list[dict[str, float]]
    best_eval: EvalResult | None


def forward_batch(model: nn.Module, batch, *, mask_nucleotides: bool = False,
                  asv_embeddings: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Run ``model`` on a :class:`Batch` (the one place that maps batch fields onto model arguments).

    The nucleotide mask is drawn here, before the forward pass (from ``generator``, else the global stream),
    so a compiled or wrapped model receives it as an input and holds no random-number calls.
    """
    kwargs: dict[str, Any] = {}
    if asv_embeddings is not None:
        kwargs["asv_embeddings"] = asv_embeddings
    elif mask_nucleotides:
        mask = unwrap_model(model).draw_nucleotide_mask(batch.tokens, generator)
        if mask is not None:
            kwargs["nucleotide_mask"] = mask
    if not batch.tokens_padded:  # equal-length sequences: attention without a mask (flash kernels)
        kwargs["tokens_padded"] = False
    return model(batch.tokens, batch.asv_index, batch.asv_mask, counts=batch.counts,
                 categoricals=batch.categoricals, **kwargs)


def compile_for_training(module: nn.Module, backend: str = "inductor") -> nn.Module:
    """``torch.compile`` with dynamic shapes: batches differ in samples, distinct ASVs and slots, so one
    graph serves them all instead of a recompilation per new shape."""
    return torch.compile(module, backend=backend, dynamic=True)


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """Fits ``model`` with ``loss_fn`` (a :class:`~aam.objectives.losses.MultiTaskLoss`).

    With ``config.ema_decay`` an exponential moving average of the weights (:mod:`aam.training.ema`, updated
    after every optimizer step) is what validation scores and checkpoints hold; the raw weights and the
    average's update count ride in the training state, so ``--resume-from`` restores both.

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
        writer: a TensorBoard ``SummaryWriter`` or None.
        category_names: metadata column names, for cross-attention heatmaps.
        distributed: this rank's place in a DDP or FSDP run (None: one process).
        distance_lookup: UniFrac targets of AmpliconData rows, for the pairs of the global batch (DDP/FSDP).
        data_parallel: one process over all visible GPUs (:class:`BatchDataParallel`).
        sharded_checkpoint: under FSDP, snapshots hold each rank's shards instead of the gathered state.
        asv_tokens: the table's tokenised ASVs [N_asvs, L]: with a frozen encoder every ASV is encoded once,
            before training, and steps skip the ASV encoder.
    """

    def __init__(self, model: nn.Module, loss_fn: Callable, config: TrainerConfig, *,
                 device: torch.device, decoder: PredictionDecoder | None = None,
                 save_checkpoint: Callable[[str, Snapshot], Any] | None = None,
                 on_best: Callable[[EvalResult, int], None] | None = None,
                 writer: Any = None, category_names: list[str] | None = None,
                 distributed: DistributedContext | None = None,
                 distance_lookup: Callable[[np.ndarray], np.ndarray] | None = None,
                 data_parallel: bool = False, sharded_checkpoint: bool = False,
                 asv_tokens: np.ndarray | None = None):
        self.config = config
        self.strategy = build_strategy(distributed, data_parallel, sharded_checkpoint)
        self.precision = Precision(config.mixed_precision, device, config.tf32)
        self.distance_lookup = distance_lookup
        # the global batch's targets: on the device when the matrix fits (no host sync in the step)
        self.device_lookup = DeviceDistanceLookup.maybe(distance_lookup, device) if (
            self.distributed is not None and distance_lookup is not None) else None
        self.device = device
        self.model = model.to(device)
        self.asv_embeddings: torch.Tensor | None = None  # [N_asvs, D] cache for a frozen encoder
        if asv_tokens is not None:
            self.asv_embeddings = encode_all_asvs(self.model, asv_tokens, device)
            log.info("cached embeddings of %d ASVs (frozen encoder)", len(self.asv_embeddings))
        self.strategy.setup(self.model, device, self.precision.name)
        self.loss_fn = loss_fn
        self.decoder = decoder
        self.save_checkpoint = save_checkpoint
        self.on_best = on_best
        self.diagnostics = Diagnostics(writer, category_names or [], config.epochs)
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
        self.ema: AveragedModel | None = None
        if config.ema_decay is not None:
            if not self.strategy.supports_ema:
                raise ValueError(f"a weight EMA is not supported with {self.strategy.name}")
            self.ema = ema_model(unwrap_model(self.model), config.ema_decay)
        self.scheduler = None
        self.start_epoch = 0
        self.global_step = 0
        self.early_stopping = EarlyStopping(config.best_metric, config.patience)
        self.history: list[dict[str, float]] = []
        self._pending_state: dict[str, Any] | None = None
        self._epoch_progress: dict[str, Any] | None = None  # where a mid-epoch checkpoint left the current epoch
        self._stop = StopSignals(())  # replaced by an active one during fit
        self._step_val_loader: Iterable | None = None  # scored every val_every_steps optimizer steps
        self.step_history: list[dict[str, float]] = []  # the step validations of this process's fit

    @property
    def distributed(self) -> DistributedContext | None:
        """This rank's place in a DDP or FSDP run (None: one process)."""
        return self.strategy.distributed

    # ------------------------------------------------------------------ state
    def snapshot(self, epoch: int, progress: dict[str, Any] | None = None) -> Snapshot:
        """Weights and training state to write; under FSDP a collective (every rank calls it).

        ``epoch`` is the last finished epoch; ``progress`` describes how far the next one got (mid-epoch).
        """
        model_state, optimizer_state = self.strategy.states(self.model, self._scored_model(), self.optimizer)
        state = self.training_state(epoch, optimizer_state)
        if progress is not None:
            state["epoch_progress"] = progress
        return Snapshot(model_state, state, sharded=self.strategy.sharded_checkpoint)

    def training_state(self, epoch: int, optimizer_state: dict[str, Any]) -> dict[str, Any]:
        """Everything ``--resume-from`` needs besides the weights."""
        return {
            "epoch": epoch,
            "global_step": self.global_step,
            "optimizer": optimizer_state,
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.precision.state_dict(),
            "rng": rng_state(),
            **self.early_stopping.state_dict(),
            "history": list(self.history),
            **({} if self.ema is None else {
                "ema_n_averaged": int(self.ema.n_averaged),
                "raw_model_state": {k: v.detach().cpu() for k, v in
                                    strip_wrapper_prefixes(unwrap_model(self.model).state_dict()).items()}}),
        }

    def _scored_model(self) -> nn.Module:
        """The weights validation scores and checkpoints keep: the EMA if there is one, else the bare model."""
        return unwrap_model(self.model) if self.ema is None else self.ema.module

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`training_state`; the next epoch is ``state['epoch'] + 1``, continued
        from its ``epoch_progress`` when the checkpoint was written mid-epoch."""
        self.precision.load_state_dict(state["scaler"])
        self.start_epoch = state["epoch"] + 1
        self.global_step = state["global_step"]
        self.early_stopping.load_state_dict(state)
        self.history = list(state.get("history", []))
        self._epoch_progress = state.get("epoch_progress")
        if self.ema is not None and "raw_model_state" in state:  # the checkpoint's weights are the average
            self.ema.n_averaged.fill_(state["ema_n_averaged"])
            unwrap_model(self.model).load_state_dict(state["raw_model_state"])
        self._pending_state = state  # optimizer, scheduler and RNG are restored once the scheduler exists

    # ------------------------------------------------------------------ loop
    def fit(self, train_loader: Iterable, val_loader: Iterable,
            step_val_loader: Iterable | None = None) -> FitResult:
        """Train for the configured epochs, validating on ``val_loader`` after each (best checkpoint, early
        stopping) and, with ``val_every_steps``, on ``step_val_loader`` (default ``val_loader``) every N
        optimizer steps (logged only)."""
        cfg = self.config
        self._step_val_loader = step_val_loader if step_val_loader is not None else val_loader
        steps_per_epoch = math.ceil(len(train_loader) / cfg.gradient_accumulation_steps)
        self.scheduler = build_scheduler(
            cfg.scheduler, self.optimizer, total_steps=max(1, steps_per_epoch * cfg.epochs),
            steps_per_epoch=steps_per_epoch, warmup_steps=cfg.warmup_steps, warmup_fraction=cfg.warmup_fraction,
            t0=cfg.scheduler_t0, t_mult=cfg.scheduler_t_mult, eta_min=cfg.scheduler_eta_min,
            patience=cfg.scheduler_patience, factor=cfg.scheduler_factor, min_lr=cfg.scheduler_min_lr,
            mode=metric_direction(cfg.best_metric))
        if self._pending_state is not None:
            # after the scheduler is built: building it resets the learning rates the optimizer state restores
            sharding.load_optimizer_state(self.model, self.optimizer, self._pending_state["optimizer"])
            if self._pending_state.get("scheduler") is not None:
                self.scheduler.load_state_dict(self._pending_state["scheduler"])
            if self._epoch_progress is None:
                set_rng_state(self._pending_state["rng"])
            else:  # mid-epoch: restored once the epoch's batch iterator exists (creating it draws a seed)
                self._epoch_progress = {**self._epoch_progress, "rng": self._pending_state["rng"]}
            self._pending_state = None
        with StopSignals() as self._stop, attention_backend(cfg.attn_implementation, self.device):
            try:
                return self._fit_epochs(train_loader, val_loader)
            finally:
                self._stop = StopSignals(())

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
            improved = self.early_stopping.update(result.metrics, epoch)
            self.diagnostics.log_epoch(row, result, epoch, improved)
            snapshot = self.snapshot(epoch) if self.save_checkpoint is not None else None
            if improved:
                best_eval = result
                if self.on_best is not None:
                    self.on_best(result, epoch)
                if snapshot is not None:
                    self.save_checkpoint("best", snapshot)
            path = self.save_checkpoint("last", snapshot) if snapshot is not None else None
            stop = self._stop_requested(every_step=True)
            if stop:
                raise RunInterrupted(stop, None if path is None else str(path), f"the end of epoch {epoch + 1}")
            if self.early_stopping.should_stop:
                log.info("early stopping: %s did not improve for %d epochs (best %.4g at epoch %d)",
                         cfg.best_metric, cfg.patience, self.early_stopping.best_value,
                         self.early_stopping.best_epoch + 1)
                break
        return FitResult(self.early_stopping.best_value, self.early_stopping.best_epoch, self.history, best_eval)

    def _forward(self, model: nn.Module, batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Model outputs: embeddings of clean sequences, plus masked-nucleotide outputs when that objective is on."""
        if self.asv_embeddings is not None:
            return forward_batch(model, batch, asv_embeddings=self.asv_embeddings[batch.asv_ids])
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

        After every optimizer step, a step checkpoint is written every ``checkpoint_every_steps`` steps and a
        stop signal ends the run with :class:`RunInterrupted` once its checkpoint is written.
        """
        cfg = self.config
        self.forward_model.train()
        accumulation = cfg.gradient_accumulation_steps
        n_batches = len(loader)
        progress, self._epoch_progress = self._epoch_progress, None
        done = int(progress["batches"]) if progress is not None and progress["epoch"] == epoch else 0
        sums: dict[str, Any] = {k: torch.tensor(v, device=self.device)
                                for k, v in (progress["sums"].items() if done else ())}
        n_samples = resumed_samples = int(progress["n_samples"]) if done else 0
        earlier = float(progress["elapsed"]) if done else 0.0  # seconds spent on this epoch before the resume
        start = last_line = time.perf_counter()
        batches = iter(_skip_batches(loader, done))
        if done:
            set_rng_state(progress["rng"])
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=None if cfg.progress else True,  # None: off when stderr is not a terminal
                   dynamic_ncols=True, initial=done, total=n_batches)
        self.optimizer.zero_grad(set_to_none=True)
        # each batch's mean loss counts by its share of the samples of its accumulation group, so k batches
        # give the gradient of one batch k times larger, the smaller last batch and partial group included
        group_target = accumulation * int(getattr(loader, "batch_size", None) or 0)
        group_samples = 0
        for i, batch in enumerate(bar, start=done):
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
                    self._validate_at_step(epoch)
                    self._after_step(epoch, i + 1, n_samples, sums, earlier + time.perf_counter() - start)
            now = time.perf_counter()
            if bar.disable and now - last_line >= cfg.progress_interval:  # e.g. output to a file on a cluster
                self._log_progress(epoch, i + 1, n_batches, done, n_samples - resumed_samples, sums, n_samples,
                                   now - start)
                last_line = now
            elif not bar.disable and (i % 10 == 0 or i + 1 == n_batches):
                rate = n_samples / max(earlier + now - start, 1e-9)
                bar.set_postfix(loss=f"{(sums['total'] / n_samples).item():.4f}", samples_s=f"{rate:.1f}")
        elapsed = earlier + time.perf_counter() - start
        if self.distributed is not None:  # losses and throughput of the whole run, not of this rank
            n_samples, sums = self._global_sums(n_samples, sums)
        metrics = {f"train_{self._loss_name(k)}": (v / max(n_samples, 1)).item() for k, v in sums.items()}
        metrics["train_samples_per_s"] = n_samples / max(elapsed, 1e-9)
        return metrics

    def _validate_at_step(self, epoch: int) -> None:
        """Every ``val_every_steps`` optimizer steps: score the step-validation loader and log it. The random
        streams and the training mode are left as they were, so a run validated mid-epoch trains the same."""
        every = self.config.val_every_steps
        if not every or self.global_step % every or self._step_val_loader is None:
            return
        state = rng_state()
        result = self.evaluate(self._step_val_loader)
        set_rng_state(state)
        self.forward_model.train()
        row = {"epoch": epoch, "step": self.global_step, **result.metrics}
        self.step_history.append(row)
        self.diagnostics.log_step_validation(row, self.global_step)

    def _after_step(self, epoch: int, batches: int, n_samples: int, sums: dict[str, Any], elapsed: float) -> None:
        """Mid-epoch, after an optimizer step: the periodic step checkpoint, and the stop a signal asked for."""
        every = self.config.checkpoint_every_steps
        periodic = bool(every) and self.global_step % every == 0
        stop = self._stop_requested()
        if not (periodic or stop):
            return
        path = None
        if self.save_checkpoint is not None:
            n_total, totals = (n_samples, sums) if self.distributed is None else self._global_sums(n_samples, sums)
            if self.distributed is not None and self.distributed.rank != 0:
                n_total, totals = 0, {k: torch.zeros_like(v) for k, v in totals.items()}  # rank 0 carries them
            progress = {"epoch": epoch, "batches": batches, "n_samples": n_total, "elapsed": elapsed,
                        "sums": {k: float(v) for k, v in totals.items()}}
            path = self.save_checkpoint("last", self.snapshot(epoch - 1, progress))
        where = f"epoch {epoch + 1}, batch {batches}, step {self.global_step}"
        if stop:
            raise RunInterrupted(stop, None if path is None else str(path), where)
        log.info("step checkpoint at %s", where)

    def _stop_requested(self, every_step: bool = False) -> int | None:
        """The signal asking this run to stop, agreed by every rank (under DDP/FSDP checked every
        STOP_SYNC_STEPS optimizer steps, or now with ``every_step``)."""
        if self.distributed is None:
            return self._stop.requested
        if not every_step and self.global_step % STOP_SYNC_STEPS:
            return None
        return self.strategy.agree_max(self._stop.requested or 0, self.device) or None

    def _log_progress(self, epoch: int, batch: int, n_batches: int, first: int, new_samples: int,
                      sums: dict[str, Any], n_samples: int, elapsed: float) -> None:
        """One line for logs read from a file: position, throughput since the (re)start, mean loss, epoch ETA."""
        remaining = (n_batches - batch) * elapsed / max(batch - first, 1)
        log.info("epoch %d/%d  batch %d/%d  step %d  %.1f samples/s  loss %.4g  epoch ETA %s", epoch + 1,
                 self.config.epochs, batch, n_batches, self.global_step, new_samples / max(elapsed, 1e-9),
                 float(sums["total"]) / max(n_samples, 1), _duration(remaining))

    def _parameters_with_gradients(self, batch) -> set[nn.Parameter]:
        """Parameters that one forward and backward of the bare model on ``batch`` reach; weights, buffers,
        gradients and random streams are left as they were."""
        self.model.train()
        with self._state_restored():
            with self._autocast():
                losses = self._training_losses(self._forward(self.model, batch), batch)
            losses["total"].backward()
            return {p for p in self.model.parameters() if p.grad is not None}

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

    def _global_sums(self, n_samples: int, sums: dict[str, Any]) -> tuple[int, dict[str, torch.Tensor]]:
        """Sample count and per-loss sums added over all ranks (every rank calls it, keys in the same order)."""
        total = self.strategy.reduce_sum(torch.tensor(float(n_samples), device=self.device))
        return int(total.item()), {k: self.strategy.reduce_sum(torch.as_tensor(v, device=self.device))
                                   for k, v in sorted(sums.items())}

    @staticmethod
    def _loss_name(key: str) -> str:
        return "loss" if key == "total" else f"{key}_loss"

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
        if self.ema is not None:
            self.ema.update_parameters(unwrap_model(self.model))
        self.global_step += 1
        if self.scheduler.interval == "step":
            self.scheduler.step()

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
        sums: dict[str, torch.Tensor] = {}
        n_samples = 0
        distances = DistanceMetrics()
        regression = RegressionMetrics() if self.decoder is not None and not self.decoder.classifier else None
        classification = ClassificationMetrics(self.decoder.n_classes) if (
            self.decoder is not None and self.decoder.classifier) else None
        nuc_correct = torch.zeros((), device=self.device)
        nuc_total = torch.zeros((), device=self.device)
        rows: list[Any] = []
        gates: list[torch.Tensor] = []
        cross_weights: list[torch.Tensor] = []
        # targets and distances come from clean input (as `aam predict` sees it); nucleotides are masked as
        # in training, with a fixed seed
        generator = torch.Generator(device=self.device).manual_seed(0)
        for batch in loader:
            batch = batch.to(self.device, non_blocking=True)
            with self._autocast():
                outputs = self._forward(model, batch, generator=generator)
                losses = self.loss_fn(outputs, batch)
            size = len(batch)
            n_samples += size
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + value.detach().float() * size
            if "distances" in outputs and batch.distances is not None and batch.distances.dim() == 2:
                distances.update(outputs["distances"].float(), batch.distances.float())
            if "nucleotide_logits" in outputs:
                mask = outputs["nucleotide_mask"]
                predicted = outputs["nucleotide_logits"].argmax(-1)
                nuc_correct += ((predicted == outputs["nucleotide_targets"]) & mask).sum()
                nuc_total += mask.sum()
            if "gate" in outputs:
                gates.append(outputs["gate"].float().mean(dim=tuple(range(1, outputs["gate"].dim()))).cpu())
            if "cross_attention_weights" in outputs:
                cross_weights.append(outputs["cross_attention_weights"].float().cpu())
            if self.decoder is not None and batch.targets is not None:
                rows.append(self.decoder.decode_batch(outputs["prediction"].float(), batch))
        if self.distributed is not None:  # every rank ends with the metrics of the whole validation set
            n_samples, sums = self._global_sums(n_samples, sums)
            nuc_correct, nuc_total = self.strategy.reduce_sum(nuc_correct), self.strategy.reduce_sum(nuc_total)
            states = self.strategy.all_gather_objects({k: None if v is None else v.cpu()
                                                       for k, v in distances.state().items()})
            distances.reset()
            for state in states:
                distances.merge(state)
            rows = [frame for part in self.strategy.all_gather_objects(rows) for frame in part]
        metrics = {f"val_{self._loss_name(k)}": (v / max(n_samples, 1)).item() for k, v in sums.items()}
        result = EvalResult(metrics)
        if distances.n_pairs > 0:
            d = distances.compute()
            metrics.update({"val_distance_mae": d["mae"], "val_distance_r2": d["r2"]})
            result.distance_pairs = distances.pairs()
        if nuc_total.item() > 0:
            metrics["val_nucleotide_accuracy"] = (nuc_correct / nuc_total).item()
        if gates:
            result.diagnostics["gate"] = torch.cat(gates).numpy()
            metrics["val_gmu_gate_mean"] = float(result.diagnostics["gate"].mean())
        if cross_weights:
            result.diagnostics["cross_attention"] = _mean_over_samples(cross_weights)
        if rows:
            result.predictions = self.decoder.concat(rows)
            frame = result.predictions
            if regression is not None:
                regression.update(torch.tensor(frame["prediction"].to_numpy(np.float64)),
                                  torch.tensor(frame["actual"].to_numpy(np.float64)))
                metrics.update({f"val_{k}": v for k, v in regression.compute().items() if k not in ("n", "mse")})
            else:
                probs = torch.tensor(frame[self.decoder.probability_columns].to_numpy(np.float64))
                actual = torch.tensor(frame["actual_index"].to_numpy(np.int64))
                classification.update(probs.clamp_min(1e-12).log(), actual)
                computed = classification.compute()
                result.confusion = computed.pop("confusion_matrix", None)
                metrics.update({f"val_{k}": v for k, v in computed.items() if k != "n"})
        return result


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


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def _mean_over_samples(weights: list[torch.Tensor]) -> np.ndarray:
    """Average [B, S, K] attention maps over samples, padding shorter S with NaN-free zeros: -> [S_max, K]."""
    s_max = max(w.shape[1] for w in weights)
    total = torch.zeros(s_max, weights[0].shape[-1])
    count = torch.zeros(s_max, 1)
    for w in weights:
        total[: w.shape[1]] += w.sum(0)
        count[: w.shape[1]] += w.shape[0]
    return (total / count.clamp_min(1)).numpy()
