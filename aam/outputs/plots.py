"""PNG plots written at the end of a run: prediction scatter, confusion matrix, distances, loss curves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from aam.fileio import atomic_write  # noqa: E402


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 110, tight: bool = True) -> None:
    """Write ``fig`` as a PNG atomically (cropped to its content when ``tight``) and close it."""
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi,
                                                   bbox_inches="tight" if tight else None))
    finally:
        plt.close(fig)


def prediction_scatter(actual: np.ndarray, predicted: np.ndarray, path: str | Path, *, title: str = "",
                       unit: str = "") -> None:
    """Predicted vs actual with the identity line; the title carries MAE and R^2."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(actual, predicted, s=12, alpha=0.6, edgecolors="none")
    low = float(np.nanmin([actual.min(), predicted.min()]))
    high = float(np.nanmax([actual.max(), predicted.max()]))
    ax.plot([low, high], [low, high], color="black", lw=1, ls="--")
    ax.set_xlabel(f"actual {unit}".strip())
    ax.set_ylabel(f"predicted {unit}".strip())
    ax.set_title(title)
    save_figure(fig, path)


def confusion_matrix_plot(matrix: np.ndarray, labels: Sequence[str], path: str | Path, *, title: str = "") -> None:
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * len(labels), 1.0 + 0.6 * len(labels)))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(int(value)), ha="center", va="center", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title)
    save_figure(fig, path)


def loss_curves(history: Sequence[dict], path: str | Path, keys: Sequence[str] = ("loss",)) -> None:
    """Train and validation curves per epoch for each key (``train_<key>`` and ``val_<key>``)."""
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4), squeeze=False)
    epochs = [row["epoch"] for row in history]
    for ax, key in zip(axes[0], keys):
        for split in ("train", "val"):
            values = [row.get(f"{split}_{key}", np.nan) for row in history]
            ax.plot(epochs, values, marker="o", ms=3, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.legend()
    save_figure(fig, path)


def attention_heatmap(weights: np.ndarray, column_names: Sequence[str]) -> plt.Figure:
    """A figure of per-position attention over metadata columns ([positions, K]); the caller closes it."""
    fig, ax = plt.subplots(figsize=(2 + 0.8 * len(column_names), 4))
    image = ax.imshow(weights, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(column_names)), column_names, rotation=45, ha="right")
    ax.set_ylabel("ASV position (by abundance)")
    fig.colorbar(image, ax=ax)
    return fig
