"""The run folder: created for the run and removed again if bad input stops it, and the ``config.json`` that
records every resolved option."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from aam import __version__
from aam.errors import AamError
from aam.fileio import write_json
from aam.training.runtime import detach_log_files

log = logging.getLogger("aam")


@contextmanager
def run_directory(path: str | Path, resume: bool) -> Iterator[Path]:
    """Create the run folder for the duration of a run.

    Refuses to mix a new run into a folder holding another run's checkpoints. If the run stops on a user
    error (``AamError``) and this run created the folder, the folder is removed, so bad input leaves nothing
    half-written behind.
    """
    path = Path(path)
    if any((path / "checkpoints" / name).exists() for name in ("last_model.pt", "last_model")) and not resume:
        raise AamError("already holds an aam run", source=path,
                       hint="choose a new --output-dir, or pass --resume-from to continue it")
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except AamError:
        if created:
            detach_log_files()
            shutil.rmtree(path, ignore_errors=True)
        raise


def write_run_config(output_dir: Path, command: str, opts: dict[str, Any], extra: dict[str, Any]) -> None:
    """``config.json``: every resolved option (feedable back with --config), versions, seed and derived facts."""
    payload = {
        "command": command,
        "options": {k: v for k, v in opts.items() if k != "config"},
        "versions": {"aam": __version__, "torch": torch.__version__},
        **extra,
    }
    write_json(output_dir / "config.json", payload)


def write_training_report(output_dir: Path, run: Any, history: list, best_epoch: int | None) -> None:
    """``report.html`` of the run, with the model card of its best checkpoint."""
    from aam.reporting.training import write_training_report as write
    from aam.workflows.inspect import format_card, model_card
    from aam.workflows.run_config import TrainRun, defaults

    best = output_dir / "checkpoints" / "best_model.pt"
    card = model_card(best) if best.is_file() else None
    path = write(output_dir, history, best_epoch, card=format_card(card) if card else "",
                 architecture=card.get("architecture") if card else None, defaults=vars(defaults(TrainRun)))
    log.info("report: %s", path)
