"""What a run reports besides checkpoints: the epoch line in the log, TensorBoard scalars, fusion diagnostics
(GMU gate histogram, cross-attention heatmap) and per-module gradient norms."""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from aam.models.build import unwrap_model
from aam.training import sharding

log = logging.getLogger("aam.training.trainer")

LOGGED_KEYS = ("train_loss", "train_samples_per_s", "cuda_peak_mib", "cpu_peak_rss_mib")


class Diagnostics:
    """Writes the epoch's figures to the log and, on the rank that has one, to a TensorBoard ``writer``.

    Args:
        writer: a ``SummaryWriter`` or None (other ranks, or TensorBoard unavailable).
        category_names: metadata columns, to label cross-attention heatmaps.
        epochs: the run's planned epochs, for "epoch k/N".
    """

    def __init__(self, writer: Any, category_names: list[str], epochs: int):
        self.writer = writer
        self.category_names = category_names
        self.epochs = epochs

    def log_epoch(self, row: dict[str, float], result: Any, epoch: int, improved: bool) -> None:
        """One line per epoch in the log; every number of ``row`` and ``result``'s diagnostics to TensorBoard."""
        shown = {k: v for k, v in row.items() if k.startswith("val_") or k in LOGGED_KEYS}
        text = "  ".join(f"{k}={v:.4g}" for k, v in shown.items())
        log.info("epoch %d/%d  %s%s", epoch + 1, self.epochs, text, "  *best*" if improved else "")
        if self.writer is None:
            return
        for key, value in row.items():
            if key.startswith("train_") and f"val_{key[6:]}" in row:
                self.writer.add_scalars(key[6:], {"train": value, "val": row[f"val_{key[6:]}"]}, epoch)
            elif key.startswith("lr_"):
                self.writer.add_scalar(f"learning_rate/{key[3:]}", value, epoch)
            elif key != "epoch":
                self.writer.add_scalar(key.replace("_", "/", 1), value, epoch)
        if "gate" in result.diagnostics:
            self.writer.add_histogram("gmu/gate", result.diagnostics["gate"], epoch)
        if "cross_attention" in result.diagnostics:
            from aam.outputs.plots import attention_heatmap

            weights = result.diagnostics["cross_attention"]
            names = self.category_names or [f"col{i}" for i in range(weights.shape[-1])]
            self.writer.add_figure("cross_attention/position_x_column", attention_heatmap(weights[:32], names),
                                   epoch)
        self.writer.flush()

    def log_step_validation(self, row: dict[str, float], step: int) -> None:
        """One line per mid-epoch validation; its metrics to TensorBoard as val_step/* against the step."""
        shown = "  ".join(f"{k}={v:.4g}" for k, v in row.items() if k.startswith("val_"))
        log.info("epoch %d/%d  step %d  (validation subsample)  %s", row["epoch"] + 1, self.epochs, step, shown)
        if self.writer is None:
            return
        for key, value in row.items():
            if key.startswith("val_"):
                self.writer.add_scalar(f"val_step/{key[4:]}", value, step)
        self.writer.flush()

    def log_grad_norms(self, model: nn.Module, step: int) -> None:
        """Gradient norm per top-level submodule (fusion gates, mixing parameters...) to TensorBoard.

        Every rank computes them (a collective under FSDP); the rank with the writer logs them.
        """
        for name, module in unwrap_model(model).named_children():
            norm = sharding.grad_norm(module.parameters())
            if norm is not None and self.writer is not None:
                self.writer.add_scalar(f"grad_norm/{name}", norm.item(), step)
