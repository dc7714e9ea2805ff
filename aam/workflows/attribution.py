"""Per-ASV attribution: how much, and which way, each ASV of a sample moves a trained model's answer.

Two methods, on one batch at a time, both in the answer's own units (the prediction in original target units,
or each class's probability):

- **occlusion** (the default of ``aam explain``): the answer with the sample as it is, less the answer with one
  ASV taken out of it (its slot masked and its reads dropped, so the other ASVs' shares renormalise). It is
  exact for what it asks (a test checks it against predicting a table without that ASV), model-agnostic (the
  sequence-groups model too) and costs one extra forward pass of the sample-level layers per ASV; the ASV
  encoder runs once per batch.
- **gradient** (gradient x input): the sum over embedding dimensions of the answer's gradient times the ASV's
  vector where the target branch reads it. One backward pass per answer column; a first-order guess at the
  same quantity, for transformer models only.

``_design_plan/attribution.md`` compares them on synthetic data with known driving clades.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from aam.models.sequence_predictor import SequencePredictor
from aam.outputs.prediction import PredictionDecoder
from aam.training.forward import forward_batch
from aam.workflows.run_config import ATTRIBUTION_METHODS

METHODS = ATTRIBUTION_METHODS  # the two below, named where the CLI reads them without importing torch
Reader = Callable[[Tensor, np.ndarray], np.ndarray]  # raw prediction [R, ...], AmpliconData rows [R] -> [R, C]


def answer_reader(decoder: PredictionDecoder) -> Reader:
    """Raw model predictions -> [R, C] answers: class probabilities for a classifier, else the point prediction
    in original target units (C = 1)."""

    def read(prediction: Tensor, sample_index: np.ndarray) -> np.ndarray:
        frame = decoder.decode(prediction, sample_index)
        columns = decoder.probability_columns if decoder.classifier else ["prediction"]
        return frame[columns].to_numpy(np.float64)

    return read


def answer_shift(delta: np.ndarray) -> np.ndarray:
    """[..., C] change of answers -> [...] its size: |change| of a prediction, or the total-variation distance
    (half the L1 norm) between two class-probability vectors."""
    return np.abs(delta[..., 0]) if delta.shape[-1] == 1 else 0.5 * np.abs(delta).sum(-1)


def shared_asv_embeddings(model: nn.Module, batch) -> Tensor | None:
    """The batch's ASV vectors computed once (reused by every variant of its samples), or None for a model
    without an ASV encoder."""
    return model.encode_asvs(batch.tokens) if isinstance(model, SequencePredictor) else None


@torch.no_grad()
def answers_without(model: nn.Module, batch, rows: np.ndarray, removed: Tensor, read: Reader,
                    asv_embeddings: Tensor | None = None, chunk: int = 256) -> np.ndarray:
    """[R, C] answers of R variants of the batch's samples: variant r is sample ``rows[r]`` with the slots
    ``removed[r]`` ([R, S] bool) taken out."""
    out = []
    for start in range(0, len(rows), chunk):
        index = torch.as_tensor(rows[start:start + chunk], device=batch.asv_index.device)
        mask = batch.asv_mask[index] & ~removed[start:start + chunk]
        variant = dataclasses.replace(
            batch, asv_index=batch.asv_index[index], asv_mask=mask, counts=batch.counts[index] * mask,
            categoricals=None if batch.categoricals is None else batch.categoricals[index])
        outputs = forward_batch(model, variant, asv_embeddings=asv_embeddings)
        out.append(read(outputs["prediction"].float(), batch.sample_index[index].cpu().numpy()))
    return np.concatenate(out) if out else np.zeros((0, 0))


@torch.no_grad()
def occlusion_effects(model: nn.Module, batch, read: Reader, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """The batch's answers [B, C] and each slot's effect [B, S, C]: answer with the ASV less answer without it
    (NaN on padding and for a sample's only ASV, which cannot be removed)."""
    embeddings = shared_asv_embeddings(model, batch)
    n_samples, n_slots = batch.asv_mask.shape
    full = answers_without(model, batch, np.arange(n_samples), torch.zeros_like(batch.asv_mask), read, embeddings)
    mask = batch.asv_mask.cpu().numpy()
    counts = mask.sum(1)
    rows, slots = np.nonzero(mask & (counts[:, None] > 1))
    device = batch.asv_mask.device
    removed = torch.zeros(len(rows), n_slots, dtype=torch.bool, device=device)
    removed[torch.arange(len(rows), device=device), torch.as_tensor(slots, device=device)] = True
    without = answers_without(model, batch, rows, removed, read, embeddings, chunk)
    effects = np.full((n_samples, n_slots, full.shape[1]), np.nan)
    effects[rows, slots] = full[rows] - without
    return full, effects


def gradient_effects(model: nn.Module, batch, read: Reader, step: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """The batch's answers [B, C] and gradient x input per slot [B, S, C] at the target branch's input (the
    base's per-ASV ``sample_embeddings``), in answer units; NaN on padding."""
    if not isinstance(model, SequencePredictor):
        raise TypeError("gradient attribution needs a transformer model (the answer's gradient at its ASV vectors)")
    base = model.base
    leaf: dict[str, Tensor] = {}

    def capture(_module, _args, output):
        hidden = output["sample_embeddings"].detach().requires_grad_(True)
        leaf["hidden"] = hidden
        return {**output, "sample_embeddings": hidden}

    handle = base.register_forward_hook(capture)
    try:
        with torch.enable_grad():
            outputs = forward_batch(model, batch)
            prediction = outputs["prediction"].float()
            sample_index = batch.sample_index.cpu().numpy()
            full = read(prediction.detach(), sample_index)
            columns = _differentiable_answers(prediction, read, sample_index, step)
            effects = []
            for c, column in enumerate(columns):
                (gradient,) = torch.autograd.grad(column.sum(), leaf["hidden"], retain_graph=c + 1 < len(columns))
                effects.append((gradient * leaf["hidden"]).sum(-1).detach())  # [B, S]
    finally:
        handle.remove()
    out = torch.stack(effects, dim=-1).double().cpu().numpy()  # [B, S, C]
    out[~batch.asv_mask.cpu().numpy()] = np.nan
    return full, out


def _differentiable_answers(prediction: Tensor, read: Reader, sample_index: np.ndarray, step: float) -> list[Tensor]:
    """Each answer column as a differentiable function of the raw prediction: class probabilities, or the
    point prediction mapped to original units by its local slope (the inverse target transform's derivative,
    by central differences)."""
    if prediction.dim() != 2:
        raise TypeError("gradient attribution does not support quantile heads; use occlusion")
    if prediction.shape[1] > 1:  # classifier log-probabilities
        probabilities = prediction.exp()
        return [probabilities[:, c] for c in range(probabilities.shape[1])]
    point = prediction.detach()
    up, down = read(point + step, sample_index), read(point - step, sample_index)
    slope = torch.as_tensor((up[:, 0] - down[:, 0]) / (2 * step), dtype=point.dtype, device=point.device)
    return [prediction[:, 0] * slope]
