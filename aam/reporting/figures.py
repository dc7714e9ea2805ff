"""The charts of the reports, drawn from arrays (no file reading here): ROC and precision-recall curves, per-fold
scores, confusion matrices, per-group calls and errors, predicted vs actual, training curves, top ASVs and the
deletion check. Each function returns a matplotlib figure drawn under ``report_style``; the page embeds and
closes it. Legends sit outside the data; each method keeps its colour (``style.method_colour``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

from aam.reporting.style import LOWERS, RAISES, class_colour, method_colour, plt, report_style


@dataclass(frozen=True)
class ScoredMethod:
    """One method's binary scores: out-of-fold score of the positive class and the truth (1 = positive),
    with the fold of each sample."""

    name: str
    score: np.ndarray  # [N]
    positive: np.ndarray  # [N] 0/1
    fold: np.ndarray  # [N]


def _outside_legend(figure, handles, labels, columns: int = 2) -> None:
    figure.legend(handles, labels, loc="outside lower center", ncols=columns, frameon=False)


def roc_and_pr(methods: Sequence[ScoredMethod], positive_label: str, title: str = "") -> plt.Figure:
    """ROC (left) and precision-recall (right) of every method on the same axes: the pooled out-of-fold curve
    bold, each fold's curve thin in the same colour; AUROC / AUPRC pooled and as the mean over folds."""
    with report_style():
        figure, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(10, 5.2), layout="constrained")
        handles, labels = [], []
        prevalence = float(np.mean(methods[0].positive)) if methods else 0.0
        for method in methods:
            colour = method_colour(method.name)
            for fold in (pd.unique(method.fold) if len(pd.unique(method.fold)) > 1 else []):
                part = method.fold == fold
                if 0 < method.positive[part].sum() < part.sum():
                    fpr, tpr, _ = roc_curve(method.positive[part], method.score[part])
                    roc_ax.plot(fpr, tpr, color=colour, lw=0.8, alpha=0.3)
                    precision, recall, _ = precision_recall_curve(method.positive[part], method.score[part])
                    pr_ax.plot(recall, precision, color=colour, lw=0.8, alpha=0.3, drawstyle="steps-post")
            fpr, tpr, _ = roc_curve(method.positive, method.score)
            (line,) = roc_ax.plot(fpr, tpr, color=colour, lw=2.2)
            precision, recall, _ = precision_recall_curve(method.positive, method.score)
            pr_ax.plot(recall, precision, color=colour, lw=2.2, drawstyle="steps-post")
            handles.append(line)
            labels.append(f"{method.name}: AUROC {auc(fpr, tpr):.3f}, "
                          f"AUPRC {average_precision_score(method.positive, method.score):.3f} (pooled)")
        roc_ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
        roc_ax.set(xlabel="false positive rate (1 - specificity)", ylabel="true positive rate (sensitivity)",
                   title="ROC", xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), aspect="equal")
        pr_ax.axhline(prevalence, color="grey", lw=1, ls="--")
        pr_ax.set(xlabel=f"recall (of {positive_label})", ylabel=f"precision (of {positive_label})",
                  title=f"precision-recall (chance = prevalence {prevalence:.2f})", xlim=(-0.01, 1.01),
                  ylim=(-0.01, 1.01), aspect="equal")
        _outside_legend(figure, handles, labels, columns=2)
        if title:
            figure.suptitle(title)
    return figure


