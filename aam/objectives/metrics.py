"""Streaming validation metrics: gather every prediction during an epoch, compute once at the end.

``update`` only appends detached tensors (no host synchronisation), so validation sees every sample (no batch is
dropped) and the numbers are exact rather than running approximations. ``state()`` returns the gathered tensors
and ``merge(state)`` appends another accumulator's state, so ranks can exchange states (for example with
``torch.distributed.all_gather_object``) and compute on the union. ``compute()`` works in float64 on the CPU and
agrees with scikit-learn (tested against ``sklearn.metrics``).

Selection: :func:`metric_direction` says whether a ``--best-metric`` is minimised or maximised and
:func:`default_best_metric` picks the target metric (``mae`` for regression, ``f1`` for classification).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from aam.objectives.metric_names import BEST_METRICS, metric_direction

__all__ = [
    "BEST_METRICS",
    "ClassificationMetrics",
    "DistanceMetrics",
    "NucleotideAccuracy",
    "RegressionMetrics",
    "default_best_metric",
    "metric_direction",
    "point_prediction",
]

def default_best_metric(classifier: bool, has_target: bool = True) -> str:
    """The default ``--best-metric``: the target metric in original units, not the mixed loss.

    ``mae`` for regression (interpretable in the target's units and robust to outliers), ``f1`` (macro) for
    classification (robust to class imbalance); ``val_loss`` only when there is no target (pretraining).
    """
    if not has_target:
        return "val_loss"
    return "f1" if classifier else "mae"


def point_prediction(prediction: Tensor) -> Tensor:
    """[B, O] -> itself; [B, O, Q] quantile predictions -> the middle quantile column ``Q // 2`` as [B, O]."""
    return prediction[..., prediction.shape[-1] // 2] if prediction.dim() == 3 else prediction


class _Gatherer:
    """Base: keeps named lists of detached tensors; ``state``/``merge``/``reset`` work on all of them."""

    _fields: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._chunks: dict[str, list[Tensor]] = {name: [] for name in self._fields}

    def _append(self, **tensors: Tensor) -> None:
        for name, value in tensors.items():
            self._chunks[name].append(value.detach())

    def _gathered(self, name: str) -> Tensor | None:
        chunks = self._chunks[name]
        if not chunks:
            return None
        return torch.cat([c.to("cpu") for c in chunks])

    def state(self) -> dict[str, Tensor | None]:
        """The gathered tensors by field (None when empty), on the device they were collected on."""
        return {name: (torch.cat(chunks) if chunks else None) for name, chunks in self._chunks.items()}

    def merge(self, other: _Gatherer | dict[str, Tensor | None]) -> None:
        """Append another accumulator (or its ``state()``), e.g. gathered from other ranks."""
        state = other.state() if isinstance(other, _Gatherer) else other
        for name in self._fields:
            if state.get(name) is not None:
                self._chunks[name].append(state[name].detach())


def _regression_scores(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """MAE, MSE, RMSE and R^2 of float64 arrays [N, O]; multi-output scores are averaged over outputs.

    R^2 follows scikit-learn for a constant target: 1 if the fit is perfect, else 0.
    """
    error = pred - target
    mse_per_output = (error ** 2).mean(axis=0)
    sse = (error ** 2).sum(axis=0)
    sst = ((target - target.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(sst > 0, 1.0 - sse / np.where(sst > 0, sst, 1.0), np.where(sse == 0, 1.0, 0.0))
    return {
        "mae": float(np.abs(error).mean()),
        "mse": float(mse_per_output.mean()),
        "rmse": float(np.sqrt(mse_per_output).mean()),
        "r2": float(r2.mean()),
    }


class RegressionMetrics(_Gatherer):
    """MAE, MSE, RMSE, R^2 and sample count over every ``update``.

    ``update(pred, target)`` takes [B] or [B, O] tensors of the same number of elements per sample (use
    :func:`point_prediction` for quantile heads). Feed values in original units for reportable metrics.
    """

    _fields = ("pred", "target")

    def update(self, pred: Tensor, target: Tensor) -> None:
        pred = pred.unsqueeze(-1) if pred.dim() == 1 else pred.flatten(1)  # [B, O]
        self._append(pred=pred, target=target.reshape(pred.shape))

    @property
    def n(self) -> int:
        return sum(c.shape[0] for c in self._chunks["pred"])

    def values(self) -> tuple[np.ndarray, np.ndarray]:
        """All gathered ``(pred, target)`` as float64 arrays [N, O] (for plots and prediction tables)."""
        pred, target = self._gathered("pred"), self._gathered("target")
        if pred is None:
            return np.zeros((0, 1)), np.zeros((0, 1))
        return pred.double().numpy(), target.double().numpy()

    def compute(self) -> dict[str, float]:
        """``{'mae', 'mse', 'rmse', 'r2', 'n'}``; NaN scores when nothing was gathered."""
        pred, target = self.values()
        if pred.shape[0] == 0:
            return {"mae": math.nan, "mse": math.nan, "rmse": math.nan, "r2": math.nan, "n": 0}
        return {**_regression_scores(pred, target), "n": int(pred.shape[0])}


class DistanceMetrics(RegressionMetrics):
    """Distance-prediction MAE/MSE/RMSE/R^2 over the strict upper-triangle pairs of each batch.

    ``update(pred [B, B], target [B, B])``; with a per-sample target [B] (Faith PD) ``pred`` ([B] or [B, 1]) is
    compared sample by sample. A single-sample pairwise batch has no pair and adds nothing.
    """

    def update(self, pred: Tensor, target: Tensor) -> None:
        if target.dim() == 2:
            rows, cols = torch.triu_indices(target.shape[0], target.shape[1], offset=1, device=target.device)
            pred, target = pred[rows, cols], target[rows, cols]
        super().update(pred.reshape(-1, 1), target.reshape(-1, 1))

    @property
    def n_pairs(self) -> int:
        return self.n

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """All gathered ``(pred, target)`` pair distances as float64 vectors."""
        pred, target = self.values()
        return pred.reshape(-1), target.reshape(-1)


def _binary_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC by the rank statistic (ties share their average rank), as scikit-learn computes it."""
    from scipy.stats import rankdata

    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


class ClassificationMetrics(_Gatherer):
    """Accuracy, macro/weighted F1, one-vs-rest macro AUROC and the confusion matrix.

    Args:
        num_classes: number of classes C; inferred from the first ``update`` when None.

    ``update(log_probs [B, C], target [B] int)``. F1 follows scikit-learn: averaged over the labels present in
    the targets or predictions (a label that is never true nor predicted is left out), a label with no true
    positive scores 0. AUROC averages the one-vs-rest AUC of every class present among the targets *and* absent
    from some target (classes without positives or negatives are skipped); it is NaN when no class qualifies.
    With every class present it equals ``roc_auc_score(y, probs, multi_class='ovr', average='macro')``.
    """

    _fields = ("log_probs", "target")

    def __init__(self, num_classes: int | None = None):
        self.num_classes = num_classes
        super().__init__()

    def update(self, log_probs: Tensor, target: Tensor) -> None:
        if self.num_classes is None:
            self.num_classes = int(log_probs.shape[-1])
        self._append(log_probs=log_probs.reshape(-1, log_probs.shape[-1]), target=target.reshape(-1).long())

    @property
    def n(self) -> int:
        return sum(c.shape[0] for c in self._chunks["target"])

    def confusion_matrix(self) -> np.ndarray:
        """[C, C] int64 counts, rows the true class, columns the predicted class (scikit-learn's layout)."""
        target, log_probs = self._gathered("target"), self._gathered("log_probs")
        c = self.num_classes or 0
        if target is None:
            return np.zeros((c, c), dtype=np.int64)
        pred = log_probs.argmax(-1)
        flat = torch.bincount(target * c + pred, minlength=c * c)
        return flat.reshape(c, c).numpy().astype(np.int64)

    def compute(self) -> dict[str, Any]:
        """``{'accuracy', 'f1_macro', 'f1_weighted', 'f1' (= macro), 'auroc', 'n', 'confusion_matrix'}``."""
        matrix = self.confusion_matrix()
        n = int(matrix.sum())
        if n == 0:
            nan = math.nan
            return {"accuracy": nan, "f1_macro": nan, "f1_weighted": nan, "f1": nan, "auroc": nan, "n": 0,
                    "confusion_matrix": matrix}
        tp = np.diag(matrix).astype(np.float64)
        support = matrix.sum(axis=1).astype(np.float64)  # true count per class
        predicted = matrix.sum(axis=0).astype(np.float64)
        denominator = support + predicted  # = 2TP + FP + FN
        present = denominator > 0
        f1 = np.where(present, 2 * tp / np.where(present, denominator, 1.0), 0.0)
        f1_macro = float(f1[present].mean())
        return {
            "accuracy": float(tp.sum() / n),
            "f1_macro": f1_macro,
            "f1_weighted": float((f1 * support).sum() / support.sum()),
            "f1": f1_macro,
            "auroc": self._auroc(),
            "n": n,
            "confusion_matrix": matrix,
        }

    def _auroc(self) -> float:
        probs = self._gathered("log_probs").double().exp().numpy()  # [N, C]
        target = self._gathered("target").numpy()
        aucs = []
        for k in range(probs.shape[1]):
            positive = target == k
            if positive.any() and not positive.all():
                aucs.append(_binary_auc(probs[:, k], positive))
        return float(np.mean(aucs)) if aucs else math.nan


class NucleotideAccuracy:
    """Masked-nucleotide accuracy from per-batch ``(n_correct, n_masked)`` counts, summed on device."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.correct: Tensor = torch.zeros((), dtype=torch.long)
        self.total: Tensor = torch.zeros((), dtype=torch.long)

    def update(self, n_correct: Tensor, n_masked: Tensor) -> None:
        if self.correct.device != n_correct.device:
            self.correct, self.total = self.correct.to(n_correct.device), self.total.to(n_correct.device)
        self.correct = self.correct + n_correct.detach().long()
        self.total = self.total + n_masked.detach().long()

    def state(self) -> dict[str, Tensor]:
        return {"correct": self.correct, "total": self.total}

    def merge(self, other: NucleotideAccuracy | dict[str, Tensor]) -> None:
        state = other.state() if isinstance(other, NucleotideAccuracy) else other
        self.update(state["correct"].to(self.correct.device), state["total"].to(self.correct.device))

    def compute(self) -> dict[str, float]:
        """``{'accuracy', 'n'}``; accuracy is NaN when no position was masked."""
        total = int(self.total.item())
        accuracy = int(self.correct.item()) / total if total else math.nan
        return {"accuracy": accuracy, "n": total}
