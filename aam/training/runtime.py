"""Run-level plumbing: device choice, seeding, thread defaults and run logging."""

from __future__ import annotations

import logging
import os
import random
import resource
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aam.errors import AamError

log = logging.getLogger("aam")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA (or ROCm, which PyTorch exposes as cuda) when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise AamError("CUDA/ROCm is not available on this machine", source="--device",
                       hint="use --device cpu or --device auto")
    return torch.device(name)


def seed_everything(seed: int | None) -> int:
    """Seed Python, NumPy and torch; a missing seed is drawn and returned so it can be recorded."""
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2**31))
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return seed


SMALL_MACHINE_CORES = 2


def configure_threads(device: torch.device) -> int:
    """Intra-op threads for CPU runs: 1 on machines with at most 2 cores, else torch's default.

    On 2-vCPU machines a training step with torch's default of 2 threads measured 3-5x slower than with 1
    (BENCHMARKS.md, thread study). ``OMP_NUM_THREADS`` or ``torch.set_num_threads`` set by the user win.
    """
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ and (os.cpu_count() or 1) <= SMALL_MACHINE_CORES:
        torch.set_num_threads(1)
    return torch.get_num_threads()


def memory_usage(device: torch.device, reset: bool = False) -> dict[str, float]:
    """Peak memory in MiB: ``cuda_peak_mib`` (allocated since the last reset; ``reset`` starts a new period) on
    CUDA, and ``cpu_peak_rss_mib`` (the process's peak resident set since it started) on every device."""
    # ru_maxrss is in KiB on Linux and in bytes on macOS
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)
    usage = {"cpu_peak_rss_mib": float(rss)}
    if device.type == "cuda":
        usage["cuda_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        usage["cuda_reserved_mib"] = torch.cuda.memory_reserved(device) / 2**20
        if reset:
            torch.cuda.reset_peak_memory_stats(device)
    return usage


def configure_logging(log_file: str | Path | None = None, verbose: bool = True) -> None:
    """Log to stderr (INFO, or WARNING when quiet) and, when given, to ``log_file`` (always INFO)."""
    root = logging.getLogger("aam")
    root.setLevel(logging.INFO)
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.INFO if verbose else logging.WARNING)
    console.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(console)
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file, mode="a", encoding="utf-8")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(file_handler)
    root.propagate = False


def detach_log_files() -> None:
    """Close and remove the run's log-file handlers (before a failed run's folder is deleted)."""
    root = logging.getLogger("aam")
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
            handler.close()


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