def fold_scores(scores: Mapping[str, Sequence[float]], folds: Sequence[str], metric: str,
                higher_is_better: bool) -> plt.Figure:
    """Each fold's score per method as dots (the same fold joined by a grey line across methods) with the mean
    +/- sd beside them."""
    names = list(scores)
    with report_style():
        figure, axis = plt.subplots(figsize=(max(4.5, 1.3 * len(names) + 1.5), 4), layout="constrained")
        values = np.array([np.asarray(scores[n], dtype=float) for n in names])  # [methods, folds]
        x = np.arange(len(names))
        for k in range(values.shape[1]):
            axis.plot(x, values[:, k], color="#bbbbbb", lw=0.8, zorder=1)
        for i, name in enumerate(names):
            colour = method_colour(name)
            axis.scatter(np.full(values.shape[1], x[i]), values[i], color=colour, s=28, zorder=3,
                         edgecolors="white", linewidths=0.5)
            finite = values[i][np.isfinite(values[i])]
            if not len(finite):
                continue
            mean, sd = float(finite.mean()), float(finite.std(ddof=1)) if len(finite) > 1 else 0.0
            axis.errorbar(x[i] + 0.22, mean, yerr=sd, color=colour, fmt="D", ms=5, capsize=3, lw=1.4, zorder=3)
            axis.annotate(f"{mean:.3g}", (x[i] + 0.3, mean), fontsize=7, va="center")
        axis.set_xticks(x, names)
        for tick, name in zip(axis.get_xticklabels(), names):
            tick.set_color(method_colour(name))
        axis.set_xlim(-0.5, len(names) - 0.2)
        better = "higher" if higher_is_better else "lower"
        axis.set_ylabel(f"{metric.upper()} per fold ({better} is better)")
        axis.set_title(f"{len(folds)} folds: dots are folds, diamonds the mean +/- sd")
    return figure


def confusion_matrices(matrices: Mapping[str, np.ndarray], labels: Sequence[str]) -> plt.Figure:
    """One pooled confusion matrix per method: counts, coloured by the share of each true class."""
    names = list(matrices)
    size = 1.2 + 0.55 * len(labels)
    with report_style():
        figure, axes = plt.subplots(1, len(names), figsize=(size * len(names) + 0.5, size + 0.6), squeeze=False,
                                    layout="constrained")
        for axis, name in zip(axes[0], names):
            matrix = np.asarray(matrices[name], dtype=float)
            share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
            axis.imshow(share, cmap="cividis", vmin=0, vmax=1)
            for (i, j), value in np.ndenumerate(matrix):
                axis.text(j, i, f"{int(value)}", ha="center", va="center", fontsize=8,
                          color="black" if share[i, j] > 0.55 else "white")
            crowded = len(labels) > 3 or max(len(str(label)) for label in labels) > 8
            axis.set_xticks(range(len(labels)), labels, rotation=35 if crowded else 0, ha="right" if crowded else "center")
            axis.set_yticks(range(len(labels)), labels)
            axis.grid(False)
            accuracy = np.trace(matrix) / max(matrix.sum(), 1)
            axis.set_title(f"{name} (accuracy {accuracy:.3f})", color=method_colour(name))
            axis.set_xlabel("predicted class")
            axis.set_ylabel("true class")
    return figure


def _group_dots(shown: pd.DataFrame, methods: Sequence[str], labels: Sequence[str], xlabel: str,
                ylabel: str) -> tuple[plt.Figure, Any]:
    """One row per group (``shown``: index = group, a column per method), a marker per method."""
    figure, axis = plt.subplots(figsize=(7.5, 1.6 + 0.22 * len(shown)), layout="constrained")
    y = np.arange(len(shown))
    markers = "osD^v<>"
    for k, name in enumerate(methods):
        axis.scatter(shown[name], y, color=method_colour(name), marker=markers[k % len(markers)], s=24,
                     label=name, zorder=3)
    axis.set_yticks(y, labels, fontsize=7)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    handles, legend = axis.get_legend_handles_labels()
    _outside_legend(figure, handles, legend, columns=min(len(methods), 5))
    return figure, axis


def group_calls(calls: pd.DataFrame, methods: Sequence[str], positive_label: str, limit: int = 60) -> plt.Figure:
    """Each group's mean probability of ``positive_label`` per method (``calls``: index = group, a column per
    method and ``actual``), groups sorted by truth then AAM's call; 0.5 marked."""
    shown = calls.sort_values(["actual", methods[0]]).tail(limit)
    with report_style():
        figure, axis = _group_dots(shown, methods, [f"{g} ({a})" for g, a in zip(shown.index, shown["actual"])],
                                   f"mean out-of-fold probability of {positive_label} over the group's samples",
                                   "group (true class)")
        axis.axvline(0.5, color="grey", lw=1, ls="--")
        axis.set_xlim(-0.02, 1.02)
    return figure


