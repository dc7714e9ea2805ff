"""Scores of a prediction table (``sample_id``, ``prediction``, ``actual``, and ``prob_<class>`` for
classifiers), as ``aam train`` reports them: overall, per fold and per group, and of each group's mean."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from aam.objectives.metrics import ClassificationMetrics, RegressionMetrics

REGRESSION_KEYS = ("mae", "rmse", "r2")
CLASSIFICATION_KEYS = ("auroc", "accuracy", "f1_macro", "f1_weighted")


def typed_predictions(frame: pd.DataFrame, classifier: bool) -> pd.DataFrame:
    """``prediction`` and ``actual`` as labels (str, classification) or floats (regression), as read from a TSV."""
    kind = str if classifier else float
    return frame.assign(prediction=frame["prediction"].astype(kind), actual=frame["actual"].astype(kind))


def confusion_counts(actual, predicted, labels: list[str]) -> np.ndarray:
    """[C, C] counts of (true, called) class labels in the order of ``labels`` (rows: the true class)."""
    return pd.crosstab(pd.Categorical(actual, labels), pd.Categorical(predicted, labels), dropna=False).to_numpy()


def probability_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith("prob_")]


def score_predictions(frame: pd.DataFrame, classifier: bool) -> dict[str, float]:
    """MAE, RMSE and R^2 (regression) or AUROC, accuracy and F1 (classification, from ``prob_<class>``)."""
    if not classifier:
        scores = RegressionMetrics()
        scores.update(torch.tensor(frame["prediction"].to_numpy(np.float64)),
                      torch.tensor(frame["actual"].to_numpy(np.float64)))
        computed = scores.compute()
        return {k: computed[k] for k in REGRESSION_KEYS}
    columns = probability_columns(frame)
    labels = [c[len("prob_"):] for c in columns]
    index = {label: i for i, label in enumerate(labels)}
    target = torch.tensor([index.get(str(v), -1) for v in frame["actual"]])
    keep = target >= 0
    probabilities = torch.tensor(frame[columns].to_numpy(np.float64))
    scores = ClassificationMetrics(len(labels))
    scores.update(probabilities.clamp_min(1e-12).log()[keep], target[keep])
    computed = scores.compute()
    return {k: computed[k] for k in CLASSIFICATION_KEYS}


def scores_by(frame: pd.DataFrame, column: str, classifier: bool) -> pd.DataFrame:
    """One row of scores per value of ``column`` (e.g. fold or group), with its sample count ``n``.

    A group of one class has no AUROC (NaN); its accuracy still says how often it was called right.
    """
    rows = [{column: key, "n": len(part), **score_predictions(part, classifier)}
            for key, part in frame.groupby(column, sort=False)]
    return pd.DataFrame(rows)


def group_means(frame: pd.DataFrame, classifier: bool) -> pd.DataFrame | None:
    """One row per ``group`` (e.g. a person), with its sample count ``n``: the mean of its samples' predictions,
    as a call on the whole group.

    Regression: the mean prediction (and the mean ``actual`` when present). Classification: the mean class
    probabilities and the most probable class as ``prediction`` (and the group's label as ``actual``); ``None``
    when some group's samples carry different labels, since such a group has no single truth to score.
    """
    grouped = frame.groupby("group", sort=True)
    truth = "actual" in frame.columns
    if not classifier:
        means = grouped[["prediction"] + (["actual"] if truth else [])].mean()
    else:
        if truth and (grouped["actual"].nunique() > 1).any():
            return None
        columns = probability_columns(frame)
        means = grouped[columns].mean()
        labels = np.array([c[len("prob_"):] for c in columns])
        means.insert(0, "prediction", labels[means.to_numpy().argmax(axis=1)])
        if truth:
            means["actual"] = grouped["actual"].first().astype(str)
    means.insert(0, "n", grouped.size())
    return means.reset_index()
