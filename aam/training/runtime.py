"""Run-level plumbing: device choice, seeding, thread defaults, run logging and atomic JSON/TSV writes."""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import tempfile
from collections.abc import Callable
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


def configure_threads(num_threads: int | None = None) -> int:
    """Use one intra-op thread per physical core unless told otherwise (see BENCHMARKS.md)."""
    if num_threads is None and "OMP_NUM_THREADS" not in os.environ:
        num_threads = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    return torch.get_num_threads()


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


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``, so readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, payload: Any) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, sort_keys=False, default=_json_default)
            handle.write("\n")

    atomic_write(path, write)


def write_tsv(path: str | Path, frame) -> None:
    atomic_write(path, lambda tmp: frame.to_csv(tmp, sep="\t", index=False, float_format="%.6g"))


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (np.ndarray,)):
        return value.tolist()
    if isinstance(value, (Path,)):
        return str(value)
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