def group_errors(errors: pd.DataFrame, methods: Sequence[str], unit: str, limit: int = 60,
                 xlabel: str | None = None, worst_last: bool = True) -> plt.Figure:
    """Each group's score per method (``errors``: index = group, a column per method; by default the mean
    absolute error), the groups AAM does worst on at the top."""
    shown = errors.sort_values(methods[0], ascending=worst_last).tail(limit)
    with report_style():
        figure, _ = _group_dots(shown, methods, [str(g) for g in shown.index],
                                xlabel or f"mean absolute error of the group's samples ({unit})", "group")
    return figure


def predicted_vs_actual(methods: Mapping[str, tuple[np.ndarray, np.ndarray]], unit: str,
                        per_row: int = 3) -> plt.Figure:
    """Predicted vs actual per method (``(actual, predicted)``), same axes limits, the identity line dashed, MAE
    and R^2 in each title. Points are rasterised inside the SVG so large cohorts stay light."""
    names = list(methods)
    rows = int(np.ceil(len(names) / per_row))
    columns = min(per_row, len(names))
    every = np.concatenate([np.concatenate(pair) for pair in methods.values()])
    low, high = float(np.nanmin(every)), float(np.nanmax(every))
    pad = 0.03 * (high - low or 1.0)
    with report_style():
        figure, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.5 * rows + 0.3), squeeze=False,
                                    layout="constrained")
        for axis in axes.ravel()[len(names):]:
            axis.set_visible(False)
        for axis, name in zip(axes.ravel(), names):
            actual, predicted = (np.asarray(a, dtype=float) for a in methods[name])
            axis.scatter(actual, predicted, s=8 if len(actual) > 300 else 16, alpha=0.6, color=method_colour(name), edgecolors="none",
                         rasterized=True)
            axis.plot([low - pad, high + pad], [low - pad, high + pad], color="grey", lw=1, ls="--")
            mae = float(np.mean(np.abs(predicted - actual)))
            spread = float(np.sum((actual - actual.mean()) ** 2))
            r2 = 1 - float(np.sum((predicted - actual) ** 2)) / spread if spread > 0 else float("nan")
            axis.set_title(f"{name}: MAE {mae:.3g}, R² {r2:.3f}", color=method_colour(name))
            axis.set(xlim=(low - pad, high + pad), ylim=(low - pad, high + pad), aspect="equal",
                     xlabel=f"actual ({unit})", ylabel=f"predicted ({unit})")
    return figure


def training_curves(history: Sequence[Mapping[str, float]], best_epoch: int | None) -> plt.Figure:
    """Per epoch: training and validation loss, then each validation score; the best epoch marked."""
    epochs = np.array([int(row.get("epoch", i)) + 1 for i, row in enumerate(history)])
    keys = [k for k in history[-1] if k.startswith("val_") and k != "val_loss" and not k.endswith("_loss")
            and isinstance(history[-1][k], (int, float)) and k[4:] in
            ("mae", "rmse", "r2", "auroc", "accuracy", "f1", "f1_macro", "nuc_accuracy")]
    panels = ["loss"] + keys
    with report_style():
        figure, axes = plt.subplots(1, len(panels), figsize=(3.8 * len(panels), 3.4), squeeze=False,
                                    layout="constrained")
        for axis, key in zip(axes[0], panels):
            if key == "loss":
                for split, colour in (("train", "#0072B2"), ("val", "#D55E00")):
                    values = [row.get(f"{split}_loss", np.nan) for row in history]
                    axis.plot(epochs, values, marker="o", ms=3, color=colour, label=f"{split} loss")
                axis.legend(loc="best", frameon=False)
                axis.set_ylabel("loss (training objective)")
            else:
                axis.plot(epochs, [row.get(key, np.nan) for row in history], marker="o", ms=3, color="#D55E00")
                axis.set_ylabel(f"validation {key[4:].upper()}")
            if best_epoch is not None:
                axis.axvline(best_epoch, color="grey", lw=1, ls=":")
            axis.set_xlabel("epoch")
        if best_epoch is not None:
            figure.suptitle(f"dotted line: the best epoch ({best_epoch}), kept as best_model.pt", fontsize=9)
    return figure


