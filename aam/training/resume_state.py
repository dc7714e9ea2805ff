"""What a checkpoint keeps for ``--resume-from`` besides the weights, and how a trainer takes it back: epoch and
step, optimizer, scheduler, gradient scaler, random streams, history and each callback's state (the weight
average, early stopping), down to how far an epoch got. A mixin of :class:`~aam.training.trainer.Trainer`."""

from __future__ import annotations

from typing import Any

from torch import nn

from aam.models.build import unwrap_model
from aam.outputs.checkpoint import Snapshot
from aam.training import sharding
from aam.training.runtime import rng_state, set_rng_state


class TrainerState:
    """Snapshots and their restoration (the trainer provides ``model``, ``optimizer``, ``scheduler``,
    ``precision``, ``strategy``, ``callbacks``, ``ema``, ``history``, ``global_step``)."""

    def snapshot(self, epoch: int, progress: dict[str, Any] | None = None) -> Snapshot:
        """Weights and training state to write; under FSDP a collective (every rank calls it).

        ``epoch`` is the last finished epoch; ``progress`` describes how far the next one got (mid-epoch).
        """
        model_state, optimizer_state = self.strategy.states(self.model, self._scored_model(), self.optimizer)
        state = self.training_state(epoch, optimizer_state)
        if progress is not None:
            state["epoch_progress"] = progress
        return Snapshot(model_state, state, sharded=self.strategy.sharded_checkpoint)

    def training_state(self, epoch: int, optimizer_state: dict[str, Any]) -> dict[str, Any]:
        """Everything ``--resume-from`` needs besides the weights."""
        return {
            "epoch": epoch,
            "global_step": self.global_step,
            "optimizer": optimizer_state,
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.precision.state_dict(),
            "rng": rng_state(),
            "history": list(self.history),
            **{k: v for callback in self.callbacks for k, v in callback.training_state(self).items()},
        }

    def _scored_model(self) -> nn.Module:
        """The weights validation scores and checkpoints keep: the EMA if there is one, else the bare model."""
        return unwrap_model(self.model) if self.ema is None else self.ema.module

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`training_state`; the next epoch is ``state['epoch'] + 1``, continued
        from its ``epoch_progress`` when the checkpoint was written mid-epoch."""
        self.precision.load_state_dict(state["scaler"])
        self.start_epoch = state["epoch"] + 1
        self.global_step = state["global_step"]
        self.history = list(state.get("history", []))
        self._epoch_progress = state.get("epoch_progress")
        self._each("load_training_state", state)
        self._pending_state = state  # optimizer, scheduler and RNG are restored once the scheduler exists

    def _restore_pending_state(self) -> None:
        """The optimizer, scheduler and random streams of a loaded state, once the scheduler exists (building
        it resets the learning rates the optimizer state restores)."""
        if self._pending_state is None:
            return
        sharding.load_optimizer_state(self.model, self.optimizer, self._pending_state["optimizer"])
        if self._pending_state.get("scheduler") is not None:
            self.scheduler.load_state_dict(self._pending_state["scheduler"])
        if self._epoch_progress is None:
            set_rng_state(self._pending_state["rng"])
        else:  # mid-epoch: restored once the epoch's batch iterator exists (creating it draws a seed)
            self._epoch_progress = {**self._epoch_progress, "rng": self._pending_state["rng"]}
        self._pending_state = None
