"""Where the model runs and how processes cooperate: one device, DataParallel, DDP or FSDP.

The Trainer's loop is the same for all four; it asks its :class:`Strategy` to prepare and wrap the model, to
keep gradients local inside an accumulation group, to prepare and clip gradients before a step, to add
numbers over ranks, to agree on a stop, to collect weights and optimizer state for a checkpoint, and to hold
the weights evaluation needs. The single-device strategy does each of these trivially; the others hold
everything their engine needs (:mod:`aam.training.distributed`, :mod:`aam.training.sharding`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.optim import Optimizer

from aam.outputs.checkpoint import strip_wrapper_prefixes
from aam.training import sharding
from aam.training.data_parallel import BatchDataParallel
from aam.training.distributed import (
    DistributedContext,
    all_gather_objects,
    broadcast_buffers,
    broadcast_module,
    reduce_sum,
)

log = logging.getLogger(__name__)

Compile = Callable[[nn.Module], nn.Module]


class Strategy:
    """One process, one device (the base for the others)."""

    name = "single"
    distributed: DistributedContext | None = None
    supports_ema = True
    supports_compile = True
    sharded_checkpoint = False

    @property
    def world_size(self) -> int:
        return 1 if self.distributed is None else self.distributed.world_size

    def setup(self, model: nn.Module, device: torch.device, mixed_precision: str | None) -> None:
        """Make ``model`` (already on ``device``) ready before the optimizer is built."""

    def wrap(self, model: nn.Module, compiled: nn.Module) -> nn.Module:
        """The module training steps call, given the bare ``model`` and its ``compiled`` form (the model
        itself without --compile-model)."""
        return compiled

    @property
    def pending(self) -> bool:
        """Whether the wrapper waits for a first batch (:meth:`wrap_with_batch`)."""
        return False

    def wrap_with_batch(self, model: nn.Module, used: set[nn.Parameter], device: torch.device,
                        compile_fn: Compile | None) -> nn.Module:
        raise NotImplementedError

    def no_sync(self, skip: bool) -> contextlib.AbstractContextManager:
        """Around a backward inside an accumulation group: no gradient exchange yet."""
        return contextlib.nullcontext()

    def before_optimizer_step(self, model: nn.Module) -> None:
        """Finish gradients the engine does not reduce itself."""

    def clip_grad_norm_(self, parameters: list[nn.Parameter], max_norm: float) -> None:
        torch.nn.utils.clip_grad_norm_(parameters, max_norm)

    def reduce_sum(self, value: torch.Tensor) -> torch.Tensor:
        return value

    def all_gather_objects(self, value: Any) -> list[Any]:
        return [value]

    def agree_max(self, value: int, device: torch.device) -> int:
        """The largest ``value`` over ranks (a collective and one host synchronisation when distributed)."""
        return value

    def states(self, model: nn.Module, scored: nn.Module, optimizer: Optimizer) -> tuple[dict, dict]:
        """Weights (of ``scored``: the EMA or the model) and optimizer state for a checkpoint."""
        return strip_wrapper_prefixes(scored.state_dict()), optimizer.state_dict()

    def evaluation(self, model: nn.Module, ema: nn.Module | None) -> contextlib.AbstractContextManager:
        """Around evaluation: every rank scores with the weights and statistics a checkpoint would hold."""
        return contextlib.nullcontext()


class DataParallelStrategy(Strategy):
    """One process over all visible GPUs (:class:`~aam.training.data_parallel.BatchDataParallel`)."""

    name = "data_parallel"
    supports_compile = False  # replicas would all run the first GPU's compiled code

    def wrap(self, model: nn.Module, compiled: nn.Module) -> nn.Module:
        return BatchDataParallel(model)


class DDPStrategy(Strategy):
    """One process per device (torchrun): replicated weights, gradients averaged by DDP."""

    name = "ddp"

    def __init__(self, distributed: DistributedContext):
        self.distributed = distributed
        self.ddp: nn.parallel.DistributedDataParallel | None = None
        self._pending = True

    def setup(self, model: nn.Module, device: torch.device, mixed_precision: str | None) -> None:
        broadcast_module(model)  # e.g. calibration ran on each rank's own batches

    def wrap(self, model: nn.Module, compiled: nn.Module) -> nn.Module:
        return model  # until the first batch: see wrap_with_batch

    @property
    def pending(self) -> bool:
        return self._pending

    def wrap_with_batch(self, model: nn.Module, used: set[nn.Parameter], device: torch.device,
                        compile_fn: Compile | None) -> nn.Module:
        """DDP around the bare model (compiled as a whole, so the compiler sees its gradient buckets).
        ``find_unused_parameters`` costs a graph traversal every step: on only when a trainable parameter
        is not in ``used`` (those a probe step reached) on some rank."""
        self._pending = False
        unused = self.agree_max(int(any(p.requires_grad and p not in used for p in model.parameters())), device)
        self.ddp = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=bool(unused))
        return compile_fn(self.ddp) if compile_fn is not None else self.ddp

    def no_sync(self, skip: bool) -> contextlib.AbstractContextManager:
        return self.ddp.no_sync() if skip and self.ddp is not None else contextlib.nullcontext()

    def reduce_sum(self, value: torch.Tensor) -> torch.Tensor:
        return reduce_sum(value)

    def all_gather_objects(self, value: Any) -> list[Any]:
        return all_gather_objects(value)

    def agree_max(self, value: int, device: torch.device) -> int:
        flag = torch.tensor(float(value), device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())

    def evaluation(self, model: nn.Module, ema: nn.Module | None) -> contextlib.AbstractContextManager:
        broadcast_buffers(model)
        if ema is not None:
            broadcast_buffers(ema)
        return contextlib.nullcontext()


class FSDPStrategy(DDPStrategy):
    """FSDP2 FULL_SHARD (:mod:`aam.training.sharding`): weights, gradients and optimizer state sharded."""

    name = "fsdp"
    supports_ema = False

    def __init__(self, distributed: DistributedContext, sharded_checkpoint: bool = False):
        super().__init__(distributed)
        self.sharded_checkpoint = sharded_checkpoint
        self._pending = False

    def setup(self, model: nn.Module, device: torch.device, mixed_precision: str | None) -> None:
        broadcast_module(model)  # FSDP keeps each rank's own slice; it does not broadcast
        sharding.shard_model(model, device, mixed_precision)
        self.model = model

    @contextlib.contextmanager
    def no_sync(self, skip: bool):
        """Inside an accumulation group, gradients stay unsharded and unreduced until its last backward."""
        if not skip:
            yield
            return
        self.model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            self.model.set_requires_gradient_sync(True)

    def wrap(self, model: nn.Module, compiled: nn.Module) -> nn.Module:
        return compiled

    def before_optimizer_step(self, model: nn.Module) -> None:
        sharding.average_replicated_grads(model)

    def clip_grad_norm_(self, parameters: list[nn.Parameter], max_norm: float) -> None:
        sharding.clip_grad_norm_(parameters, max_norm)

    def states(self, model: nn.Module, scored: nn.Module, optimizer: Optimizer) -> tuple[dict, dict]:
        if self.sharded_checkpoint:
            return sharding.sharded_state(model, optimizer)
        return sharding.full_state(model, optimizer)

    def evaluation(self, model: nn.Module, ema: nn.Module | None) -> contextlib.AbstractContextManager:
        broadcast_buffers(model)
        # gather the weights once, so ranks with fewer validation batches than others need no collective
        return sharding.gathered_parameters(model)


def build_strategy(distributed: DistributedContext | None, data_parallel: bool = False,
                   sharded_checkpoint: bool = False) -> Strategy:
    """The strategy of a run: FSDP or DDP under torchrun, DataParallel, or one device."""
    if distributed is not None and distributed.enabled:
        if distributed.strategy == "fsdp":
            return FSDPStrategy(distributed, sharded_checkpoint)
        return DDPStrategy(distributed)
    return DataParallelStrategy() if data_parallel else Strategy()
