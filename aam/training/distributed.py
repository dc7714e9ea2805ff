"""Multi-process training through PyTorch's own engine (torchrun + DDP or FSDP2).

One process per device, launched by ``torchrun``; the backend follows the device (nccl on CUDA/ROCm, gloo on
CPU). The strategy is ``ddp`` (replicated weights, ``--distributed``) or ``fsdp`` (sharded weights,
``--fsdp``, see :mod:`aam.training.sharding`). Every rank builds the same split from the same seed (rank 0's seed is broadcast), sees its own shard of
each batch, and only rank 0 writes files.

The UniFrac objective needs every pair of the *global* batch: each rank gathers all ranks' sample
embeddings, keeping the autograd graph for its own slice (:func:`gather_with_grad`), and computes the full
[G, G] loss. DDP then averages parameter gradients over ranks, so the gradient reaching the local slice is
scaled by the world size: the result is exactly the single-process gradient of the global batch.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from itertools import chain
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, Sampler

from aam.errors import AamError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: rank, world size, its device and the strategy (``ddp`` or ``fsdp``)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    strategy: str = "ddp"

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 or dist.is_initialized()

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device: torch.device, strategy: str = "ddp") -> DistributedContext:
    """Join the process group torchrun set up; nccl on CUDA, gloo on CPU."""
    flag = "--fsdp" if strategy == "fsdp" else "--distributed"
    if not launched_by_torchrun():
        raise AamError("needs a torchrun launch", source=flag,
                       hint=f"run: torchrun --nproc_per_node N -m aam train ... {flag}")
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistributedContext(rank, world, local, device, strategy)


GLOO_DRAIN_S = 0.05


def shutdown() -> None:
    """Leave the process group once every rank is here and the group's worker threads are idle.

    Gloo's worker threads release a finished collective's tensors themselves, which needs the GIL; the group's
    destructor (when the last reference goes, e.g. with a DDP wrapper) joins those threads while holding it.
    A collective still being released at that moment deadlocks the process (seen with torch 2.13 on CPU). The
    barrier waits for every earlier collective and the short sleep, with the GIL released, lets the threads
    finish releasing them.
    """
    if dist.is_initialized():
        dist.barrier()
        time.sleep(GLOO_DRAIN_S)
        dist.destroy_process_group()


def broadcast_object(value: Any, src: int = 0) -> Any:
    """Rank ``src``'s value on every rank (identity when not distributed)."""
    if not dist.is_initialized():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def all_gather_objects(value: Any) -> list[Any]:
    """Every rank's value, in rank order (a one-element list when not distributed)."""
    if not dist.is_initialized():
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def check_identical(value: Any, what: str) -> None:
    """Raise if ``value`` differs between ranks (e.g. the train/validation split); log once when it agrees."""
    if not dist.is_initialized():
        return
    digest = hashlib.sha256(repr(value).encode()).hexdigest()
    digests = all_gather_objects(digest)
    if len(set(digests)) != 1:
        raise RuntimeError(f"{what} differs between ranks: {digests}")
    log.info("%s is identical on all %d ranks (%s)", what, len(digests), digest[:12])


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; multiplies the incoming gradient by ``scale`` in backward."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None


def gather_with_grad(local: torch.Tensor, grad_scale: float = 1.0, same_size: bool = False) -> torch.Tensor:
    """Concatenate every rank's ``local`` [b_r, ...] along dim 0; gradients flow to this rank's slice only.

    Ranks may hold different batch sizes, which costs an exchange of sizes and a host synchronisation;
    ``same_size`` (every rank's b_r is equal, as with DistributedSampler's padded shards) skips both.
    ``grad_scale`` multiplies the gradient reaching ``local``: with the world size, a loss computed
    identically on every rank over the gathered tensor gives, after DDP's averaging, exactly the
    single-process gradient (parameters used after the gather are not scaled).
    """
    if not dist.is_initialized():
        return local
    if same_size:
        buffers = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(buffers, local.detach().contiguous())
        buffers[dist.get_rank()] = _ScaleGrad.apply(local, grad_scale) if grad_scale != 1.0 else local
        return torch.cat(buffers)
    sizes = [torch.zeros(1, dtype=torch.long, device=local.device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([local.shape[0]], device=local.device))
    largest = int(max(s.item() for s in sizes))
    padded = torch.zeros((largest, *local.shape[1:]), dtype=local.dtype, device=local.device)
    padded[: local.shape[0]] = local.detach()
    buffers = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(buffers, padded)
    parts = [buffer[: int(size.item())] for buffer, size in zip(buffers, sizes)]
    parts[dist.get_rank()] = _ScaleGrad.apply(local, grad_scale) if grad_scale != 1.0 else local
    return torch.cat(parts)


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank (what DDP does when it wraps a model)."""
    if dist.is_initialized():
        for tensor in chain(module.parameters(), module.buffers()):
            dist.broadcast(tensor.data, src=src)


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (e.g. normalisation running statistics) to every rank."""
    if dist.is_initialized():
        for buffer in module.buffers():
            dist.broadcast(buffer.data, src=src)


def reduce_sum(value: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


class ShardSampler(Sampler[int]):
    """Rank r gets items r, r + W, r + 2W, ... (validation: every sample exactly once over all ranks)."""

    def __init__(self, n: int, rank: int, world_size: int):
        self.indices = list(range(rank, n, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class ResumableDistributedSampler(DistributedSampler):
    """``DistributedSampler`` whose next iteration can leave out this rank's first items (a mid-epoch resume)."""

    _skip = 0

    def skip(self, n_items: int) -> None:
        self._skip = int(n_items)

    def __iter__(self):
        skip, self._skip = self._skip, 0
        return iter(list(super().__iter__())[skip:])


class DeviceDistanceLookup:
    """Distance targets of a global batch looked up on the device, without a host round trip.

    Wraps a lookup with a ``matrix`` ([N, N] or [N]) that fits within ``max_bytes``: the matrix is copied to
    ``device`` once and indexed there by the gathered (device) sample indices. ``None`` from
    :meth:`maybe` means the matrix is too large (or absent) and the caller keeps the host lookup.
    """

    def __init__(self, matrix: torch.Tensor):
        self.matrix = matrix

    @classmethod
    def maybe(cls, lookup: Any, device: torch.device, max_bytes: int = 2**30) -> DeviceDistanceLookup | None:
        matrix = getattr(lookup, "matrix", None)
        if matrix is None or matrix.nbytes > max_bytes:
            return None
        return cls(torch.as_tensor(matrix).to(device))

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        if self.matrix.dim() == 1:
            return self.matrix[rows]
        return self.matrix.index_select(0, rows).index_select(1, rows)

