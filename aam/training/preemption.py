"""Stopping a run cleanly on a scheduler's signal: SIGTERM, SIGUSR1 (Slurm's ``--signal``) and SIGINT.

While a :class:`StopSignals` is active, those signals only record that a stop was asked for; the Trainer
looks at the record after each optimizer step, writes a step checkpoint and raises :class:`RunInterrupted`,
which the CLI turns into one line saying how to resume and exit code ``128 + signal``. A second SIGINT
interrupts at once (the user means it). Handlers are installed only in the main thread and restored on exit.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1", "SIGINT") if hasattr(signal, name))


class RunInterrupted(Exception):
    """A run stopped on a signal after writing a checkpoint it can resume from.

    Args:
        signal_number: the signal that asked for the stop.
        checkpoint: where the step checkpoint was written (None if the run writes no checkpoints).
        where: the position reached, e.g. ``"epoch 3, step 1200"``.
        rerun: the command resumes by itself when run again (``aam cross-validate``), no flag needed.
    """

    def __init__(self, signal_number: int, checkpoint: str | None, where: str, rerun: bool = False):
        self.signal_number = int(signal_number)
        self.checkpoint = checkpoint
        self.where = where
        self.rerun = rerun
        super().__init__(self.one_line())

    @property
    def exit_code(self) -> int:
        return 128 + self.signal_number

    @property
    def signal_name(self) -> str:
        try:
            return signal.Signals(self.signal_number).name
        except ValueError:
            return f"signal {self.signal_number}"

    def one_line(self, command: str | None = None) -> str:
        text = f"stopped by {self.signal_name} at {self.where}"
        if self.rerun:
            return f"{text}; checkpoint saved, resume by running the same command again"
        if self.checkpoint is None:
            return f"{text}; no checkpoint was written"
        how = f"{command} --resume-from {self.checkpoint}" if command else \
            f"the same command with --resume-from {self.checkpoint}"
        return f"{text}; checkpoint saved, resume with: {how}"


class StopSignals:
    """Context manager that turns stop signals into a flag (``requested`` holds the first signal number)."""

    def __init__(self, signals: tuple[int, ...] = STOP_SIGNALS):
        self.signals = signals
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for number in self.signals:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if self.requested is not None and number == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a checkpoint
        if self.requested is None:
            self.requested = number
            log.warning("received %s: stopping after the current step (a checkpoint will be written)",
                        signal.Signals(number).name)
