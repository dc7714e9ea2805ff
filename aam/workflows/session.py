"""A run's session: the checked options, the device and distributed context, the seed, the batch-size search,
and the run folder of the process that writes."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

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
from aam.workflows.run_folder import run_directory

log = logging.getLogger("aam")


EXCLUSIVE_PARALLEL_FLAGS = ("distributed", "data_parallel", "fsdp")


def check_options(opts: dict[str, Any]) -> None:
    """Cross-flag rules that click cannot express; each failure names the flag."""
    chosen = [f"--{name.replace('_', '-')}" for name in EXCLUSIVE_PARALLEL_FLAGS if opts.get(name)]
    if len(chosen) > 1:
        raise AamError(f"{' and '.join(chosen)} cannot be combined", source=chosen[1],
                       hint="--distributed: DDP via torchrun; --fsdp: sharded DDP via torchrun; "
                            "--data-parallel: one process, all GPUs")
    if opts.get("fsdp") and opts.get("ema_decay") is not None:
        raise AamError("a weight average does not combine with --fsdp", source="--ema-decay",
                       hint="drop --ema-decay, or use --distributed (DDP)")
    if opts.get("fsdp_sharded_checkpoint") and not opts.get("fsdp"):
        raise AamError("needs --fsdp", source="--fsdp-sharded-checkpoint")
    if opts.get("fsdp") and opts.get("mixed_precision") == "fp16":
        raise AamError("fp16 loss scaling does not combine with --fsdp", source="--mixed-precision",
                       hint="use --mixed-precision bf16 (no loss scaling needed)")
    positive = ("epochs", "batch_size", "gradient_accumulation_steps", "max_bp", "token_limit", "embedding_dim",
                "attention_heads", "attention_layers", "ffn_ratio")
    for name in positive:
        if name in opts and opts[name] is not None and opts[name] < 1:
            raise AamError(f"must be at least 1, got {opts[name]}", source=f"--{name.replace('_', '-')}")
    if opts["embedding_dim"] % opts["attention_heads"]:
        raise AamError(f"{opts['attention_heads']} heads do not divide --embedding-dim {opts['embedding_dim']}",
                       source="--attention-heads", hint="choose a head count that divides the width")
    if not 0 <= opts.get("nuc_mask_ratio", 0) < 1:
        raise AamError("must be in [0, 1)", source="--nuc-mask-ratio")
    if not 0 < opts["lr"]:
        raise AamError("must be positive", source="--lr")
    if not 0 <= opts.get("dropout", 0) < 1:
        raise AamError("must be in [0, 1)", source="--dropout")
    if not 0 < opts.get("max_memory_fraction", 1) <= 1:
        raise AamError("must be in (0, 1]", source="--max-memory-fraction")
    if (opts.get("target_effective_batch_size") or 1) < 1:
        raise AamError("must be at least 1", source="--target-effective-batch-size")


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


def start_session(opts: dict[str, Any]) -> Session:
    """Pick the device, join torchrun's process group when asked, and agree on one seed across ranks."""
    if opts.get("use_expandable_segments"):
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    device = resolve_device(opts["device"])
    data_parallel = bool(opts.get("data_parallel"))
    if data_parallel and device.type != "cuda":
        raise AamError("needs CUDA GPUs", source="--data-parallel",
                       hint="on CPU, or for one process per device, use --distributed with "
                            "torchrun --nproc_per_node N")
    if data_parallel:
        log.info("DataParallel over %d GPU(s)", torch.cuda.device_count())
    strategy = "fsdp" if opts.get("fsdp") else "ddp" if opts.get("distributed") else None
    context = init_distributed(device, strategy) if strategy is not None else None
    if context is not None:
        device = context.device
    log.info("device %s, %d intra-op thread(s)", device, configure_threads(device))
    seed = broadcast_object(seed_everything(opts.get("seed")))
    seed_everything(seed)
    return Session(device, seed, context, data_parallel)


def search_batch_size(opts: dict[str, Any], session: Session, trainer: Any, train_loader: Any,
                      resumed: bool) -> dict[str, int] | None:
    """``--auto-batch-size``: ``batch_size`` and ``gradient_accumulation_steps`` for this GPU, or None.

    Without ``--target-effective-batch-size`` the accumulation steps stay as given; with it, they are the
    fewest that reach it. Runs that cannot be measured on one device (CPU, DDP, FSDP, DataParallel) and
    resumed runs (their schedule is laid out in steps of the old batch) keep ``--batch-size``.
    """
    if not opts.get("auto_batch_size"):
        return None
    why = ("it measures CUDA memory" if session.device.type != "cuda"
           else "it measures one process on one GPU" if session.distributed is not None or session.data_parallel
           else "a resumed run keeps its batch size" if resumed else None)
    if why is not None:
        log.info("--auto-batch-size skipped (%s): using --batch-size %d", why, opts["batch_size"])
        return None
    from aam.training.batch_size_finder import find_batch_size

    size = find_batch_size(trainer, train_loader.dataset, train_loader.collate_fn,
                           max_memory_fraction=opts["max_memory_fraction"])
    if size is None:
        raise AamError(f"2 samples per batch need more than {opts['max_memory_fraction']:g} of the GPU's memory",
                       source="--auto-batch-size",
                       hint="lower --token-limit or --embedding-dim, or add --mixed-precision bf16 or "
                            "--gradient-checkpointing")
    target = opts.get("target_effective_batch_size")
    steps = -(-target // size) if target else opts["gradient_accumulation_steps"]
    log.info("auto batch size: --batch-size %d --gradient-accumulation-steps %d (effective batch %d)",
             size, steps, size * steps)
    return {"batch_size": size, "gradient_accumulation_steps": steps}


def adopt_batch_size(opts: dict[str, Any], session: Session, trainer: Any, loaders: Callable[..., tuple],
                     current: tuple[Any, Any], resumed: bool) -> tuple[dict[str, Any], Any, Any]:
    """Options and (train, validation) loaders after ``--auto-batch-size``; logs ``--memory-profile``'s start.

    ``loaders(batch_size=...)`` rebuilds both loaders; ``current`` are the ones built with ``--batch-size``.
    The trainer's accumulation steps follow the search.
    """
    found = search_batch_size(opts, session, trainer, current[0], resumed=resumed)
    if found is not None:
        opts = {**opts, **found}
        current = loaders(batch_size=found["batch_size"])
        trainer.config = replace(trainer.config, gradient_accumulation_steps=found["gradient_accumulation_steps"])
    if opts.get("memory_profile"):
        log.info("memory with the model on %s (MiB): %s", session.device,
                 ", ".join(f"{k}={v:.0f}" for k, v in memory_usage(session.device).items()))
    return opts, *current


def run_in_session(opts: dict[str, Any], body: Callable[[dict[str, Any], Path, Session], Any]) -> Any:
    """Start a session, run ``body(opts, output_dir, session)`` in its run folder, leave the process group."""
    session = start_session(opts)
    try:
        with session_directory(session, opts) as output_dir:
            return body(opts, output_dir, session)
    finally:
        shutdown()


@contextmanager
def session_directory(session: Session, opts: dict[str, Any]) -> Iterator[Path]:
    """The run folder: created (and cleaned up on a user error) by the writing rank only."""
    if not session.is_main:
        yield Path(opts["output_dir"])
        return
    with run_directory(opts["output_dir"], resume=bool(opts.get("resume_from"))) as path:
        yield path
