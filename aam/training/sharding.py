"""FSDP2 (``--fsdp``): FULL_SHARD sharding of an AAM model, and its evaluation, gradients and state dicts.

Each transformer block is one FSDP unit, resharded after its forward (FULL_SHARD: outside the block being
computed, a rank holds 1/W of its weights); the root unit holds the rest (embeddings, norms, pooling, heads)
and stays gathered from its forward to its backward. Scalar parameters (the distance head's rate) cannot be
sharded: they stay replicated outside FSDP and their gradients are averaged over ranks here, as DDP would.

The UniFrac loss calls the distance head again after the root forward, on every rank's gathered [G, D]
embeddings (:func:`aam.training.distributed.gather_with_grad`); that head holds only the replicated rate, so
no unsharding is involved. FSDP's reduce-scatter averages gradients over ranks like DDP, so the same
``grad_scale=W`` gives the single-process gradient of the global batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor
from torch.optim import Optimizer

from aam.models.layers import TransformerBlock

BLOCK_RESHARD_AFTER_FORWARD = True  # FULL_SHARD
ROOT_RESHARD_AFTER_FORWARD = False  # the root's weights are needed again at once in backward
FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)  # gathered on rank 0, in CPU memory


def mixed_precision_policy(mixed_precision: str | None) -> MixedPrecisionPolicy:
    """FSDP2's policy for ``--mixed-precision``: with bf16, weights are gathered and computed in bf16 (half the
    all-gather traffic and memory) while gradients are reduced and kept in float32; fp16 and fp32 keep float32
    weights (fp16 runs under autocast with the gradient scaler, which needs float32 gradients)."""
    if mixed_precision == "bf16":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def shard_model(model: nn.Module, device: torch.device, mixed_precision: str | None = None) -> None:
    """Shard ``model`` in place over all ranks: one FSDP unit per transformer block, then the root, with the
    :func:`mixed_precision_policy` of ``mixed_precision``.

    Call before building the optimizer (parameters become DTensors) and after every rank holds the same
    weights (FSDP keeps each rank's own slice; it does not broadcast).
    """
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    policy = mixed_precision_policy(mixed_precision)
    for block in [m for m in model.modules() if isinstance(m, TransformerBlock)]:
        fully_shard(block, mesh=mesh, reshard_after_forward=BLOCK_RESHARD_AFTER_FORWARD, mp_policy=policy)
    scalars = {p for p in model.parameters() if p.ndim == 0}  # fully_shard cannot split a 0-d tensor
    fully_shard(model, mesh=mesh, reshard_after_forward=ROOT_RESHARD_AFTER_FORWARD, ignored_params=scalars or None,
                mp_policy=policy)
    # the pooled embeddings are a view (einsum); the warning is about in-place ops on outputs, which AAM never does
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor", category=UserWarning)


def _local(tensor: Tensor) -> Tensor:
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def average_replicated_grads(model: nn.Module) -> None:
    """Average over ranks the gradients of the parameters FSDP leaves replicated (FSDP reduces the others)."""
    world = dist.get_world_size()
    for parameter in model.parameters():
        if parameter.grad is not None and not isinstance(parameter.grad, DTensor):
            dist.all_reduce(parameter.grad)
            parameter.grad.div_(world)


def grad_norm(parameters: Iterable[nn.Parameter]) -> Tensor | None:
    """L2 norm of the gradients of ``parameters`` over the whole model: the squares of sharded gradients are
    summed over ranks, replicated ones counted once. A collective when any gradient is sharded; None without
    gradients."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return None
    sharded = [g.to_local().float().pow(2).sum() for g in grads if isinstance(g, DTensor)]
    replicated = [g.float().pow(2).sum() for g in grads if not isinstance(g, DTensor)]
    total = torch.zeros((), device=_local(grads[0]).device)
    if sharded:
        squares = torch.stack(sharded).sum()
        dist.all_reduce(squares)
        total = total + squares
    if replicated:
        total = total + torch.stack(replicated).sum()
    return total.sqrt()


def clip_grad_norm_(parameters: Iterable[nn.Parameter], max_norm: float) -> Tensor | None:
    """``torch.nn.utils.clip_grad_norm_`` for a mix of sharded and replicated gradients; returns the norm."""
    parameters = [p for p in parameters if p.grad is not None]
    norm = grad_norm(parameters)
    if norm is not None:
        scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)
        torch._foreach_mul_([_local(p.grad) for p in parameters], scale)
    return norm


@contextmanager
def gathered_parameters(model: nn.Module) -> Iterator[None]:
    """Every FSDP unit of ``model`` unsharded during the block, then resharded.

    Forwards inside run no collective, so ranks may run different numbers of them (evaluating unequal
    validation shards); each rank holds the full weights meanwhile.
    """
    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for unit in units:
        unit.unshard()
        unit.set_reshard_after_forward(False, recurse=False)
    try:
        yield
    finally:
        for unit in units:
            unit.set_reshard_after_forward(ROOT_RESHARD_AFTER_FORWARD if unit is model else
                                           BLOCK_RESHARD_AFTER_FORWARD, recurse=False)
            unit.reshard()


def full_state(model: nn.Module, optimizer: Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Full model and optimizer state dicts, gathered on rank 0 (empty elsewhere); a collective."""
    return get_model_state_dict(model, options=FULL), get_optimizer_state_dict(model, optimizer, options=FULL)


def sharded_state(model: nn.Module, optimizer: Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """This rank's shards of the model and optimizer state dicts (DTensors; replicated tensors as they are)."""
    return get_model_state_dict(model), get_optimizer_state_dict(model, optimizer)


def _keyed_by_name(state: dict[str, Any]) -> bool:
    return any(isinstance(p, str) for group in state["param_groups"] for p in group["params"])


def named_optimizer_state(model: nn.Module, optimizer: Optimizer, state: dict[str, Any]) -> dict[str, Any]:
    """An ``optimizer.state_dict()`` (parameters numbered) keyed by parameter names, as
    ``get_optimizer_state_dict`` writes it; ``optimizer`` must be built like the one that was saved."""
    if _keyed_by_name(state):
        return state
    names = {id(p): name for name, p in model.named_parameters()}
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    return {"state": {order[i]: value for i, value in state["state"].items()},
            "param_groups": [{**group, "params": [order[i] for i in group["params"]]}
                             for group in state["param_groups"]]}


def load_optimizer_state(model: nn.Module, optimizer: Optimizer, state: dict[str, Any]) -> None:
    """Load a full optimizer state (numbered or named parameters) into ``optimizer``, sharded or not."""
    if isinstance(model, FSDPModule) or _keyed_by_name(state):
        named = named_optimizer_state(model, optimizer, state)
        # not strict: parameters that never had a gradient (heads unused in this configuration) have no state;
        # the loader gives them an empty one, which is dropped again as optimizer.load_state_dict would
        set_optimizer_state_dict(model, optimizer, named, options=StateDictOptions(full_state_dict=True, strict=False))
        for name, parameter in model.named_parameters():
            if name not in named["state"]:
                optimizer.state.pop(parameter, None)
    else:
        optimizer.load_state_dict(state)
