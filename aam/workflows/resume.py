"""Weights into and out of a run: the TensorBoard writer, loading pretrained or resumed weights, resuming the
trainer's state."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aam.errors import AamError
from aam.outputs.checkpoint import load_checkpoint
from aam.training.trainer import Trainer

log = logging.getLogger("aam")


def open_writer(output_dir: Path):
    """A TensorBoard writer on ``output_dir/tensorboard`` (None if tensorboard is not installed)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # pragma: no cover - tensorboard is a declared dependency
        log.warning("tensorboard is not installed; no TensorBoard logs will be written")
        return None
    return SummaryWriter(log_dir=str(output_dir / "tensorboard"))


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load a full state dict, turning shape or key mismatches into one ``AamError`` line."""
    missing, unexpected = _key_mismatch(model, state)
    if missing or unexpected:
        raise AamError(f"checkpoint does not fit this model ({len(missing)} missing, {len(unexpected)} unexpected "
                       f"weights, e.g. {(missing or unexpected)[0]})", source=source,
                       hint="use a checkpoint written by the same aam model configuration")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1].strip()
        raise AamError(f"checkpoint weights do not fit this model: {first}", source=source) from None


def _key_mismatch(model: nn.Module, state: dict[str, Any]) -> tuple[list[str], list[str]]:
    expected = set(model.state_dict())
    return sorted(expected - set(state)), sorted(set(state) - expected)


def load_resume_weights(model: nn.Module, path: str | Path, kind: str) -> dict[str, Any]:
    """Read the ``--resume-from`` checkpoint and load its weights into the bare ``model``, before a Trainer
    wraps or shards it; returns the checkpoint for :func:`resume_into`."""
    checkpoint = load_checkpoint(path, expected_kind=kind)
    if not checkpoint.get("training_state"):
        raise AamError("checkpoint has no training state to resume from", source=path,
                       hint="resume from checkpoints/last_model.pt or best_model.pt of a run")
    load_weights(model, checkpoint["model_state"], path)
    return checkpoint


def resume_into(trainer: Trainer, checkpoint: dict[str, Any], source: str | Path) -> None:
    """Restore the training state of ``checkpoint`` (from :func:`load_resume_weights`) into ``trainer``."""
    try:
        trainer.load_training_state(checkpoint["training_state"])
    except (KeyError, ValueError) as err:
        raise AamError(f"training state does not fit this run ({err})", source=source,
                       hint="resume with the same options as the original run") from None
    log.info("resumed from %s at epoch %d", source, trainer.start_epoch + 1)
