"""Target transforms (``--target-transform``).

Every target transform is an affine map ``z = (f(y) - center) / scale`` where ``f`` is the identity or
``log1p``; ``center``/``scale`` are fitted on the training split, stored in the checkpoint (`to_dict`) and
undone by `inverse` so that metrics and predictions are in the original units. `inverse` accepts ``[N]`` and
``[N, ...]`` arrays (e.g. ``[N, Q]`` quantile outputs); per-sample statistics broadcast over trailing axes.

Counts are not transformed here: the count head's target is each sample's relative abundance
(`aam.objectives.losses.relative_abundance`) and the model's count input its own abundance feature, whatever the
target transform.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from aam.errors import AamError

log = logging.getLogger(__name__)

DEFAULT_REGRESSION_TRANSFORM = "zscore"
"""What a regression run uses when no transform flag is given. Not ``minmax``: a min-max target with a
bounded (sigmoid) head cannot predict outside the training range, so extrapolation is clipped; z-scores keep
the loss well scaled without bounding the output."""

_RELATIVE_SCALE_FLOOR = 1e-8  # a spread below this (relative to the magnitude) counts as a constant target
_MAX_LOG = 700.0  # expm1 overflows float64 above ~709.78


def _constant_safe(scale: float, magnitude: float) -> float:
    """``scale``, or 1.0 when the target is constant (spread negligible next to its magnitude)."""
    return scale if scale > _RELATIVE_SCALE_FLOOR * max(1.0, magnitude) else 1.0


def _per_sample(values: np.ndarray, ndim: int) -> np.ndarray:
    """Reshape per-sample statistics [N] to broadcast against a [N, ...] array of ``ndim`` axes."""
    return values.reshape((-1,) + (1,) * (ndim - 1)) if values.ndim == 1 and ndim > 1 else values


class TargetTransform:
    """Base of the target transforms: ``z = (f(y) - center) / scale``, ``f = log1p`` when `log` is set.

    Subclasses give the statistics: `_fit_stats` learns them from the (log-)targets of the training split,
    `_center_scale` returns them as scalars or as per-sample arrays [N] for ``groups``.
    """

    name: ClassVar[str]
    log: bool = False

    def fit(self, y: np.ndarray, groups: np.ndarray | None = None) -> TargetTransform:
        """Fit on the training targets ``y`` [N] (``groups`` [N]: per-sample category keys, if used)."""
        values = self._forward_log(y)
        if values.size == 0:
            raise AamError("no training targets to fit the target transform on", source="--target-transform")
        if not np.all(np.isfinite(values)):
            raise AamError("training targets contain NaN or infinite values", source="--target-transform")
        self._fit_stats(values, groups)
        return self

    def transform(self, y: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
        """Original units -> model units (float64, same shape)."""
        values = self._forward_log(y)
        center, scale = self._center_scale(groups, values.ndim)
        return (values - center) / scale

    def inverse(self, z: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
        """Model units -> original units (float64, same shape); ``z`` is [N] or [N, ...]."""
        z = np.asarray(z, dtype=np.float64)
        center, scale = self._center_scale(groups, z.ndim)
        values = z * scale + center
        return np.expm1(np.minimum(values, _MAX_LOG)) if self.log else values

    def _forward_log(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64)
        if not self.log:
            return y
        if np.any(y < 0):
            raise AamError(f"{self.name} needs non-negative targets, found {int(np.sum(y < 0))} negative",
                           source="--target-transform", hint="use --target-transform zscore")
        return np.log1p(y)

    def _fit_stats(self, values: np.ndarray, groups: np.ndarray | None) -> None:
        raise NotImplementedError

    def _center_scale(self, groups: np.ndarray | None, ndim: int) -> tuple[Any, Any]:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe state including the registry name; `transform_from_dict` rebuilds it."""
        return {"name": self.name, "log": self.log, **self._state()}

    def _state(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> TargetTransform:
        transform = cls()
        transform._load(state)
        return transform

    def _load(self, state: Mapping[str, Any]) -> None:
        pass


class _GlobalAffine(TargetTransform):
    """One ``center``/``scale`` pair for every sample."""

    def __init__(self) -> None:
        self.center = 0.0
        self.scale = 1.0

    def _center_scale(self, groups: np.ndarray | None, ndim: int) -> tuple[float, float]:
        return self.center, self.scale

    def _state(self) -> dict[str, Any]:
        return {"center": self.center, "scale": self.scale}

    def _load(self, state: Mapping[str, Any]) -> None:
        self.center, self.scale = float(state["center"]), float(state["scale"])


class IdentityTransform(_GlobalAffine):
    """``none``: targets as given."""

    name = "none"

    def _fit_stats(self, values: np.ndarray, groups: np.ndarray | None) -> None:
        self.center, self.scale = 0.0, 1.0


class MinMaxTransform(_GlobalAffine):
    """``minmax``: ``(y - min) / (max - min)``, training range -> [0, 1]; scale 1 for a constant target."""

    name = "minmax"

    def _fit_stats(self, values: np.ndarray, groups: np.ndarray | None) -> None:
        low, high = float(values.min()), float(values.max())
        self.center = low
        self.scale = _constant_safe(high - low, max(abs(low), abs(high)))


class ZScoreTransform(_GlobalAffine):
    """``zscore``: ``(y - mean) / std`` with the population std; scale 1 for a constant target."""

    name = "zscore"

    def _fit_stats(self, values: np.ndarray, groups: np.ndarray | None) -> None:
        self.center = float(values.mean())
        self.scale = _constant_safe(float(values.std()), float(np.abs(values).max()))


class LogMinMaxTransform(MinMaxTransform):
    """``log-minmax``: ``log1p(y)`` then minmax; targets must be non-negative."""

    name = "log-minmax"
    log = True


class LogZScoreTransform(ZScoreTransform):
    """``log-zscore``: ``log1p(y)`` then zscore; targets must be non-negative."""

    name = "log-zscore"
    log = True


class CategoryZScoreTransform(TargetTransform):
    """``zscore-category``: z-score within each category of ``--normalize-by``, shrunk toward the global one.

    A category with few training samples has unreliable statistics (one sample: std 0, and the old floor of
    1e-8 turned every other sample of that category into a huge target). Each category's statistics are
    therefore blended with the global ones as if ``prior`` (5) extra samples at the global mean and variance
    had been seen::

        mean_k = (n_k * mean_k + m * mean) / (n_k + m)
        std_k  = sqrt((n_k * var_k + m * var) / (n_k + m)),  floored at 1e-3 * std

    A one-sample category gets ``std_k = sqrt(5/6) * std``, so its z-scores stay of the global order; large
    categories keep essentially their own statistics. Samples without a key (missing value) or with a key not
    seen in training use the global statistics (one warning per new key).
    """

    name = "zscore-category"
    prior = 5.0
    floor_ratio = 1e-3

    def __init__(self, log: bool = False) -> None:
        self.log = log
        self.mean = 0.0
        self.std = 1.0
        self.stats: dict[str, tuple[float, float]] = {}  # key -> (mean_k, std_k), after shrinkage
        self._warned: set[str] = set()

    def _fit_stats(self, values: np.ndarray, groups: np.ndarray | None) -> None:
        if groups is None or len(groups) != len(values):
            raise ValueError("zscore-category needs one group key per training target")
        self.mean = float(values.mean())
        self.std = _constant_safe(float(values.std()), float(np.abs(values).max()))
        keys = np.asarray(groups, dtype=object)
        self.stats = {}
        for key in sorted({k for k in keys if k is not None}, key=str):
            members = values[keys == key]
            n = len(members)
            mean_k = (n * members.mean() + self.prior * self.mean) / (n + self.prior)
            var_k = (n * members.var() + self.prior * self.std**2) / (n + self.prior)
            self.stats[str(key)] = (float(mean_k), max(float(np.sqrt(var_k)), self.floor_ratio * self.std))

    def _center_scale(self, groups: np.ndarray | None, ndim: int) -> tuple[Any, Any]:
        if groups is None:
            if "<no groups>" not in self._warned:
                self._warned.add("<no groups>")
                log.warning("zscore-category: no --normalize-by values given; using the global statistics")
            return self.mean, self.std
        pairs = [self.stats.get(str(k), (self.mean, self.std)) if k is not None else (self.mean, self.std)
                 for k in groups]
        unseen = {str(k) for k in groups if k is not None and str(k) not in self.stats} - self._warned
        if unseen:
            self._warned |= unseen
            log.warning("zscore-category: %d group(s) not seen in training use the global statistics: %s",
                        len(unseen), ", ".join(sorted(unseen)[:5]) + (", ..." if len(unseen) > 5 else ""))
        stats = np.array(pairs, dtype=np.float64).reshape(-1, 2)  # [N, (center, scale)]
        return _per_sample(stats[:, 0], ndim), _per_sample(stats[:, 1], ndim)

    def _state(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "prior": self.prior, "floor_ratio": self.floor_ratio,
                "stats": {k: list(v) for k, v in self.stats.items()}}

    def _load(self, state: Mapping[str, Any]) -> None:
        self.log = bool(state.get("log", False))
        self.mean, self.std = float(state["mean"]), float(state["std"])
        self.prior, self.floor_ratio = float(state["prior"]), float(state["floor_ratio"])
        self.stats = {str(k): (float(m), float(s)) for k, (m, s) in state["stats"].items()}


class LogCategoryZScoreTransform(CategoryZScoreTransform):
    """``log-zscore-category``: ``log1p(y)`` then zscore-category (what the legacy
    ``--normalize-targets-by`` with ``--log-transform-targets`` meant)."""

    name = "log-zscore-category"

    def __init__(self, log: bool = True) -> None:
        super().__init__(log=log)


TARGET_TRANSFORMS: dict[str, type[TargetTransform]] = {
    cls.name: cls
    for cls in (IdentityTransform, MinMaxTransform, ZScoreTransform, CategoryZScoreTransform,
                LogMinMaxTransform, LogZScoreTransform, LogCategoryZScoreTransform)
}
GROUPED_TRANSFORMS = frozenset({"zscore-category", "log-zscore-category"})  # need --normalize-by


def transform_from_dict(state: Mapping[str, Any]) -> TargetTransform:
    """Rebuild a fitted transform from `TargetTransform.to_dict` output (e.g. from a checkpoint)."""
    return TARGET_TRANSFORMS[state["name"]].from_dict(state)


def _columns(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    parts = value.split(",") if isinstance(value, str) else value
    return [p.strip() for p in parts if p.strip()]


def resolve_target_transform(
    target_transform: str | None,
    normalize_targets: bool | None = None,
    normalize_targets_by: str | Sequence[str] | None = None,
    log_transform_targets: bool = False,
    normalize_by: str | Sequence[str] | None = None,
) -> tuple[str | None, list[str], list[str]]:
    """Map ``--target-transform``/``--normalize-by`` and the deprecated flags onto one transform name.

    ``normalize_targets`` is None when ``--[no-]normalize-targets`` was not given. Returns ``(name, columns,
    warnings)``: ``name`` is None when nothing was asked (the caller picks `DEFAULT_REGRESSION_TRANSFORM`),
    ``columns`` are the ``--normalize-by`` columns and ``warnings`` the deprecation messages to log.
    ``--target-transform`` wins over the legacy flags. Legacy mapping: ``--normalize-targets`` -> minmax,
    ``--no-normalize-targets`` -> none, ``--log-transform-targets`` -> log-minmax, ``--normalize-targets-by
    cols`` -> zscore-category (log-zscore-category with ``--log-transform-targets``, keeping the groups).
    ``--normalize-by`` alone implies zscore-category.
    """
    by_columns, legacy_by = _columns(normalize_by), _columns(normalize_targets_by)
    given = [flag for flag, on in (
        ("--normalize-targets" if normalize_targets else "--no-normalize-targets", normalize_targets is not None),
        ("--normalize-targets-by", bool(legacy_by)),
        ("--log-transform-targets", bool(log_transform_targets)),
    ) if on]
    warnings: list[str] = []
    if target_transform is not None:
        if target_transform not in TARGET_TRANSFORMS:
            raise AamError(f"unknown target transform {target_transform!r}", source="--target-transform",
                           hint=f"choose one of {', '.join(TARGET_TRANSFORMS)}")
        name = target_transform
        warnings += [f"{flag} is deprecated and ignored because --target-transform is given" for flag in given]
    elif legacy_by:
        name = "log-zscore-category" if log_transform_targets else "zscore-category"
        if by_columns and by_columns != legacy_by:
            raise AamError("--normalize-targets-by and --normalize-by name different columns",
                           source="--normalize-targets-by", hint="give --normalize-by only")
        by_columns = legacy_by
        warnings.append(f"{' and '.join(given)} {'are' if len(given) > 1 else 'is'} deprecated; use "
                        f"--target-transform {name} --normalize-by {','.join(legacy_by)}")
    elif log_transform_targets:
        name = "log-minmax"
        warnings.append("--log-transform-targets is deprecated; use --target-transform log-minmax "
                        "(or log-zscore)")
        if normalize_targets is False:
            warnings.append("--no-normalize-targets is ignored with --log-transform-targets (no log-only "
                            "transform); using log-minmax")
    elif normalize_targets is not None:
        name = "minmax" if normalize_targets else "none"
        warnings.append(f"{given[0]} is deprecated; use --target-transform {name}")
    elif by_columns:
        name = "zscore-category"
    else:
        return None, [], warnings

    if name in GROUPED_TRANSFORMS and not by_columns:
        raise AamError(f"--target-transform {name} needs the columns to group by", source="--normalize-by",
                       hint="e.g. --normalize-by body_site")
    if name not in GROUPED_TRANSFORMS and by_columns:
        raise AamError(f"--normalize-by only applies to zscore-category, not {name}", source="--normalize-by")
    return name, by_columns, warnings
