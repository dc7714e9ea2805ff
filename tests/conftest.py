"""Shared fixtures: a small synthetic dataset written once per test session."""

from __future__ import annotations

import pytest
import torch

from aam.data.synthetic import write_synthetic_dataset

torch.set_num_threads(1)  # small tensors: one thread is fastest and keeps timings stable on 2 cores


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> dict:
    """Paths of a 48-sample, 30-ASV synthetic dataset (table, tree, metadata, table_hashed, sequences)."""
    return write_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), n_samples=48, n_asvs=30, seed=7)
