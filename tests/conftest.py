"""Shared fixtures: a small synthetic dataset written once per test session."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

# Before torch starts: processes the tests spawn (DDP ranks, CLI subprocesses) inherit one thread each. A
# machine that shows more CPUs than its quota allows otherwise runs every rank with a thread per visible CPU.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from aam.data.synthetic import write_synthetic_dataset  # noqa: E402

torch.set_num_threads(1)  # small tensors: one thread is fastest and keeps timings stable on 2 cores


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> dict:
    """Paths of a 48-sample, 30-ASV synthetic dataset (table, tree, metadata, table_hashed, sequences)."""
    return write_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), n_samples=48, n_asvs=30, seed=7)


@pytest.fixture(scope="session")
def load_benchmark() -> Callable[[str], ModuleType]:
    """``load_benchmark(name)``: ``benchmarks/<name>.py`` imported as a module (the folder is not a package)."""

    def load(name: str) -> ModuleType:
        script = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
