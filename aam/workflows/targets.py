"""The target of ``aam train``: which samples carry a usable value, the class labels or the target transform
fitted on the training samples, and the per-row arrays the loaders and the prediction decoder read. Every
model family uses the same, so predictions decode alike."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from aam.data.categorical import CategoricalEncoder, category_keys
from aam.data.metadata import numeric_target
from aam.data.normalization import DEFAULT_REGRESSION_TRANSFORM, TARGET_TRANSFORMS, resolve_target_transform
from aam.errors import AamError
from aam.workflows.run_config import TrainRun

log = logging.getLogger("aam")


@dataclass
class TargetSetup:
    """Targets of the usable samples, in model units, with what is needed to decode predictions."""

    ids: list[str]  # usable sample ids, table order
    actual: np.ndarray  # original units (float) or class labels (str), aligned with ids
    model_targets: np.ndarray  # transformed float32, or int64 class index
    transform: Any = None
    transform_name: str = "none"
    normalize_by: list[str] | None = None
    class_labels: list[str] | None = None


def ids_with_target(metadata: pd.DataFrame, column: str, ids: list[str], run: TrainRun) -> list[str]:
    """Ids whose target is usable: numeric and finite (regression) or present (classification)."""
    if run.classifier:
        values = metadata.loc[ids, column]
        keep = values.notna() & (values.astype(str).str.strip() != "")
        dropped = int((~keep).sum())
        if dropped:
            log.warning("%d sample(s) without a value in %r are left out", dropped, column)
        kept = [i for i, k in zip(ids, keep.to_numpy()) if k]
        if not kept:
            raise AamError(f"no sample has a value in column {column!r}", source=run.metadata)
        return kept
    target = numeric_target(metadata.loc[ids], column, source=run.metadata)
    present = set(target.index)
    return [i for i in ids if i in present]


def fit_targets(run: TrainRun, metadata: pd.DataFrame, column: str, train_ids: list[str],
                 ids: list[str]) -> TargetSetup:
    """Class labels (classifier) or the target transform fitted on the training split only."""
    if run.classifier:
        labels = metadata.loc[ids, column].astype(str).str.strip().to_numpy()
        class_labels = sorted(set(labels))
        if len(class_labels) < 2:
            raise AamError(f"column {column!r} has a single class ({class_labels[0]!r})", source=run.metadata)
        if run.out_dim not in (1, len(class_labels)):
            raise AamError(f"column {column!r} has {len(class_labels)} classes, not {run.out_dim}",
                           source="--out-dim", hint=f"use --out-dim {len(class_labels)} or leave it out")
        index = {label: i for i, label in enumerate(class_labels)}
        return TargetSetup(ids, labels, np.array([index[v] for v in labels], dtype=np.int64),
                           class_labels=class_labels)
    if run.out_dim != 1:
        raise AamError("regression predicts one column", source="--out-dim",
                       hint="use --out-dim 1, or --classifier for classes")
    actual = metadata.loc[ids, column].astype(float).to_numpy()
    train_values = actual[np.isin(np.asarray(ids, dtype=object), np.asarray(train_ids, dtype=object))]
    if np.ptp(train_values) == 0:
        raise AamError(f"column {column!r} has one value ({train_values[0]:g}) in all {len(train_values)} training "
                       "samples: there is nothing to learn", source="--metadata-column",
                       hint="choose a column that varies between samples")
    name, by_columns, messages = resolve_target_transform(
        run.target_transform, run.normalize_targets, run.normalize_targets_by,
        run.log_transform_targets, run.normalize_by)
    for message in messages:
        warnings.warn(message, FutureWarning, stacklevel=2)
        log.warning(message)
    name = name or DEFAULT_REGRESSION_TRANSFORM
    transform = TARGET_TRANSFORMS[name]()
    groups = category_keys(metadata, ids, by_columns) if by_columns else None
    train_mask = np.isin(np.asarray(ids, dtype=object), np.asarray(train_ids, dtype=object))
    transform.fit(actual[train_mask], None if groups is None else groups[train_mask])
    model_targets = np.asarray(transform.transform(actual, groups), dtype=np.float32)
    return TargetSetup(ids, actual, model_targets, transform, name, by_columns or None)


def row_arrays(n_rows: int, rows: np.ndarray, setup: TargetSetup, encoder: CategoricalEncoder | None,
                metadata: pd.DataFrame, ids: list[str]) -> dict[str, np.ndarray | None]:
    """Targets, original values, transform groups and categorical codes indexed by AmpliconData row."""
    targets = np.zeros(n_rows, dtype=setup.model_targets.dtype)
    targets[rows] = setup.model_targets
    actual = np.empty(n_rows, dtype=object if setup.class_labels else np.float64)
    actual[rows] = setup.actual
    groups = None
    if setup.normalize_by:
        groups = np.empty(n_rows, dtype=object)
        groups[rows] = category_keys(metadata, ids, setup.normalize_by)
    categoricals = None
    if encoder is not None:
        categoricals = np.zeros((n_rows, len(encoder.columns)), dtype=np.int64)
        categoricals[rows] = encoder.transform(metadata, ids)
    return {"targets": targets, "actual": actual, "groups": groups, "categoricals": categoricals}
