"""``aam train --model-type sequence-groups --blend-baselines forest,clr-linear,...`` (``--forest-blend``: the
forest alone): classical baselines fitted beside the model, and the weights of their average chosen on the
training samples' inner cross-validation.

Each baseline (``aam.baselines.estimators``) is cross-validated on the same inner folds that chose the model's
shrinkage. ``--blend-weights inner-cv`` scores every weighting of the model and the baselines on a grid of step
0.1 (weights summing to 1) on the pooled inner out-of-fold predictions (MAE, or AUROC for classifiers; ties go
to the weighting nearest to equal weights); ``equal`` gives every member the same weight without looking. The
baselines are then refitted on every training sample and saved beside the checkpoint as one averaged model
(``forest.joblib``), and the checkpoint records the baselines' total weight: ``aam predict --forest
RUN/forest.joblib`` uses both. No sample outside the training set is seen, so the weights are a nested choice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

from aam.baselines import BASELINES
from aam.baselines.estimators import BaselineBlend
from aam.baselines.store import save_forest
from aam.objectives.scoring import probability_columns, score_predictions

log = logging.getLogger("aam")

BLEND_WEIGHTS = tuple(round(float(w), 2) for w in np.linspace(0.0, 1.0, 11))
FOREST_FILE = "forest.joblib"


@dataclass
class BlendChoice:
    """The chosen weights (``weight``: the baselines' total; ``baseline_weights``: each one's share of it) and
    the pooled inner score of every weighting tried."""

    weight: float
    metric: str
    grid: list[dict[str, float]]
    model_score: float | None  # None: the model was fitted without an inner score
    forest_score: float | None  # the baselines' own average (equal shares) alone; None when not measured
    baseline_weights: dict[str, float] = field(default_factory=lambda: {"forest": 1.0})
    mode: str = "inner-cv"

    def to_dict(self) -> dict:
        return {"weight": self.weight, "baseline_weights": self.baseline_weights, "mode": self.mode,
                "metric": self.metric, "grid": self.grid, "model_inner": self.model_score,
                "baselines_inner": self.forest_score, "file": FOREST_FILE}


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


def blend_many(frames: list[pd.DataFrame], weights: list[float], classifier: bool) -> pd.DataFrame:
    """The weighted average of several prediction tables (the first one's samples and order)."""
    out = frames[0]
    done = weights[0]
    for frame, weight in zip(frames[1:], weights[1:]):
        if weight <= 0:
            continue
        done += weight
        out = blend(out, frame, weight / done, classifier)
    return out


def weightings(n_members: int, step: float = 0.1) -> list[tuple[float, ...]]:
    """Every weighting of ``n_members`` on a grid of ``step`` whose weights sum to 1 (the model first)."""
    ticks = int(round(1 / step))
    return [tuple(k / ticks for k in combo) for combo in product(range(ticks + 1), repeat=n_members)
            if sum(combo) == ticks]


def choose_weights(model: pd.DataFrame, baselines: dict[str, pd.DataFrame], classifier: bool,
                   mode: str = "inner-cv") -> BlendChoice:
    """The weighting of ``model`` and ``baselines`` (out-of-fold tables with ``actual``) that scores best
    (``inner-cv``), or equal weights (``equal``)."""
    if len(baselines) == 1 and mode == "inner-cv":
        (name, frame), = baselines.items()
        choice = choose_weight(model, frame, classifier)
        choice.baseline_weights = {name: 1.0}
        return choice
    metric = "auroc" if classifier else "mae"
    sign = 1.0 if classifier else -1.0
    names = list(baselines)
    frames = [model] + [baselines[n] for n in names]
    equal = tuple([1.0 / len(frames)] * len(frames))
    candidates = [equal] if mode == "equal" else weightings(len(frames))

    def score(weights: tuple[float, ...]) -> float:
        return score_predictions(blend_many(frames, list(weights), classifier), classifier)[metric]

    grid = [{"aam": w[0], **dict(zip(names, w[1:])), metric: score(w)} for w in candidates]
    values = np.array([sign * row[metric] for row in grid])
    values = np.where(np.isfinite(values), values, -np.inf)
    best = [i for i, v in enumerate(values) if v >= values.max() - 1e-12]
    chosen = candidates[min(best, key=lambda i: sum(abs(a - b) for a, b in zip(candidates[i], equal)))]
    total = 1.0 - chosen[0]
    shares = ({n: w / total for n, w in zip(names, chosen[1:])} if total > 0
              else {n: 1.0 / len(names) for n in names})
    return BlendChoice(round(total, 2), metric, grid, score((1.0,) + (0.0,) * len(names)),
                       score((0.0,) + (1.0 / len(names),) * len(names)), shares, mode)


def baseline_out_of_fold(name: str, counts: sparse.csr_matrix, target: np.ndarray, sample_ids: list[str],
                         splits: list, groups: np.ndarray | None, classifier: bool, seed: int,
                         incidence: sparse.csr_matrix | None = None) -> pd.DataFrame:
    """The baseline's predictions of each inner fold's samples by a fit on the other folds (in original units);
    ``incidence``: the tree over the count columns, for the baselines that read clades."""
    method = BASELINES[name]
    oof = pd.DataFrame({"sample_id": sample_ids, "actual": target})
    labels = np.unique(target) if classifier else None
    predicted = np.zeros((len(target), len(labels))) if classifier else np.zeros(len(target))
    for train, test in splits:
        model = method.fit(counts[train], target[train], classifier=classifier, seed=seed,
                           groups=None if groups is None else groups[train], incidence=incidence)
        if classifier:
            columns = [list(labels).index(c) for c in model.classes_]
            predicted[np.ix_(test, columns)] = model.predict_proba(counts[test])
        else:
            predicted[test] = model.predict(counts[test])
    if classifier:
        for k, label in enumerate(labels):
            oof[f"prob_{label}"] = predicted[:, k]
        oof["prediction"] = labels[predicted.argmax(1)]
    else:
        oof["prediction"] = predicted
    return oof


def fit_baseline_blend(counts: sparse.csr_matrix, feature_ids: list[str], sample_ids: list[str], actual: np.ndarray,
                       splits: list, model_oof: pd.DataFrame | None, classifier: bool, column: str, seed: int,
                       output_dir: Path | None, names: tuple[str, ...] = ("forest",), mode: str = "inner-cv",
                       groups: np.ndarray | None = None, tree: str | None = None) -> BlendChoice:
    """Cross-validate each baseline of ``names`` on ``splits`` (index pairs over ``sample_ids``) and choose the
    weights against ``model_oof`` (the model's inner out-of-fold table in original units), or take equal weights
    (``mode="equal"``, no baseline cross-validated); fit the baselines on every sample and save their weighted
    average to ``output_dir/forest.joblib`` (when given); ``tree``: the phylogeny read by the ``*-clades``
    baselines."""
    counts = sparse.csr_matrix(counts)
    incidence = None
    if any(BASELINES[n].uses_tree for n in names):
        from aam.unifrac.tree import tree_incidence

        incidence = tree_incidence(tree, feature_ids)
    target = np.asarray([str(a).strip() for a in actual]) if classifier else np.asarray(actual, dtype=np.float64)
    if mode == "equal":  # nothing to choose: no inner cross-validation of the baselines
        metric = "auroc" if classifier else "mae"
        share = 1.0 / (len(names) + 1)
        model_score = None if model_oof is None else score_predictions(model_oof, classifier)[metric]
        choice = BlendChoice(round(1.0 - share, 2), metric, [], model_score,
                             None, {name: 1.0 / len(names) for name in names}, mode)
    else:
        oofs = {name: baseline_out_of_fold(name, counts, target, sample_ids, splits, groups, classifier, seed,
                                           incidence) for name in names}
        choice = choose_weights(model_oof, oofs, classifier, mode)
    inner = "" if choice.forest_score is None else f", baselines {choice.forest_score:.4g}"
    scored = "" if choice.model_score is None else f" (pooled inner {choice.metric}: model {choice.model_score:.4g}{inner})"
    log.info("baseline blend (%s): weight %.2f on %s, %s%s", ", ".join(names), choice.weight,
             " + ".join(f"{w:.2f} {n}" for n, w in choice.baseline_weights.items()),
             "chosen by the inner cross-validation" if mode == "inner-cv" else "equal weights", scored)
    if output_dir is not None:
        members = {name: BASELINES[name].fit(counts, target, classifier=classifier, seed=seed, groups=groups,
                                             incidence=incidence) for name in names}
        model = members[names[0]] if len(names) == 1 else BaselineBlend(members, choice.baseline_weights, classifier)
        save_forest(output_dir / FOREST_FILE, model, feature_ids, classifier, column, baseline="+".join(names))
    return choice
