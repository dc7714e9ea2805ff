"""Validation: the losses and metrics of a model over every sample of a loader, in original units for the
target. The loop knows the losses and the target's decoder; everything else a model reports (distance pairs,
masked nucleotides, fusion gates, attention maps) comes from the diagnostics the model declares
(``validation_diagnostics()``, :mod:`aam.models.diagnostics`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from aam.models.build import unwrap_model
from aam.objectives.metrics import ClassificationMetrics, RegressionMetrics
from aam.outputs.prediction import PredictionDecoder


@dataclass
class EvalResult:
    """Validation metrics (original units) and, when targets exist, per-sample predictions."""

    metrics: dict[str, float]
    predictions: Any = None  # pandas.DataFrame with sample_id, prediction, actual (+ probabilities)
    distance_pairs: tuple[np.ndarray, np.ndarray] | None = None  # (predicted, true) upper-triangle pairs
    confusion: np.ndarray | None = None
    diagnostics: dict[str, np.ndarray] = field(default_factory=dict)


def loss_name(key: str) -> str:
    """``total`` -> ``loss``; any other objective -> ``<name>_loss``."""
    return "loss" if key == "total" else f"{key}_loss"


def reduce_sums(strategy: Any, device: torch.device, n_samples: int,
                sums: dict[str, Any]) -> tuple[int, dict[str, torch.Tensor]]:
    """Sample count and per-loss sums added over all ranks (every rank calls it, keys in the same order)."""
    total = strategy.reduce_sum(torch.tensor(float(n_samples), device=device))
    return int(total.item()), {k: strategy.reduce_sum(torch.as_tensor(v, device=device))
                               for k, v in sorted(sums.items())}


def validate(model: nn.Module, loader: Iterable, *, forward: Callable, loss_fn: Callable,
             decoder: PredictionDecoder | None, device: torch.device, autocast: Callable,
             strategy: Any = None) -> EvalResult:
    """Losses, target metrics and the model's diagnostics over every sample of ``loader``.

    ``forward(model, batch, generator)`` runs the model (nucleotides masked as in training, from a generator
    seeded once here, so every validation masks alike); ``strategy`` (under DDP/FSDP) adds every rank's part,
    so each rank ends with the metrics of the whole validation set.
    """
    declared = getattr(unwrap_model(model), "validation_diagnostics", None)
    diagnostics = list(declared()) if declared is not None else []
    sums: dict[str, torch.Tensor] = {}
    n_samples = 0
    rows: list[Any] = []
    generator = torch.Generator(device=device).manual_seed(0)
    for batch in loader:
        batch = batch.to(device, non_blocking=True)
        with autocast():
            outputs = forward(model, batch, generator)
            losses = loss_fn(outputs, batch)
        size = len(batch)
        n_samples += size
        for name, value in losses.items():
            sums[name] = sums.get(name, 0.0) + value.detach().float() * size
        for diagnostic in diagnostics:
            diagnostic.update(outputs, batch)
        if decoder is not None and batch.targets is not None:
            rows.append(decoder.decode_batch(outputs["prediction"].float(), batch))
    if strategy is not None:
        n_samples, sums = reduce_sums(strategy, device, n_samples, sums)
        for diagnostic in diagnostics:
            diagnostic.reduce(strategy)
        rows = [frame for part in strategy.all_gather_objects(rows) for frame in part]
    metrics = {f"val_{loss_name(k)}": (v / max(n_samples, 1)).item() for k, v in sums.items()}
    result = EvalResult(metrics)
    arrays: dict[str, Any] = {}
    for diagnostic in diagnostics:
        diagnostic.report(metrics, arrays)
    result.distance_pairs = arrays.pop("distance_pairs", None)
    result.diagnostics.update(arrays)
    if rows:
        _target_metrics(result, decoder.concat(rows), decoder)
    return result


def _target_metrics(result: EvalResult, frame, decoder: PredictionDecoder) -> None:
    """The target's scores in original units (regression) or from the class probabilities."""
    result.predictions = frame
    if not decoder.classifier:
        regression = RegressionMetrics()
        regression.update(torch.tensor(frame["prediction"].to_numpy(np.float64)),
                          torch.tensor(frame["actual"].to_numpy(np.float64)))
        result.metrics.update({f"val_{k}": v for k, v in regression.compute().items() if k not in ("n", "mse")})
        return
    classification = ClassificationMetrics(decoder.n_classes)
    probs = torch.tensor(frame[decoder.probability_columns].to_numpy(np.float64))
    actual = torch.tensor(frame["actual_index"].to_numpy(np.int64))
    classification.update(probs.clamp_min(1e-12).log(), actual)
    computed = classification.compute()
    result.confusion = computed.pop("confusion_matrix", None)
    result.metrics.update({f"val_{k}": v for k, v in computed.items() if k != "n"})