def top_asvs(labels: Sequence[str], importance: np.ndarray, agreement: np.ndarray, colours: Sequence[str],
             legend: Mapping[str, str]) -> plt.Figure:
    """The top ASVs, most important on top: importance as bars coloured by direction (left), and the share of
    samples whose effect has the ASV's usual sign (right)."""
    n = len(labels)
    y = np.arange(n)[::-1]
    with report_style():
        figure, (bars, dots) = plt.subplots(1, 2, figsize=(10, 1.3 + 0.28 * n), sharey=True, layout="constrained",
                                            gridspec_kw={"width_ratios": [3, 1]})
        bars.barh(y, importance, color=colours)
        bars.set_yticks(y, labels, fontsize=8)
        bars.set_xlabel("importance: mean change of the answer when the ASV is removed")
        dots.scatter(agreement, y, color=colours, s=22, zorder=3)
        dots.axvline(0.5, color="grey", lw=1, ls="--")
        dots.set_xlim(0.4, 1.02)
        dots.set_xlabel("sign agreement across samples")
        handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in legend.values()]
        _outside_legend(figure, handles, list(legend), columns=min(len(legend), 4))
    return figure


def deletion_check(frame: pd.DataFrame) -> plt.Figure:
    """How far the answers move when each sample's k top-attributed ASVs are removed vs k random ones: one panel
    per way of choosing the top ASVs (``removed``), bars per k."""
    criteria = list(dict.fromkeys(frame["removed"]))
    with report_style():
        figure, axes = plt.subplots(1, len(criteria), figsize=(4.6 * len(criteria), 3.6), squeeze=False,
                                    layout="constrained")
        for axis, criterion in zip(axes[0], criteria):
            part = frame[frame["removed"] == criterion]
            x = np.arange(len(part))
            axis.bar(x - 0.2, part["top"], 0.4, color=RAISES, label="top-attributed ASVs removed")
            axis.bar(x + 0.2, part["random"], 0.4, color=LOWERS, label="as many random ASVs removed")
            axis.set_xticks(x, [f"k = {int(k)}" for k in part["k"]])
            axis.set_xlabel("ASVs removed per sample")
            axis.set_ylabel(str(part["measure"].iloc[0]))
            axis.set_title(f"top = {criterion}", fontsize=9)
        handles, labels = axes[0, 0].get_legend_handles_labels()
        _outside_legend(figure, handles, labels)
    return figure


CONTROL_NAMES = {"control", "controls", "ctrl", "healthy", "hc", "normal", "negative", "neg", "no", "false", "0",
                 "none", "absent", "non-ibd", "nonibd", "lean", "untreated", "baseline"}


def positive_class(labels: list[str], actual: np.ndarray) -> str:
    """The class a binary task's curves are drawn for: the one that is not a control by its name (control,
    healthy, negative, no, 0, ...), else the rarer one (the first sorted label on a tie)."""
    controls = [label for label in labels if label.strip().lower() in CONTROL_NAMES]
    if len(controls) == 1:
        return next(label for label in labels if label not in controls)
    counts = [(int(np.sum(actual == label)), k) for k, label in enumerate(labels)]
    return labels[min(counts)[1]]


__all__ = ["ScoredMethod", "class_colour", "positive_class", "confusion_matrices", "deletion_check", "fold_scores", "group_calls",
           "group_errors", "predicted_vs_actual", "roc_and_pr", "top_asvs", "training_curves"]
