"""``report.html`` of ``aam cross-validate``, read from its output folder (``summary.json``, ``comparison.tsv``,
``oof_predictions.tsv``, ``cv_config.json``): scores of AAM and every baseline on the same folds, ROC and
precision-recall curves, confusion matrices and per-group calls (classification), predicted vs actual and errors
by group (regression)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aam.objectives.metrics import metric_direction
from aam.objectives.scoring import confusion_counts
from aam.reporting import figures
from aam.reporting.figures import positive_class
from aam.reporting.page import ReportPage, standard_facts

MAX_CLASS_CURVES = 6  # one-vs-rest curve pairs drawn for a multi-class task
GROUPS_SHOWN = 60  # groups drawn and listed per figure and table (the files hold them all)


def _shown(n_groups: int) -> str:
    return f" ({GROUPS_SHOWN} of {n_groups} groups shown)." if n_groups > GROUPS_SHOWN else "."


def write_cross_validation_report(out: str | Path, defaults: dict[str, Any] | None = None) -> Path:
    """Write ``out/report.html`` from the finished outputs of a cross-validation in ``out``; return its path.
    ``defaults``: the options' defaults (a command rebuilt from options lists only the others)."""
    out = Path(out)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    config = json.loads((out / "cv_config.json").read_text(encoding="utf-8"))
    comparison = pd.read_csv(out / "comparison.tsv", sep="\t", dtype={"fold": str})
    oof = pd.read_csv(out / "oof_predictions.tsv", sep="\t", dtype={"sample_id": str, "fold": str, "group": str})
    options = config.get("options", {})
    methods = [name for name, part in summary.items() if isinstance(part, dict) and "pooled" in part]
    classifier = summary["metric"] == "auroc"
    page = ReportPage(title=f"AAM cross-validation: {summary['target']}", headline=_headline(summary, methods),
                      facts=_facts(summary, config, oof, options, defaults))
    _scores(page, summary, comparison, methods)
    if classifier:
        _classification(page, oof, methods)
    else:
        _regression(page, oof, methods, summary["target"])
    _groups(page, oof, methods, classifier, options.get("group_column"), summary["target"])
    page.section("Per fold")
    page.table(comparison, caption="comparison.tsv: every method's scores per fold, the pooled out-of-fold scores, "
                                   "the mean and sd over folds, and who won each fold")
    page.text(f"Files in {out}: comparison.tsv, oof_predictions.tsv (every sample's out-of-fold prediction by "
              "every method), summary.json, folds.tsv, each baseline's folder, folds/<fold>/ (the AAM runs).",
              note=True)
    return page.write(out / "report.html")


def _headline(summary: dict[str, Any], methods: list[str]) -> str:
    metric, n = summary["metric"], summary["n_folds"]
    label, by_fold = metric.upper(), summary["scored_on"] == "fold_mean"

    def score(name: str) -> str:
        part = summary[name]
        if not by_fold:
            return f"{label} {part['pooled'][metric]:.3f} (pooled)"
        return f"{label} {part['fold_mean'][metric]:.3f} +/- {part['fold_sd'].get(metric, float('nan')):.2f}"

    text = f"Over {n} folds of {summary['n_samples']} samples AAM scored {score('aam')}"
    best_baseline = summary.get("best_baseline")
    if best_baseline:
        text += f"; the best classical baseline, {best_baseline}, {score(best_baseline)}"
        if by_fold:
            text += f"; AAM was better on {summary['aam_fold_wins']} of {n} folds"
    best = summary["best_method"]
    text += f". Best method on the {'mean fold' if by_fold else 'pooled'} score: {best}" + (
        f" ({score(best)})." if best != "aam" and best != best_baseline else ".")
    if not by_fold:
        text += f" No fold has its own {label} (each holds one class), so the pooled out-of-fold scores decide."
    return text


def _facts(summary: dict[str, Any], config: dict[str, Any], oof: pd.DataFrame, options: dict[str, Any],
           defaults: dict[str, Any] | None) -> list[tuple[str, str]]:
    facts = standard_facts("cross-validate", options, defaults)
    facts.insert(1, ("data", f"table {options.get('table')}, metadata {options.get('metadata')}, "
                             f"target {summary['target']!r}"))
    task = "classification" if summary["metric"] == "auroc" else "regression"
    facts.insert(2, ("samples", f"{summary['n_samples']} scored out of fold ({task}), {summary['n_folds']} folds: "
                                + ", ".join(f"{k} ({v})" for k, v in config.get("folds", {}).items())))
    if "group" in oof.columns:
        facts.insert(3, ("groups", f"{oof['group'].nunique()} groups of {options.get('group_column')!r}; "
                                   "every group's samples in one fold"))
    members = config.get("members") or []
    facts.insert(4 if "group" in oof.columns else 3, ("AAM recipe", f"model type {options.get('model_type')}, "
                                                                   f"{len(members)} model(s) per fold"))
    return facts


