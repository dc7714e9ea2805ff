"""Optimizers with named parameter groups, and the learning-rate range test.

:func:`build_optimizer` splits trainable parameters into up to four groups, each named by a ``'name'`` key:
``decay`` and ``no_decay`` at ``lr``, and ``categorical_decay`` / ``categorical_no_decay`` at ``categorical_lr``
for the categorical modules (fusion, categorical embeddings, output scaling) when a separate rate is given.
Biases, norm weights and any other 1-D parameter get no weight decay; frozen parameters are left out.

:func:`find_lr` sweeps the learning rate exponentially, records the smoothed loss and suggests the rate of
steepest descent; the model, optimizer and RNG states are restored afterwards.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from aam.models.build import unwrap_model
from aam.training.registries import OPTIMIZERS

__all__ = ["OPTIMIZERS", "LRRangeTest", "build_optimizer", "find_lr", "param_group_lrs", "parameter_groups"]

adamw, adam = torch.optim.AdamW, torch.optim.Adam
sgd_momentum = partial(torch.optim.SGD, momentum=0.9)

def _no_decay(name: str, param: Tensor) -> bool:
    """Biases, normalisation parameters and any other vector or scalar are not weight-decayed."""
    lowered = name.lower()
    return param.ndim <= 1 or "norm" in lowered or "bias" in lowered


def categorical_parameter_ids(model: nn.Module) -> set[int]:
    """The parameters ``model`` declares as its categorical modules (``categorical_parameters()``: none for an
    encoder)."""
    return {id(p) for p in unwrap_model(model).categorical_parameters()}


def parameter_groups(model: nn.Module, lr: float, weight_decay: float,
                     categorical_lr: float | None = None) -> list[dict[str, Any]]:
    """Named parameter groups of the trainable parameters of ``model`` (empty groups omitted)."""
    categorical_ids = categorical_parameter_ids(model) if categorical_lr is not None else set()
    groups: dict[str, list[Tensor]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        categorical = id(param) in categorical_ids
        key = ("categorical_" if categorical else "") + ("no_decay" if _no_decay(name, param) else "decay")
        groups.setdefault(key, []).append(param)
    order = ("decay", "no_decay", "categorical_decay", "categorical_no_decay")
    return [
        {
            "name": key,
            "params": groups[key],
            "lr": categorical_lr if key.startswith("categorical") else lr,
            "weight_decay": 0.0 if key.endswith("no_decay") else weight_decay,
        }
        for key in order if key in groups
    ]


def build_optimizer(model: nn.Module, name: str = "adamw", lr: float = 1e-4, weight_decay: float = 0.01,
                    categorical_lr: float | None = None) -> Optimizer:
    """The ``--optimizer`` (adamw | adam | sgd with momentum 0.9) over named parameter groups.

    The model's ``categorical_parameters()`` train at ``categorical_lr`` when it is given.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")
    groups = parameter_groups(model, lr, weight_decay, categorical_lr)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return OPTIMIZERS[name](groups, lr=lr, weight_decay=weight_decay)


def param_group_lrs(optimizer: Optimizer) -> dict[str, float]:
    """Current learning rate of each parameter group by its ``name`` (``group<i>`` when unnamed)."""
    return {group.get("name", f"group{i}"): float(group["lr"]) for i, group in enumerate(optimizer.param_groups)}


class LRRangeTest(NamedTuple):
    """Result of :func:`find_lr`: the rates tried, their smoothed losses and the suggested rate (or None)."""

    lrs: list[float]
    losses: list[float]
    suggested_lr: float | None


def _suggest(lrs: list[float], losses: list[float]) -> float | None:
    """The rate at the steepest descent of the smoothed loss vs log10(lr), up to the loss minimum.

    The first tenth of the sweep is skipped: there the moving average has seen few batches and mostly follows
    batch-to-batch noise.
    """
    start, end = len(losses) // 10, int(np.argmin(losses)) + 1
    if end - start < 3:
        return None
    slopes = np.gradient(np.asarray(losses[start:end]), np.log10(np.asarray(lrs[start:end])))
    return float(lrs[start + int(np.argmin(slopes))])


def find_lr(model: nn.Module, loader_iter_fn: Callable[[], Iterator[Any]] | Iterable[Any],
            loss_fn: Callable[[Any], Tensor], optimizer: Optimizer, start_lr: float = 1e-7, end_lr: float = 1.0,
            num_iters: int = 100, smoothing: float = 0.05, diverge_factor: float = 5.0) -> LRRangeTest:
    """Learning-rate range test: train for up to ``num_iters`` steps with an exponentially growing rate.

    Args:
        model: the model being trained (put in train mode during the test).
        loader_iter_fn: returns a fresh iterator over batches (restarted when exhausted); an iterable works too.
        loss_fn: ``step_fn(batch) -> scalar loss tensor`` doing the forward pass and the loss, so the test
            knows nothing of the batch format.
        optimizer: the optimizer to sweep; all groups keep their ratio to the largest group LR.
        start_lr, end_lr: the sweep's first and last rates.
        smoothing: weight of the newest loss in the bias-corrected exponential moving average.
        diverge_factor: stop once the smoothed loss exceeds this multiple of the best one (or is not finite).

    Returns:
        :class:`LRRangeTest`; the model weights, optimizer state, training mode and RNG state are as before.
    """
    saved_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
    saved_optimizer = copy.deepcopy(optimizer.state_dict())
    was_training = model.training
    reference = max(group["lr"] for group in optimizer.param_groups) or 1.0
    ratios = [group["lr"] / reference for group in optimizer.param_groups]
    multiplier = (end_lr / start_lr) ** (1.0 / max(1, num_iters - 1))
    make_iter = loader_iter_fn if callable(loader_iter_fn) else (lambda: iter(loader_iter_fn))
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    lrs: list[float] = []
    losses: list[float] = []
    try:
        with torch.random.fork_rng(devices=devices):
            model.train()
            batches = make_iter()
            average, best = 0.0, math.inf
            for i in range(num_iters):
                try:
                    batch = next(batches)
                except StopIteration:
                    batches = make_iter()
                    batch = next(batches)
                lr = start_lr * multiplier ** i
                for group, ratio in zip(optimizer.param_groups, ratios, strict=True):
                    group["lr"] = lr * ratio
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(batch)
                loss.backward()
                optimizer.step()
                value = float(loss.detach())  # the range test is not the training hot path
                average = smoothing * value + (1.0 - smoothing) * average
                smoothed = average / (1.0 - (1.0 - smoothing) ** (i + 1))
                if not math.isfinite(smoothed) or (i > 0 and smoothed > diverge_factor * best):
                    break
                best = min(best, smoothed)
                lrs.append(lr)
                losses.append(smoothed)
    finally:
        model.load_state_dict(saved_model)
        optimizer.load_state_dict(saved_optimizer)
        optimizer.zero_grad(set_to_none=True)
        model.train(was_training)
    return LRRangeTest(lrs, losses, _suggest(lrs, losses) if lrs else None)
