"""``--auto-batch-size``: the largest batch whose training step fits in a fraction of one GPU's memory.

Each candidate size is measured with the real training step (forward, every loss, backward) on the training
samples with the most ASVs, so the probe sees the widest batch the loader can produce, with the counts,
categoricals and UniFrac targets the model really gets. The optimizer's state, allocated at the first step
(which the probe does not take), is added to the measured peak. Sizes are searched by doubling from 2 and then
bisecting, over multiples of 2 up to 256 and the number of training samples.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

MIB = 2**20


def largest_fitting(fits: Callable[[int], bool], *, low: int = 2, high: int = 256, multiple: int = 2) -> int | None:
    """The largest multiple of ``multiple`` in [``low``, ``high``] for which ``fits`` holds (None if ``low`` fails).

    ``fits`` is assumed monotone (a batch that fits stays fitting when smaller): sizes double from ``low`` until
    one fails, then the gap is bisected, so ~2 log2(high / low) sizes are tried.
    """
    low = max(multiple, -(-low // multiple) * multiple)
    high = high // multiple * multiple
    if high < low or not fits(low):
        return None
    good, bad = low, None
    while bad is None:  # doubling
        size = min(good * 2, high)
        if size == good:
            return good
        if fits(size):
            good = size
        else:
            bad = size
    while bad - good > multiple:  # bisection
        size = (good + bad) // 2 // multiple * multiple
        if size <= good:
            break
        if fits(size):
            good = size
        else:
            bad = size
    return good


def widest_samples(asvs_per_sample: np.ndarray, size: int) -> np.ndarray:
    """Dataset positions of the ``size`` samples with the most ASVs (repeating them if there are fewer)."""
    order = np.argsort(-np.asarray(asvs_per_sample), kind="stable")
    return np.resize(order, size)


def optimizer_state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Memory the optimizer's state will take at its first step (Adam(W): 2 tensors per trainable parameter)."""
    per_param = 2 if isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW) else 1
    return per_param * sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


def cuda_peak_bytes(device: torch.device) -> Callable[[Callable[[], None]], int | None]:
    """``measure(step)``: run ``step`` and return the peak CUDA memory it allocated, or None when it ran out."""
    def measure(step: Callable[[], None]) -> int | None:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        try:
            step()
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            return None
        peak = torch.cuda.max_memory_allocated(device)
        torch.cuda.empty_cache()
        return peak
    return measure


def find_batch_size(trainer: Any, dataset: Any, collate: Callable[[list[dict]], Any], *,
                    max_memory_fraction: float, high: int = 256, multiple: int = 2,
                    measure: Callable[[Callable[[], None]], int | None] | None = None,
                    capacity_bytes: int | None = None) -> int | None:
    """The largest batch of ``dataset`` whose training step in ``trainer`` fits ``max_memory_fraction`` of the GPU.

    Args:
        trainer: a :class:`~aam.training.trainer.Trainer` (its ``probe_step`` leaves the model untouched).
        dataset: the training :class:`~aam.data.dataset.SampleDataset`.
        collate: the training loader's ``collate_fn``.
        max_memory_fraction: share of the device's memory the step (plus optimizer state) may use.
        measure, capacity_bytes: peak-memory measurement and device size; default: CUDA's, for the trainer's
            device (injectable, so the search is testable without a GPU).

    Returns:
        The batch size, or None when even ``multiple`` samples do not fit.
    """
    device = trainer.device
    if measure is None:
        measure = cuda_peak_bytes(device)
    if capacity_bytes is None:
        capacity_bytes = torch.cuda.get_device_properties(device).total_memory
    budget = max_memory_fraction * capacity_bytes
    state_bytes = optimizer_state_bytes(trainer.model, trainer.optimizer)
    widths = dataset.data.asvs_per_sample[dataset.indices]

    def fits(size: int) -> bool:
        batch = collate([dataset[int(i)] for i in widest_samples(widths, size)])
        peak = measure(lambda: trainer.probe_step(batch))
        ok = peak is not None and peak + state_bytes <= budget
        shown = "out of memory" if peak is None else f"{(peak + state_bytes) / MIB:.0f} MiB"
        log.info("auto batch size: %d samples -> %s of %.0f MiB allowed%s", size, shown, budget / MIB,
                 "" if ok else " (too large)")
        return ok

    return largest_fitting(fits, low=multiple, high=min(high, len(dataset)), multiple=multiple)
