"""A run's session: the device and distributed context, the seed, the batch-size search,
and the run folder of the process that writes."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import torch

from aam.errors import AamError
from aam.training.distributed import (
    DistributedContext,
    broadcast_object,
    init_distributed,
    shutdown,
)
from aam.training.runtime import (
    configure_threads,
    memory_usage,
    resolve_device,
    seed_everything,
)
from aam.workflows.run_config import FitRun
from aam.workflows.run_folder import run_directory

log = logging.getLogger("aam")
Run = TypeVar("Run", bound=FitRun)


@dataclass
class Session:
    """The process's place in a run: device, distributed context, seed, and whether it writes files."""

    device: torch.device
    seed: int
    distributed: DistributedContext | None = None
    data_parallel: bool = False  # one process over all visible GPUs

    @property
    def is_main(self) -> bool:
        return self.distributed is None or self.distributed.is_main


def start_session(run: Run) -> Session:
    """Pick the device, join torchrun's process group when asked, and agree on one seed across ranks."""
    if run.use_expandable_segments:
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    device = resolve_device(run.device)
    data_parallel = run.data_parallel
    if data_parallel and device.type != "cuda":
        raise AamError("needs CUDA GPUs", source="--data-parallel",
                       hint="on CPU, or for one process per device, use --distributed with "
                            "torchrun --nproc_per_node N")
    if data_parallel:
        log.info("DataParallel over %d GPU(s)", torch.cuda.device_count())
    strategy = "fsdp" if run.fsdp else "ddp" if run.distributed else None
    context = init_distributed(device, strategy) if strategy is not None else None
    if context is not None:
        device = context.device
    log.info("device %s, %d intra-op thread(s)", device, configure_threads(device))
    seed = broadcast_object(seed_everything(run.seed))
    seed_everything(seed)
    return Session(device, seed, context, data_parallel)


def search_batch_size(run: Run, session: Session, trainer: Any, train_loader: Any,
                      resumed: bool) -> dict[str, int] | None:
    """``--auto-batch-size``: ``batch_size`` and ``gradient_accumulation_steps`` for this GPU, or None.

    Without ``--target-effective-batch-size`` the accumulation steps stay as given; with it, they are the
    fewest that reach it. Runs that cannot be measured on one device (CPU, DDP, FSDP, DataParallel) and
    resumed runs (their schedule is laid out in steps of the old batch) keep ``--batch-size``.
    """
    if not run.auto_batch_size:
        return None
    why = ("it measures CUDA memory" if session.device.type != "cuda"
           else "it measures one process on one GPU" if session.distributed is not None or session.data_parallel
           else "a resumed run keeps its batch size" if resumed else None)
    if why is not None:
        log.info("--auto-batch-size skipped (%s): using --batch-size %d", why, run.batch_size)
        return None
    from aam.training.batch_size_finder import find_batch_size

    size = find_batch_size(trainer, train_loader.dataset, train_loader.collate_fn,
                           max_memory_fraction=run.max_memory_fraction)
    if size is None:
        raise AamError(f"2 samples per batch need more than {run.max_memory_fraction:g} of the GPU's memory",
                       source="--auto-batch-size",
                       hint="lower --token-limit or --embedding-dim, or add --mixed-precision bf16 or "
                            "--gradient-checkpointing")
    target = run.target_effective_batch_size
    steps = -(-target // size) if target else run.gradient_accumulation_steps
    log.info("auto batch size: --batch-size %d --gradient-accumulation-steps %d (effective batch %d)",
             size, steps, size * steps)
    return {"batch_size": size, "gradient_accumulation_steps": steps}


def adopt_batch_size(run: Run, session: Session, trainer: Any, loaders: Callable[..., tuple],
                     current: tuple[Any, Any], resumed: bool) -> tuple[Run, Any, Any]:
    """The run and (train, validation) loaders after ``--auto-batch-size``; logs ``--memory-profile``'s start.

    ``loaders(batch_size=...)`` rebuilds both loaders; ``current`` are the ones built with ``--batch-size``.
    The trainer's accumulation steps follow the search.
    """
    found = search_batch_size(run, session, trainer, current[0], resumed=resumed)
    if found is not None:
        run = run.replace(**found)
        current = loaders(batch_size=found["batch_size"])
        trainer.config = replace(trainer.config, gradient_accumulation_steps=found["gradient_accumulation_steps"])
    if run.memory_profile:
        log.info("memory with the model on %s (MiB): %s", session.device,
                 ", ".join(f"{k}={v:.0f}" for k, v in memory_usage(session.device).items()))
    return run, *current


def run_in_session(run: Run, body: Callable[[Run, Path, Session], Any]) -> Any:
    """Start a session, run ``body(run, output_dir, session)`` in its run folder, leave the process group."""
    session = start_session(run)
    try:
        with session_directory(session, run) as output_dir:
            return body(run, output_dir, session)
    finally:
        shutdown()


@contextmanager
def session_directory(session: Session, run: Run) -> Iterator[Path]:
    """The run folder: created (and cleaned up on a user error) by the writing rank only."""
    if not session.is_main:
        yield Path(run.output_dir)
        return
    with run_directory(run.output_dir, resume=bool(run.resume_from)) as path:
        yield path
