"""Training objectives: pairwise distances, masked nucleotides, targets, counts, and their weighted sum.

Every function here is pure tensor code (no files, no options parsing) and free of host-device
synchronisations, so it can run inside the training step. Shapes: ``B`` samples, ``S`` ASV slots,
``U`` distinct ASVs, ``L`` positions, ``V`` vocabulary size, ``O`` outputs, ``Q`` quantiles, ``C`` classes.

Target losses are small classes looked up by name in :data:`TARGET_LOSSES`; all take
``(pred, target, sample_weight=None)`` and return a scalar. With ``sample_weight`` [B] the per-sample losses are
combined by a weighted mean ``sum(w * l) / sum(w)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from aam.objectives.registries import TARGET_LOSSES

__all__ = [
    "TARGET_LOSSES",
    "AsymmetricLoss",
    "ClassificationNLLLoss",
    "HuberLoss",
    "MAELoss",
    "MSELoss",
    "MultiTaskLoss",
    "QuantileLoss",
    "TargetLoss",
    "build_target_loss",
    "count_loss",
    "masked_nucleotide_loss",
    "pairwise_distance_loss",
    "relative_abundance",
    "validate_quantiles",
]


def _full_precision(tensor: Tensor) -> Tensor:
    """Half-precision (AMP) values upcast to float32 so squared errors neither overflow nor lose precision."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def _zero_like_graph(reference: Tensor) -> Tensor:
    """A scalar zero that stays connected to ``reference``'s graph (so ``backward`` still works)."""
    return reference.sum() * 0.0


# --------------------------------------------------------------------------- distances
def pairwise_distance_loss(pred: Tensor, target: Tensor) -> Tensor:
    """MSE between predicted and true distances over the strict upper triangle (i < j) of a batch.

    Args:
        pred: [B, B] predicted pairwise distances.
        target: [B, B] true distances (e.g. UniFrac).

    The diagonal and the mirrored lower triangle are excluded. With B = 1 there is no pair and the result is a
    zero that still has a gradient.
    """
    if pred.shape != target.shape or pred.dim() != 2 or pred.shape[0] != pred.shape[1]:
        raise ValueError(f"expected square [B, B] pred and target, got {tuple(pred.shape)} and {tuple(target.shape)}")
    n = pred.shape[0]
    if n < 2:
        return _zero_like_graph(pred)
    rows, cols = torch.triu_indices(n, n, offset=1, device=pred.device)
    pred_pairs = _full_precision(pred[rows, cols])
    return F.mse_loss(pred_pairs, target[rows, cols].to(pred_pairs.dtype))