def _scores(page: ReportPage, summary: dict[str, Any], comparison: pd.DataFrame, methods: list[str]) -> None:
    metric = summary["metric"]
    page.section("Scores", "Every method was scored on the same folds; no method saw a fold's samples before "
                           "predicting them. 'blend' is the equal-weight average of AAM and the baselines.")
    keys = list(summary["aam"]["pooled"])
    rows = []
    for name in methods:
        part = summary[name]
        row: dict[str, Any] = {"method": name}
        for key in keys:
            row[f"{key} (mean +/- sd over folds)"] = (f"{part['fold_mean'].get(key, np.nan):.4g} +/- "
                                                      f"{part['fold_sd'].get(key, np.nan):.2g}")
        row[f"{metric} pooled"] = part["pooled"].get(metric)
        if "by_group" in part:
            row[f"{metric} of group means"] = part["by_group"].get(metric)
        if name in summary.get("aam_fold_wins_vs", {}):
            row["folds AAM won against it"] = f"{summary['aam_fold_wins_vs'][name]} of {summary['n_folds']}"
        rows.append(row)
    page.table(pd.DataFrame(rows), caption=f"Best on the {'mean fold' if summary['scored_on'] == 'fold_mean' else 'pooled'} "
                                               f"{metric.upper()}: {summary['best_method']}")
    folds = comparison[~comparison["fold"].isin(["pooled", "mean", "sd"])]
    page.figure(figures.fold_scores({m: folds[f"{m}_{metric}"].to_numpy(float) for m in methods},
                                    folds["fold"].tolist(), metric, metric_direction(metric) == "max"),
                caption=f"{metric.upper()} of each method on each outer fold; grey lines join one fold's scores.",
                alt=f"{metric} per fold and method")


def _labels(oof: pd.DataFrame) -> list[str]:
    prefix = "aam_prob_"
    return [c[len(prefix):] for c in oof.columns if c.startswith(prefix)]


def _classification(page: ReportPage, oof: pd.DataFrame, methods: list[str]) -> None:
    labels = _labels(oof)
    actual = oof["actual"].astype(str).to_numpy()
    page.section("ROC and precision-recall curves",
                 "Bold: all out-of-fold predictions pooled; thin: each fold. Dashed: chance.")
    targets = [positive_class(labels, actual)] if len(labels) == 2 else labels[:MAX_CLASS_CURVES]
    for label in targets:
        scored = [figures.ScoredMethod(m, oof[f"{m}_prob_{label}"].to_numpy(float),
                                       (actual == label).astype(int), oof["fold"].to_numpy()) for m in methods]
        title = "" if len(labels) == 2 else f"{label} vs the other classes"
        page.figure(figures.roc_and_pr(scored, label, title),
                    caption=f"Curves for {label!r} as the positive class" + (
                        " (one vs the rest)." if len(labels) > 2 else "."), alt=f"ROC and PR curves, {label}")
    if len(labels) > 2 and len(labels) > MAX_CLASS_CURVES:
        page.text(f"Curves of the first {MAX_CLASS_CURVES} of {len(labels)} classes.", note=True)
    page.section("Confusion matrices", "Pooled out-of-fold calls (the most probable class).")
    matrices = {m: confusion_counts(actual, oof[f"{m}_prediction"].astype(str), labels) for m in methods}
    page.figure(figures.confusion_matrices(matrices, labels), caption="Rows: true class; columns: predicted class; "
                "colour: share of the true class.", alt="confusion matrices")


def _regression(page: ReportPage, oof: pd.DataFrame, methods: list[str], target: str) -> None:
    page.section("Predicted vs actual", "Every sample's out-of-fold prediction; dashed: prediction = actual.")
    pairs = {m: (oof["actual"].to_numpy(float), oof[f"{m}_prediction"].to_numpy(float)) for m in methods}
    page.figure(figures.predicted_vs_actual(pairs, target), caption=f"Out-of-fold predictions of {target!r}.",
                alt="predicted vs actual per method")


def _groups(page: ReportPage, oof: pd.DataFrame, methods: list[str], classifier: bool, group_column: str | None,
            target: str) -> None:
    if "group" not in oof.columns:
        return
    page.section(f"Per group ({group_column})", "Each group's samples were predicted by models that never saw "
                                                "that group.")
    grouped = oof.groupby("group", sort=True)
    if classifier:
        labels = _labels(oof)
        if len(labels) != 2 or (grouped["actual"].nunique() > 1).any():
            right = pd.DataFrame({m: grouped.apply(lambda g, m=m: float(np.mean(
                g[f"{m}_prediction"].astype(str) == g["actual"].astype(str)))) for m in methods})
            page.figure(figures.group_errors(right, methods, "", xlabel="share of the group's samples called right",
                                             worst_last=False, limit=GROUPS_SHOWN),
                        caption="Groups hold samples of more than one class, so no group has one call: the share "
                                "of each group's samples called right, the groups AAM does worst on at the top"
                                + _shown(len(right)), alt="per-group accuracy")
            table = right.sort_values(methods[0]).reset_index()
            table.insert(1, "samples", grouped.size().reindex(table["group"]).to_numpy())
            page.table(table, caption="per group (groups.tsv has every score of every group)", max_rows=60)
            return
        positive = positive_class(labels, oof["actual"].astype(str).to_numpy())
        calls = pd.DataFrame({m: grouped[f"{m}_prob_{positive}"].mean() for m in methods})
        calls["actual"] = grouped["actual"].first().astype(str)
        page.figure(figures.group_calls(calls, methods, positive, limit=GROUPS_SHOWN),
                    caption=f"One call per group: the mean probability of {positive!r} over its samples; right of "
                            "the dashed line the group is called positive" + _shown(len(calls)), alt="per-group calls")
        table = calls.reset_index()
    else:
        errors = pd.DataFrame({m: grouped.apply(lambda g, m=m: float(np.mean(np.abs(g[f"{m}_prediction"] -
                                                                                     g["actual"]))))
                               for m in methods})
        page.figure(figures.group_errors(errors, methods, target, limit=GROUPS_SHOWN),
                    caption="Mean absolute error of each group's samples; groups AAM errs most on at the top"
                            + _shown(len(errors)), alt="errors by group")
        table = errors.sort_values(methods[0], ascending=False).reset_index()
    table.insert(1, "samples", grouped.size().reindex(table["group"]).to_numpy())
    page.table(table, caption="per group", max_rows=GROUPS_SHOWN)
