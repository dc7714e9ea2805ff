"""``report.html`` of ``aam train``, read from its run folder (``config.json``, ``val_predictions.tsv``, the best
checkpoint's model card) and the epoch history: learning curves, validation predictions and the model card; for
a sequence-groups model the inner cross-validation that chose its shrinkage."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aam.objectives.scoring import confusion_counts, probability_columns, score_predictions, typed_predictions
from aam.reporting import figures
from aam.reporting.page import ReportPage, standard_facts


def write_training_report(output_dir: str | Path, history: Sequence[Mapping[str, Any]], best_epoch: int | None,
                          card: str = "", architecture: Mapping[str, Any] | None = None,
                          defaults: Mapping[str, Any] | None = None) -> Path:
    """Write ``output_dir/report.html`` of a finished ``aam train`` run; return its path. ``best_epoch`` counts
    from 1 (None for a model fitted without epochs); ``card``: the model card as ``aam inspect`` prints it;
    ``defaults``: the options' defaults (a command rebuilt from options lists only the others)."""
    out = Path(output_dir)
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    options = config.get("options", {})
    classifier = bool(options.get("classifier"))
    target = str(options.get("metadata_column", "target"))
    groups = _read_json(out / "sequence_groups.json")
    scored = (out / "val_predictions.tsv").is_file()  # not for a model fitted without an inner score
    predictions = typed_predictions(pd.read_csv(out / "val_predictions.tsv", sep="\t", dtype={
        "sample_id": str, "actual": object, "prediction": object}), classifier) if scored else None
    headline = (_headline(score_predictions(predictions, classifier), classifier, best_epoch, history, groups,
                          len(predictions)) if predictions is not None
                else f"Fitted on {config.get('n_train')} samples without an inner score (--no-group-inner-score): "
                     "aam cross-validate scores this recipe on held-out folds.")
    page = ReportPage(title=f"AAM training: {target}", headline=headline,
                      facts=_facts(options, config, groups, defaults))
    if history:
        page.section("Learning curves")
        page.figure(figures.training_curves(history, best_epoch),
                    caption="Training and validation loss per epoch and the validation scores; the best epoch is the "
                            f"one with the best {options.get('best_metric') or 'validation score'}.",
                    alt="learning curves")
    if groups and groups.get("grid"):
        _inner_cv(page, groups)
    if predictions is not None:
        where = ("The inner out-of-fold predictions of every training sample" if groups
                 else f"Predictions of the {len(predictions)} validation samples at the best epoch")
        page.section("Validation predictions", f"{where} (val_predictions.tsv).")
        _predictions(page, predictions, classifier, target)
    if card:
        page.section("Model card", "As `aam inspect` prints it from checkpoints/best_model.pt.")
        page.preformatted(card)
        page.details("architecture", "\n".join(f"{k}: {v}" for k, v in (architecture or {}).items()))
    return page.write(out / "report.html")


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _headline(scores: dict[str, float], classifier: bool, best_epoch: int | None,
              history: Sequence[Mapping[str, Any]], groups: dict[str, Any] | None, n: int) -> str:
    shown = (f"AUROC {scores['auroc']:.3f}, accuracy {scores['accuracy']:.3f}" if classifier
             else f"MAE {scores['mae']:.4g}, R² {scores['r2']:.3f}")
    if groups:
        return (f"The inner cross-validation ({groups.get('inner_scheme')}) chose {groups.get('parameter')} = "
                f"{groups.get('chosen'):.4g}; its out-of-fold predictions of the {n} training samples scored {shown}.")
    return f"Best epoch {best_epoch} of {len(history)}: {shown} on the {n} validation samples."


def _facts(options: dict[str, Any], config: dict[str, Any], groups: dict[str, Any] | None,
           defaults: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    facts = standard_facts("train", options, dict(defaults or {}))
    facts.insert(1, ("data", f"table {options.get('table')}, metadata {options.get('metadata')}, "
                             f"target {options.get('metadata_column')!r}"
                             + (" (classification)" if options.get("classifier") else " (regression)")))
    facts.insert(2, ("samples", f"{config.get('n_train')} training, " + (
        f"{config.get('n_val')} validation" if not groups else "scored by an inner cross-validation (no validation "
        "split)" if groups.get("grid") else "not scored (--no-group-inner-score)")))
    if options.get("group_column"):
        facts.insert(3, ("groups", f"split by {options['group_column']!r}: each group on one side"))
    facts.insert(4 if options.get("group_column") else 3,
                 ("model", f"{options.get('model_type', 'transformer')}" + (
                     f", {groups.get('n_asvs')} ASVs" if groups else "")))
    return facts


def _inner_cv(page: ReportPage, groups: dict[str, Any]) -> None:
    page.section("Inner cross-validation", f"The shrinkage {groups.get('parameter')!r} was chosen by "
                                           f"{groups.get('inner_scheme')} on the training samples alone.")
    grid = pd.DataFrame(groups.get("grid") or [])
    if len(grid):
        scale = "" if groups.get("scoring") in ("auroc", "accuracy", "log_loss") else " on the standardised target"
        page.table(grid, caption=f"inner {groups.get('scoring')} per value{scale}; chosen: {groups.get('chosen'):.4g}")
    blend = groups.get("forest_blend")
    if blend:
        page.text("Blended with classical baselines: " + json.dumps(blend)[:600])


def _predictions(page: ReportPage, frame: pd.DataFrame, classifier: bool, target: str) -> None:
    if not classifier:
        page.figure(figures.predicted_vs_actual({"aam": (frame["actual"].to_numpy(float),
                                                         frame["prediction"].to_numpy(float))}, target),
                    caption=f"Predicted vs actual {target!r}; dashed: prediction = actual.", alt="predicted vs actual")
        return
    labels = [c[len("prob_"):] for c in probability_columns(frame)]
    actual = frame["actual"].to_numpy()
    matrix = confusion_counts(actual, frame["prediction"], labels)
    page.figure(figures.confusion_matrices({"aam": matrix}, labels),
                caption="Rows: true class; columns: predicted class (the most probable).", alt="confusion matrix")
    if len(labels) == 2 and len(set(actual)) == 2:
        positive = figures.positive_class(labels, actual)
        scored = figures.ScoredMethod("aam", frame[f"prob_{positive}"].to_numpy(float),
                                      (actual == positive).astype(int), np.zeros(len(frame)))
        page.figure(figures.roc_and_pr([scored], positive), caption=f"Curves for {positive!r} as the positive class.",
                    alt="ROC and PR curves")
