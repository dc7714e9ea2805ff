"""What a model reports about itself during validation besides its losses: each model class declares its
diagnostics (``validation_diagnostics()``), and each diagnostic reads the model's own outputs, reduces itself
across ranks and writes its metrics and arrays. The validation loop (``aam.training.validation``) knows none of
the output keys.

A diagnostic: ``update(outputs, batch)`` per batch; ``reduce(strategy)`` once, where ``strategy`` offers
``reduce_sum(tensor)`` and ``all_gather_objects(value)`` (only called under DDP/FSDP); ``report(metrics,
arrays)`` adds ``val_*`` metrics and named arrays (``distance_pairs``, ``gate``, ``cross_attention``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from aam.objectives.metrics import DistanceMetrics


class DistancePairs:
    """Predicted vs true UniFrac distances of every within-batch pair: ``val_distance_mae``/``_r2``."""

    def __init__(self) -> None:
        self.metrics = DistanceMetrics()

    def update(self, outputs: dict[str, torch.Tensor], batch: Any) -> None:
        if "distances" in outputs and batch.distances is not None and batch.distances.dim() == 2:
            self.metrics.update(outputs["distances"].float(), batch.distances.float())

    def reduce(self, strategy: Any) -> None:
        states = strategy.all_gather_objects({k: None if v is None else v.cpu()
                                              for k, v in self.metrics.state().items()})
        self.metrics.reset()
        for state in states:
            self.metrics.merge(state)

    def report(self, metrics: dict[str, float], arrays: dict[str, Any]) -> None:
        if self.metrics.n_pairs > 0:
            scores = self.metrics.compute()
            metrics.update({"val_distance_mae": scores["mae"], "val_distance_r2": scores["r2"]})
            arrays["distance_pairs"] = self.metrics.pairs()


class MaskedNucleotides:
    """Accuracy on the masked nucleotides (masked as in training, from the loop's fixed-seed generator)."""

    def __init__(self) -> None:
        self.correct: torch.Tensor | None = None
        self.total: torch.Tensor | None = None

    def update(self, outputs: dict[str, torch.Tensor], batch: Any) -> None:
        if "nucleotide_logits" not in outputs:
            return
        mask = outputs["nucleotide_mask"]
        if self.correct is None:
            self.correct = torch.zeros((), device=mask.device)
            self.total = torch.zeros((), device=mask.device)
        predicted = outputs["nucleotide_logits"].argmax(-1)
        self.correct += ((predicted == outputs["nucleotide_targets"]) & mask).sum()
        self.total += mask.sum()

    def reduce(self, strategy: Any) -> None:
        if self.correct is not None:
            self.correct, self.total = strategy.reduce_sum(self.correct), strategy.reduce_sum(self.total)

    def report(self, metrics: dict[str, float], arrays: dict[str, Any]) -> None:
        if self.total is not None and self.total.item() > 0:
            metrics["val_nucleotide_accuracy"] = (self.correct / self.total).item()


class FusionGate:
    """The gated fusion's gate, one mean per sample (``gate``) and its overall mean (``val_gmu_gate_mean``);
    this rank's samples."""

    def __init__(self) -> None:
        self.gates: list[torch.Tensor] = []

    def update(self, outputs: dict[str, torch.Tensor], batch: Any) -> None:
        if "gate" in outputs:
            gate = outputs["gate"]
            self.gates.append(gate.float().mean(dim=tuple(range(1, gate.dim()))).cpu())

    def reduce(self, strategy: Any) -> None:
        """Kept per rank (TensorBoard is written by rank 0 from its own samples)."""

    def report(self, metrics: dict[str, float], arrays: dict[str, Any]) -> None:
        if self.gates:
            arrays["gate"] = torch.cat(self.gates).numpy()
            metrics["val_gmu_gate_mean"] = float(arrays["gate"].mean())


class CrossAttentionMap:
    """The ASV positions' attention over the metadata columns, averaged over samples: ``cross_attention``
    [S_max, K]; this rank's samples."""

    def __init__(self) -> None:
        self.weights: list[torch.Tensor] = []

    def update(self, outputs: dict[str, torch.Tensor], batch: Any) -> None:
        if "cross_attention_weights" in outputs:
            self.weights.append(outputs["cross_attention_weights"].float().cpu())

    def reduce(self, strategy: Any) -> None:
        """Kept per rank, like the gate."""

    def report(self, metrics: dict[str, float], arrays: dict[str, Any]) -> None:
        if self.weights:
            arrays["cross_attention"] = mean_over_samples(self.weights)


def mean_over_samples(weights: list[torch.Tensor]) -> np.ndarray:
    """Average [B, S, K] attention maps over samples, padding shorter S with NaN-free zeros: -> [S_max, K]."""
    s_max = max(w.shape[1] for w in weights)
    total = torch.zeros(s_max, weights[0].shape[-1])
    count = torch.zeros(s_max, 1)
    for w in weights:
        total[: w.shape[1]] += w.sum(0)
        count[: w.shape[1]] += w.shape[0]
    return (total / count.clamp_min(1)).numpy()
