"""Metric names and which way is better, importable without torch (the CLI's --best-metric choices, the
trainer config's checks)."""

from __future__ import annotations

BEST_METRICS = ("val_loss", "r2", "mae", "accuracy", "f1")  # --best-metric choices
_MINIMISED = {"loss", "val_loss", "mae", "mse", "rmse"}
_MAXIMISED = {"r2", "accuracy", "f1", "f1_macro", "f1_weighted", "auroc"}


def metric_direction(name: str) -> str:
    """``'min'`` or ``'max'`` for a metric name (``val_`` prefix allowed: ``val_mae`` is ``mae``)."""
    key = name[4:] if name.startswith("val_") and name != "val_loss" else name
    if key in _MINIMISED:
        return "min"
    if key in _MAXIMISED:
        return "max"
    raise ValueError(f"unknown metric {name!r}; choose from {', '.join(BEST_METRICS)}")
