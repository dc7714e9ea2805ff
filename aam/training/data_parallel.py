"""``--data-parallel``: one process over all visible GPUs, with a batch split that keeps the ASV index valid.

A :class:`~aam.data.dataset.Batch` holds each distinct ASV of the batch once (``tokens`` [U, L]) and points the
samples' slots at them (``asv_index`` [B, S]). ``nn.DataParallel`` would cut every tensor along dim 0 on its
own, separating ``tokens`` from the samples that index it. Here each replica gets a contiguous run of samples,
their rows of the per-sample tensors and only the distinct ASVs they use, re-indexed; S and L stay as they
are, so per-sample outputs [b, ...] and per-ASV outputs [u, L, ...] concatenate along dim 0. An ASV used by
samples on two replicas is encoded (and, for the nucleotide objective, masked and scored) on both.

The distance head is applied again to the gathered [B, D] embeddings, so pretraining sees every pair of the
batch, not one block per GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from aam.models.build import unwrap_model

PER_SAMPLE = ("asv_mask", "counts", "categoricals")  # [B, ...] inputs besides asv_index
PER_ASV = ("tokens", "asv_embeddings", "nucleotide_mask")  # [U, ...] inputs


class Share(NamedTuple):
    """One replica's part of a batch: its samples, the batch's ASV rows it uses, and its model inputs."""

    samples: slice
    asv_rows: Tensor  # [u] rows of the batch's tokens, ascending
    inputs: dict[str, Any]


def split_inputs(inputs: dict[str, Any], parts: int) -> list[Share]:
    """Split model inputs (``tokens``, ``asv_index``, ``asv_mask``, optional ``counts``, ``categoricals``,
    ``asv_embeddings``, ``nucleotide_mask``; anything else is passed to every share) into at most ``parts`` shares of consecutive
    samples, sized like ``torch.chunk``. Empty shares are left out."""
    asv_index, asv_mask = inputs["asv_index"], inputs["asv_mask"]
    n_samples, n_asvs = asv_index.shape[0], inputs["tokens"].shape[0]
    size = -(-n_samples // max(parts, 1))
    shares = []
    for start in range(0, n_samples, size):
        samples = slice(start, min(start + size, n_samples))
        index, mask = asv_index[samples], asv_mask[samples]
        rows = torch.unique(index[mask])  # [u], sorted
        renumber = torch.zeros(n_asvs, dtype=index.dtype, device=index.device)
        renumber[rows] = torch.arange(len(rows), dtype=index.dtype, device=index.device)
        share = dict(inputs, asv_index=renumber[index] * mask)  # padding slots point at row 0, as in a Batch
        for name in PER_SAMPLE:
            if inputs.get(name) is not None:
                share[name] = inputs[name][samples]
        for name in PER_ASV:
            if inputs.get(name) is not None:
                share[name] = inputs[name][rows]
        shares.append(Share(samples, rows, share))
    return shares


class BatchDataParallel(nn.DataParallel):
    """``nn.DataParallel`` for AAM models called like ``model(tokens, asv_index, asv_mask, **kwargs)``.

    Scatters per sample (:func:`split_inputs`), gathers outputs along dim 0, and recomputes ``distances``
    [B, B] from the gathered embeddings with the module's distance head.
    """

    ARGS = ("tokens", "asv_index", "asv_mask")

    def scatter(self, inputs: tuple, kwargs: dict[str, Any] | None, device_ids: Sequence[int]):
        values = {**dict(zip(self.ARGS, inputs)), **(kwargs or {})}
        generator = values.pop("generator", None)
        args, kwargs_per_replica = [], []
        for share, device in zip(split_inputs(values, len(device_ids)), device_ids):
            moved = {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v
                     for k, v in share.inputs.items()}
            if generator is not None:  # a generator belongs to one device: seed one per replica from it
                seed = int(torch.randint(2**62, (), generator=generator, device=generator.device))
                moved["generator"] = torch.Generator(f"cuda:{device}").manual_seed(seed)
            args.append(tuple(moved.pop(name) for name in self.ARGS))
            kwargs_per_replica.append(moved)
        return tuple(args), tuple(kwargs_per_replica)

    def gather(self, outputs: Sequence[dict[str, Tensor]], output_device: int) -> dict[str, Tensor]:
        per_replica = [{k: v for k, v in out.items() if k != "distances"} for out in outputs]
        gathered = super().gather(per_replica, output_device)
        if "distances" in outputs[0]:
            gathered["distances"] = unwrap_model(self.module).distance_head(gathered["embeddings"])  # [B, B]
        return gathered
