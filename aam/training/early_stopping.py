"""Early stopping on the selected validation metric: best value and epoch, epochs without improvement."""

from __future__ import annotations

import logging
import math
from typing import Any

from aam.objectives.metrics import metric_direction

log = logging.getLogger("aam.training.trainer")


class EarlyStopping:
    """Follows ``metric`` (``val_`` prefix optional) in the direction :func:`metric_direction` gives it.

    An epoch without a finite value counts as not improving. :attr:`should_stop` once ``patience`` epochs
    in a row did not improve. Its state rides in checkpoints; a resumed run with another metric starts over.
    """

    def __init__(self, metric: str, patience: int):
        self.metric = metric
        self.key = metric if metric.startswith("val_") else f"val_{metric}"
        self.patience = patience
        self.minimise = metric_direction(metric) == "min"
        self.best_value = math.inf if self.minimise else -math.inf
        self.best_epoch = -1
        self.epochs_without_improvement = 0

    def update(self, metrics: dict[str, float], epoch: int) -> bool:
        """Record ``epoch``'s metrics; True when the metric improved (a new best)."""
        value = metrics.get(self.key)
        if value is None or not math.isfinite(value):
            log.warning("best metric %s is not available this epoch (have: %s)", self.key, ", ".join(metrics))
            self.epochs_without_improvement += 1
            return False
        better = value < self.best_value if self.minimise else value > self.best_value
        if better:
            self.best_value, self.best_epoch, self.epochs_without_improvement = value, epoch, 0
        else:
            self.epochs_without_improvement += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.epochs_without_improvement >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best_metric_name": self.metric, "best_value": self.best_value, "best_epoch": self.best_epoch,
                "epochs_without_improvement": self.epochs_without_improvement}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("best_metric_name") == self.metric:
            self.best_value = state["best_value"]
            self.best_epoch = state["best_epoch"]
            self.epochs_without_improvement = state["epochs_without_improvement"]