# --------------------------------------------------------------------------- nucleotides
def masked_nucleotide_loss(logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """Mean cross-entropy over the scored (masked) positions; a zero with gradient when none is.

    Args:
        logits: [U, M, V] scores over the vocabulary at M positions per distinct ASV (the ASV encoder gives
            them at each row's masked positions only).
        targets: [U, M] original tokens there (any integer dtype).
        mask: [U, M] bool, True where the position is scored.

    No host synchronisation (the count of scored positions stays on the device); accuracy is a validation
    diagnostic (:class:`aam.models.diagnostics.MaskedNucleotides`), not computed here.
    """
    flat_logits = logits.reshape(-1, logits.shape[-1])  # [U*M, V]
    flat_mask = mask.reshape(-1).bool()
    # unscored positions may hold anything (padding, ignore values): give them a valid dummy class
    flat_targets = torch.where(flat_mask, targets.reshape(-1).long(), torch.zeros_like(targets.reshape(-1).long()))
    per_position = F.cross_entropy(_full_precision(flat_logits), flat_targets, reduction="none")
    scored = torch.where(flat_mask, per_position, torch.zeros_like(per_position)).sum()
    return scored / flat_mask.sum().clamp_min(1)


# --------------------------------------------------------------------------- counts
def relative_abundance(counts: Tensor, mask: Tensor) -> Tensor:
    """Counts [B, S] -> per-sample relative abundances [B, S] (0 on padding), the target of the count head."""
    counts = torch.where(mask, counts.float(), torch.zeros_like(counts, dtype=torch.float32))
    return counts / counts.sum(dim=1, keepdim=True).clamp_min(1e-12)


def count_loss(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Masked MSE: mean squared error over real ASV slots.

    Args:
        pred: [B, S] predicted relative abundances.
        target: [B, S] true relative abundances (see :func:`relative_abundance`).
        mask: [B, S] bool, True on real ASV slots.
    """
    pred = _full_precision(pred)
    squared = (pred - target.to(pred.dtype)) ** 2
    squared = torch.where(mask, squared, torch.zeros_like(squared))
    return squared.sum() / mask.sum().clamp_min(1)


# --------------------------------------------------------------------------- targets
def _align_target(pred: Tensor, target: Tensor) -> Tensor:
    """Append singleton dims to ``target`` so it broadcasts against ``pred`` ([B] vs [B, O] or [B, O, Q])."""
    target = target.to(pred.dtype)
    if target.dim() < pred.dim():
        target = target.reshape(*target.shape, *([1] * (pred.dim() - target.dim())))
    if torch.broadcast_shapes(pred.shape, target.shape) != pred.shape:
        raise ValueError(f"target of shape {tuple(target.shape)} does not match prediction {tuple(pred.shape)}")
    return target


def _weighted_mean(per_element: Tensor, sample_weight: Tensor | None) -> Tensor:
    """Mean of [B, ...] losses; with ``sample_weight`` [B], the weighted mean of the per-sample means."""
    if sample_weight is None:
        return per_element.mean()
    per_sample = per_element.reshape(per_element.shape[0], -1).mean(dim=1)  # [B]
    weight = sample_weight.reshape(-1).to(per_sample.dtype)
    if weight.shape != per_sample.shape:
        raise ValueError(f"sample_weight of shape {tuple(sample_weight.shape)} does not match batch size "
                         f"{per_sample.shape[0]}")
    return (per_sample * weight).sum() / weight.sum().clamp_min(1e-12)


class TargetLoss:
    """Base class of regression target losses: subclasses define the element-wise loss."""

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def __call__(self, pred: Tensor, target: Tensor, sample_weight: Tensor | None = None) -> Tensor:
        """``pred`` [B, O] (or [B]); ``target`` [B] or [B, O]; optional ``sample_weight`` [B] -> scalar."""
        pred = _full_precision(pred)
        return _weighted_mean(self.elementwise(pred, _align_target(pred, target)), sample_weight)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class MSELoss(TargetLoss):
    """Squared error."""

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        return (pred - target) ** 2


class MAELoss(TargetLoss):
    """Absolute error."""

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        return (pred - target).abs()


class HuberLoss(TargetLoss):
    """Huber loss: quadratic within ``delta`` (default 1) of the target, linear beyond."""

    def __init__(self, delta: float = 1.0):
        self.delta = float(delta)

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.huber_loss(pred, target.expand_as(pred), reduction="none", delta=self.delta)

    def __repr__(self) -> str:
        return f"HuberLoss(delta={self.delta})"


def validate_quantiles(quantiles: Sequence[float]) -> tuple[float, ...]:
    """Check that quantile levels are non-empty, strictly increasing (sorted and unique) and inside (0, 1)."""
    levels = tuple(float(q) for q in quantiles)
    if not levels:
        raise ValueError("at least one quantile is required")
    if any(not 0.0 < q < 1.0 for q in levels):
        raise ValueError(f"quantiles must lie strictly between 0 and 1, got {list(levels)}")
    if any(b <= a for a, b in zip(levels, levels[1:], strict=False)):
        raise ValueError(f"quantiles must be sorted and unique, got {list(levels)}")
    return levels


class QuantileLoss(TargetLoss):
    """Pinball loss averaged over samples, outputs and quantiles.

    ``pred`` is [B, O, Q] (or [B, Q]) with the quantile levels on the last dim; for the error
    ``e = y - yhat`` each level ``tau`` costs ``max(tau * e, (tau - 1) * e)``.
    """

    def __init__(self, quantiles: Sequence[float] = (0.1, 0.5, 0.9)):
        self.quantiles = validate_quantiles(quantiles)
        self._levels = torch.tensor(self.quantiles)  # [Q]; moved once per device/dtype, not per batch

    def __call__(self, pred: Tensor, target: Tensor, sample_weight: Tensor | None = None) -> Tensor:
        if pred.shape[-1] != len(self.quantiles):
            raise ValueError(f"prediction has {pred.shape[-1]} quantile columns, expected {len(self.quantiles)}")
        return super().__call__(pred, target, sample_weight)

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        if self._levels.device != pred.device or self._levels.dtype != pred.dtype:
            self._levels = self._levels.to(pred.device, pred.dtype)
        tau = self._levels  # [Q], broadcast on the last dim
        error = target - pred
        return torch.maximum(tau * error, (tau - 1.0) * error)

    def __repr__(self) -> str:
        return f"QuantileLoss(quantiles={list(self.quantiles)})"


class AsymmetricLoss(TargetLoss):
    """Absolute error weighted by ``over_penalty`` when ``pred > target`` and ``under_penalty`` when below."""

    def __init__(self, over_penalty: float = 1.0, under_penalty: float = 1.0):
        if over_penalty <= 0 or under_penalty <= 0:
            raise ValueError(f"over/under penalties must be > 0, got {over_penalty} and {under_penalty}")
        self.over_penalty = float(over_penalty)
        self.under_penalty = float(under_penalty)

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        return self.over_penalty * F.relu(pred - target) + self.under_penalty * F.relu(target - pred)

    def __repr__(self) -> str:
        return f"AsymmetricLoss(over_penalty={self.over_penalty}, under_penalty={self.under_penalty})"


class ClassificationNLLLoss:
    """Negative log-likelihood of integer class targets under predicted log-probabilities.

    Args:
        class_weights: optional [C] weights; the loss is then ``sum(w[y_i] * nll_i) / sum(w[y_i])`` as in
            :func:`torch.nn.functional.nll_loss`. Sample weights multiply into the same weighted mean.

    ``pred`` is [B, C] log-probabilities; ``target`` is [B] (or [B, 1]) integer class indices. Integer dtypes
    are converted to int64; floating-point targets are a programming error (the reference fed float targets to
    NLL) and raise ``TypeError``.
    """

    def __init__(self, class_weights: Tensor | Sequence[float] | None = None):
        self.class_weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)

    def __call__(self, pred: Tensor, target: Tensor, sample_weight: Tensor | None = None) -> Tensor:
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(f"classification targets must be integer class indices, got dtype {target.dtype}")
        target = target.reshape(-1).long()
        pred = _full_precision(pred)
        weight = self.class_weights
        if weight is not None and (weight.device != pred.device or weight.dtype != pred.dtype):
            weight = self.class_weights = weight.to(pred.device, pred.dtype)  # once per device, not per batch
        per_sample = F.nll_loss(pred, target, weight=weight, reduction="none")  # [B], already times w[y]
        denominator = weight[target] if weight is not None else torch.ones_like(per_sample)
        if sample_weight is not None:
            sample_weight = sample_weight.reshape(-1).to(per_sample.dtype)
            per_sample = per_sample * sample_weight
            denominator = denominator * sample_weight
        return per_sample.sum() / denominator.sum().clamp_min(1e-12)

    def __repr__(self) -> str:
        weights = None if self.class_weights is None else self.class_weights.tolist()
        return f"ClassificationNLLLoss(class_weights={weights})"




def build_target_loss(name: str = "huber", *, classifier: bool = False, quantiles: Sequence[float] | None = None,
                      over_penalty: float = 1.0, under_penalty: float = 1.0,
                      class_weights: Tensor | Sequence[float] | None = None) -> Callable[..., Tensor]:
    """The target loss for ``--loss-type`` (regression) or NLL with ``class_weights`` (``classifier``)."""
    if classifier:
        if name in ("quantile", "asymmetric"):
            raise ValueError(f"loss type {name!r} is not available for classifiers")
        return ClassificationNLLLoss(class_weights)
    if name not in TARGET_LOSSES:
        raise ValueError(f"unknown loss type {name!r}; choose from {', '.join(TARGET_LOSSES)}")
    if name == "quantile":
        return QuantileLoss(quantiles if quantiles is not None else (0.1, 0.5, 0.9))
    if name == "asymmetric":
        return AsymmetricLoss(over_penalty, under_penalty)
    return TARGET_LOSSES[name]()


# --------------------------------------------------------------------------- multi-task
def _field(batch: Any, name: str) -> Any:
    """A batch field from a ``Batch`` dataclass or a mapping; None when absent."""
    if isinstance(batch, Mapping):
        return batch.get(name)
    return getattr(batch, name, None)


class MultiTaskLoss:
    """``total = target_penalty*target + penalty*unifrac + nuc_penalty*nucleotide + count_penalty*count``.

    Expected keys (a component whose penalty is 0 or whose inputs are missing is skipped, not computed):

    ============ ======================================================= =============================================
    component    model ``outputs``                                       ``batch`` fields
    ============ ======================================================= =============================================
    target       ``prediction`` [B, O] / [B, O, Q] / [B, C] log-probs    ``targets`` [B]; ``sample_weights`` [B] opt.
    unifrac      ``distances`` [B, B]  (or ``faith_pd`` [B, 1])           ``distances`` [B, B] (or [B] for Faith PD)
    nucleotide   ``nucleotide_logits`` [U, M, V], ``nucleotide_targets``  --
                 [U, M], ``nucleotide_mask`` [U, M] (M scored positions)
    count        ``count_prediction`` [B, S]                             ``counts`` [B, S], ``asv_mask`` [B, S]
    ============ ======================================================= =============================================

    Returns a dict with ``total`` (a graph-connected scalar for ``backward``) and the unweighted value of each
    computed component, detached, under the names above. ``batch`` may be a ``Batch`` dataclass or a mapping.
    Count targets are the per-sample relative abundances of ``counts`` (matching a sigmoid head).
    """

    def __init__(self, target_penalty: float = 1.0, penalty: float = 1.0, nuc_penalty: float = 1.0,
                 count_penalty: float = 1.0, target_loss: Callable[..., Tensor] | None = None):
        self.target_penalty = float(target_penalty)
        self.penalty = float(penalty)
        self.nuc_penalty = float(nuc_penalty)
        self.count_penalty = float(count_penalty)
        self.target_loss = target_loss

    def components(self, outputs: Mapping[str, Tensor], batch: Any,
                   use_sample_weights: bool = True) -> dict[str, tuple[float, Tensor]]:
        """``{name: (penalty, loss)}`` for every active component, losses still attached to the graph."""
        parts: dict[str, tuple[float, Tensor]] = {}
        targets = _field(batch, "targets")
        if self.target_penalty and self.target_loss is not None and "prediction" in outputs and targets is not None:
            weights = _field(batch, "sample_weights") if use_sample_weights else None
            parts["target"] = (self.target_penalty, self.target_loss(outputs["prediction"], targets, weights))
        distances = _field(batch, "distances")
        if self.penalty and distances is not None:
            if distances.dim() == 2 and "distances" in outputs:
                parts["unifrac"] = (self.penalty, pairwise_distance_loss(outputs["distances"], distances))
            elif distances.dim() == 1 and "faith_pd" in outputs:
                faith = outputs["faith_pd"]
                parts["unifrac"] = (self.penalty, F.mse_loss(faith, distances.reshape(faith.shape).to(faith.dtype)))
        if self.nuc_penalty and "nucleotide_logits" in outputs:
            parts["nucleotide"] = (self.nuc_penalty, masked_nucleotide_loss(
                outputs["nucleotide_logits"], outputs["nucleotide_targets"], outputs["nucleotide_mask"]))
        counts, asv_mask = _field(batch, "counts"), _field(batch, "asv_mask")
        if self.count_penalty and "count_prediction" in outputs and counts is not None and asv_mask is not None:
            target = relative_abundance(counts, asv_mask)
            parts["count"] = (self.count_penalty, count_loss(outputs["count_prediction"], target, asv_mask))
        return parts

    def __call__(self, outputs: Mapping[str, Tensor], batch: Any, *,
                 use_sample_weights: bool = True) -> dict[str, Tensor]:
        parts = self.components(outputs, batch, use_sample_weights)
        if parts:
            total = sum(weight * loss for weight, loss in parts.values())
        else:
            reference = next((v for v in outputs.values() if torch.is_tensor(v) and v.is_floating_point()), None)
            total = torch.zeros(()) if reference is None else _zero_like_graph(reference)
        result = {"total": total}
        result.update({name: loss.detach() for name, (_, loss) in parts.items()})
        return result

    def __repr__(self) -> str:
        return (f"MultiTaskLoss(target_penalty={self.target_penalty}, penalty={self.penalty}, "
                f"nuc_penalty={self.nuc_penalty}, count_penalty={self.count_penalty}, "
                f"target_loss={self.target_loss!r})")
