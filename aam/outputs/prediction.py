"""Turning model outputs back into answers in the target's original units.

Regression outputs are in transformed units (z-scores, min-max, logs); the fitted
:class:`~aam.data.normalization` transform maps them back, per sample for per-category transforms.
Classifier outputs are log-probabilities; they become a class label and one probability column per class.
Used by validation (metrics, ``val_predictions.tsv``) and by ``aam predict``, so both agree exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch


class PredictionDecoder:
    """Decodes a batch's ``prediction`` tensor into a DataFrame in original units.

    Args:
        transform: fitted target transform with ``inverse(y, groups)`` (regression), or None.
        groups: per-sample group keys aligned with ``AmpliconData`` rows (for per-category transforms).
        classifier: whether outputs are log-probabilities over ``class_labels``.
        class_labels: class names in output order (classifier).
        quantiles: quantile levels of a quantile head; the median (or nearest) column is the point prediction.
        actual: original-unit targets (or class labels) aligned with ``AmpliconData`` rows, for ``actual``.
    """

    def __init__(self, *, transform: Any = None, groups: np.ndarray | None = None, classifier: bool = False,
                 class_labels: Sequence[str] = (), quantiles: Sequence[float] | None = None,
                 actual: np.ndarray | None = None):
        self.transform = transform
        self.groups = groups
        self.classifier = classifier
        self.class_labels = [str(c) for c in class_labels]
        self.quantiles = list(quantiles) if quantiles else None
        self.actual = actual

    @property
    def n_classes(self) -> int:
        return len(self.class_labels)

    @property
    def probability_columns(self) -> list[str]:
        return [f"prob_{label}" for label in self.class_labels]

    def _groups_for(self, sample_index: np.ndarray) -> np.ndarray | None:
        return None if self.groups is None else self.groups[sample_index]

    def decode(self, prediction: torch.Tensor, sample_index: np.ndarray) -> pd.DataFrame:
        """``prediction`` [B, out_dim] or [B, 1, Q] -> a frame with ``prediction`` (+ quantiles/probabilities)."""
        prediction = prediction.detach().float().cpu()
        columns: dict[str, Any] = {}
        if self.classifier:
            probabilities = prediction.exp().numpy()  # [B, C]
            best = probabilities.argmax(1)
            columns["prediction"] = [self.class_labels[i] for i in best]
            columns["prediction_index"] = best
            for name, values in zip(self.probability_columns, probabilities.T):
                columns[name] = values
            return pd.DataFrame(columns)
        groups = self._groups_for(sample_index)
        if prediction.dim() == 3:  # quantiles [B, 1, Q]
            values = prediction[:, 0, :].numpy().astype(np.float64)
            values = np.stack([self._inverse(values[:, q], groups) for q in range(values.shape[1])], axis=1)
            values = np.sort(values, axis=1)  # monotone transforms keep order; sort guards against crossing
            median = int(np.argmin([abs(q - 0.5) for q in self.quantiles])) if self.quantiles else 0
            columns["prediction"] = values[:, median]
            for q, column in zip(self.quantiles or [], values.T):
                columns[f"quantile_{q:g}"] = column
        else:
            columns["prediction"] = self._inverse(prediction[:, 0].numpy().astype(np.float64), groups)
        return pd.DataFrame(columns)

    def _inverse(self, values: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
        if self.transform is None:
            return values
        return np.asarray(self.transform.inverse(values, groups=groups), dtype=np.float64)

    def decode_batch(self, prediction: torch.Tensor, batch) -> pd.DataFrame:
        """Decoded predictions of a validation batch with ``sample_id`` and ``actual`` columns."""
        sample_index = batch.sample_index.detach().cpu().numpy()
        frame = self.decode(prediction, sample_index)
        frame.insert(0, "sample_id", list(batch.sample_ids))
        if self.actual is not None:
            actual = self.actual[sample_index]
            frame.insert(2, "actual", actual)
            if self.classifier:
                index = {label: i for i, label in enumerate(self.class_labels)}
                frame["actual_index"] = [index.get(str(a), -1) for a in actual]
        return frame

    @staticmethod
    def concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
        return pd.concat(frames, ignore_index=True)
