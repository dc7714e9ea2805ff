"""Shared fixtures: a small synthetic dataset written once per test session."""

from __future__ import annotations

import os

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
