"""``aam train --forest-blend``: a random forest fitted beside the model, and the weight of their average chosen
on the training samples' inner cross-validation.

The forest (relative abundances, the ``aam rf-baseline`` settings) is cross-validated on the same inner folds
that chose the model's shrinkage; each weight w of ``(1 - w) x model + w x forest`` is scored on the pooled
inner out-of-fold predictions (MAE, or AUROC for classifiers; ties go to the weight nearest 0.5, the fixed
default of ``aam predict --forest``). The forest is then refitted on every training sample and saved beside the
checkpoint, which records the weight: ``aam predict --forest RUN/forest.joblib`` uses it. No sample outside the
training set is seen, so the weight is a nested choice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

from aam.training.baselines import FOREST
from aam.workflows.rf_baseline import save_forest
from aam.workflows.scoring import probability_columns, score_predictions

log = logging.getLogger("aam")

BLEND_WEIGHTS = tuple(round(float(w), 2) for w in np.linspace(0.0, 1.0, 11))
FOREST_FILE = "forest.joblib"


@dataclass
class BlendChoice:
    """The chosen forest weight and every weight's pooled inner score."""

    weight: float
    metric: str
    grid: list[dict[str, float]]
    model_score: float
    forest_score: float

    def to_dict(self) -> dict:
        return {"weight": self.weight, "metric": self.metric, "grid": self.grid, "model_inner": self.model_score,
                "forest_inner": self.forest_score, "file": FOREST_FILE}


def blend(model: pd.DataFrame, forest: pd.DataFrame, weight: float, classifier: bool) -> pd.DataFrame:
    """``(1 - weight) x model + weight x forest`` sample by sample (class probabilities and their argmax for
    classifiers); both frames hold ``sample_id``, ``prediction`` and ``prob_<class>`` columns."""
    forest = forest.set_index("sample_id").loc[model["sample_id"]]
    out = model.copy()
    if not classifier:
        out["prediction"] = ((1 - weight) * model["prediction"].to_numpy(float)
                             + weight * forest["prediction"].to_numpy(float))
        return out
    columns = sorted(set(probability_columns(model)) | set(probability_columns(forest)))
    mixed = ((1 - weight) * model.reindex(columns=columns).fillna(0.0).to_numpy(float)
             + weight * forest.reindex(columns=columns).fillna(0.0).to_numpy(float))
    out[columns] = mixed
    out["prediction"] = [columns[k][len("prob_"):] for k in mixed.argmax(1)]
    return out


def choose_weight(model: pd.DataFrame, forest: pd.DataFrame, classifier: bool) -> BlendChoice:
    """The forest weight whose blend of the two out-of-fold tables (with ``actual``) scores best."""
    metric = "auroc" if classifier else "mae"
    sign = 1.0 if classifier else -1.0  # higher is better after the sign
    grid = [{"forest_weight": w, metric: score_predictions(blend(model, forest, w, classifier), classifier)[metric]}
            for w in BLEND_WEIGHTS]
    values = np.array([sign * row[metric] for row in grid])
    values = np.where(np.isfinite(values), values, -np.inf)
    best = [i for i, v in enumerate(values) if v >= values.max() - 1e-12]
    chosen = min(best, key=lambda i: abs(BLEND_WEIGHTS[i] - 0.5))
    return BlendChoice(BLEND_WEIGHTS[chosen], metric, grid, grid[0][metric], grid[-1][metric])


def fit_forest_blend(counts: sparse.csr_matrix, feature_ids: list[str], sample_ids: list[str], actual: np.ndarray,
                     splits: list, model_oof: pd.DataFrame, classifier: bool, column: str, seed: int,
                     output_dir: Path | None) -> BlendChoice:
    """Cross-validate the forest on ``splits`` (index pairs over ``sample_ids``), choose the weight against
    ``model_oof`` (the model's inner out-of-fold table in original units), refit the forest on every sample and
    save it to ``output_dir/forest.joblib`` (when given)."""
    from sklearn.model_selection import cross_val_predict

    features = sparse.csr_matrix(counts)
    target = np.asarray([str(a).strip() for a in actual]) if classifier else np.asarray(actual, dtype=np.float64)
    forest = FOREST.build(classifier=classifier, seed=seed, n_jobs=-1)  # a pipeline reading counts
    method = "predict_proba" if classifier else "predict"
    predicted = cross_val_predict(forest, features, target, cv=splits, method=method)
    oof = pd.DataFrame({"sample_id": sample_ids, "actual": target})
    if classifier:
        labels = np.unique(target)  # cross_val_predict's column order
        for k, label in enumerate(labels):
            oof[f"prob_{label}"] = predicted[:, k]
        oof["prediction"] = labels[predicted.argmax(1)]
    else:
        oof["prediction"] = predicted
    choice = choose_weight(model_oof, oof, classifier)
    log.info("forest blend: weight %.2f on the forest chosen by the inner cross-validation (pooled %s: model %.4g, "
             "forest %.4g, blend %.4g)", choice.weight, choice.metric, choice.model_score, choice.forest_score,
             next(r[choice.metric] for r in choice.grid if r["forest_weight"] == choice.weight))
    if output_dir is not None:
        forest.fit(features, target)
        save_forest(output_dir / FOREST_FILE, forest, feature_ids, classifier, column)
    return choice
