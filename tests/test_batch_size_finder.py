"""--auto-batch-size and --memory-profile: the search, the worst-case probe batch, a probe step that leaves the
model untouched, the workflow glue (accumulation, skips) and the CLI on CPU."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from aam.cli import cli as main
from aam.data.dataset import AmpliconData, BatchCollator, MatrixDistanceLookup, SampleDataset
from aam.models import EncoderConfig, SequenceEncoder
from aam.objectives.losses import MultiTaskLoss
from aam.training.batch_size_finder import (
    find_batch_size,
    largest_fitting,
    optimizer_state_bytes,
    widest_samples,
)
from aam.training.trainer import Trainer, TrainerConfig
from aam.workflows import session as session_module
from aam.workflows.run_config import FitRun


@pytest.mark.parametrize("limit", [2, 3, 7, 8, 37, 100, 128, 255, 256, 1000])
def test_search_finds_the_largest_even_size_that_fits(limit):
    tried = []

    def fits(size: int) -> bool:
        tried.append(size)
        return size <= limit

    assert largest_fitting(fits, high=256) == min(limit // 2 * 2, 256)
    assert all(size % 2 == 0 and 2 <= size <= 256 for size in tried)
    assert len(tried) <= 2 * math.log2(256 / 2) + 1


def test_search_reports_when_nothing_fits_and_respects_the_upper_bound():
    assert largest_fitting(lambda size: False) is None
    assert largest_fitting(lambda size: True, high=50) == 50
    assert largest_fitting(lambda size: True, high=51) == 50
    assert largest_fitting(lambda size: True, high=1) is None
    assert largest_fitting(lambda size: size <= 9, multiple=1, low=1) == 9


def test_probe_batch_holds_the_widest_samples():
    widths = np.array([3, 9, 1, 9, 5])
    assert sorted(widest_samples(widths, 2)) == [1, 3]
    assert list(widest_samples(widths, 3))[2] == 4
    assert len(widest_samples(widths, 8)) == 8  # more than the dataset: samples repeat


def _problem(n_samples: int = 12, n_asvs: int = 20):
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 4, size=(n_samples, n_asvs)).astype(np.float32)
    counts[:, 0] += 1
    counts[n_samples - 1, :] = 1  # one sample holds every ASV: the widest
    tokens = np.zeros((n_asvs, 21), dtype=np.uint8)
    tokens[:, 0] = 6
    tokens[:, 1:] = rng.integers(1, 5, size=(n_asvs, 20))
    data = AmpliconData(counts, tokens, [f"s{i}" for i in range(n_samples)], [f"a{j}" for j in range(n_asvs)])
    matrix = rng.uniform(0.2, 0.9, size=(n_samples, n_samples))
    matrix = (matrix + matrix.T) / 2
    np.fill_diagonal(matrix, 0)
    lookup = MatrixDistanceLookup(matrix)
    dataset = SampleDataset(data, token_limit=32, asv_sampling="random", seed=0)
    return dataset, BatchCollator(data.tokens, data.sample_ids, lookup)


def _trainer() -> Trainer:
    torch.manual_seed(0)
    model = SequenceEncoder(EncoderConfig(max_bp=20, embedding_dim=16, attention_heads=2, attention_layers=1,
                                          token_limit=32, dropout=0.1))
    loss = MultiTaskLoss(target_penalty=0.0, penalty=1.0, nuc_penalty=1.0, count_penalty=0.0)
    return Trainer(model, loss, TrainerConfig(progress=False), device=torch.device("cpu"))


def test_probe_step_leaves_weights_buffers_gradients_and_random_streams_alone():
    dataset, collate = _problem()
    trainer = _trainer()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    assert any(b.is_floating_point() for b in trainer.model.buffers())  # BatchNorm statistics are covered
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    trainer.probe_step(collate([dataset[i] for i in range(6)]))
    torch.testing.assert_close(torch.rand(3), expected_draw)
    for key, value in trainer.model.state_dict().items():
        torch.testing.assert_close(value, before[key], msg=key)
    assert all(p.grad is None for p in trainer.model.parameters())


def test_find_batch_size_measures_the_real_step_against_the_budget():
    dataset, collate = _problem()
    trainer = _trainer()
    seen = []

    def measure(step) -> int:  # stands in for CUDA's peak: 1 MiB per padded slot of the probed batch
        original = trainer.probe_step

        def recording(batch):
            seen.append(batch)
            original(batch)
        trainer.probe_step = recording
        try:
            step()
        finally:
            trainer.probe_step = original
        return int(seen[-1].asv_mask.numel()) * 2**20

    state = optimizer_state_bytes(trainer.model, trainer.optimizer)
    assert state == 2 * sum(p.numel() * 4 for p in trainer.model.parameters())  # AdamW: two fp32 moments
    width = 20  # the widest sample holds all 20 ASVs, so every probe batch is padded to 20 slots
    capacity = 200 * 2**20
    size = find_batch_size(trainer, dataset, collate, max_memory_fraction=0.5, measure=measure,
                           capacity_bytes=capacity)
    expected = max(b for b in range(2, len(dataset) + 1, 2) if b * width * 2**20 + state <= 0.5 * capacity)
    assert size == expected
    assert all(batch.asv_mask.shape[1] == width for batch in seen)
    assert all(batch.distances is not None for batch in seen)  # UniFrac targets are part of the probe
    assert find_batch_size(trainer, dataset, collate, max_memory_fraction=0.5, measure=lambda step: None,
                           capacity_bytes=capacity) is None  # out of memory at 2 samples


@pytest.mark.parametrize("target, expected_steps", [(None, 3), (100, 5), (10, 1)])
def test_workflow_glue_sets_batch_and_accumulation(monkeypatch, target, expected_steps):
    monkeypatch.setattr("aam.training.batch_size_finder.find_batch_size", lambda *a, **k: 24)
    run = FitRun(table="t.biom", output_dir="out", auto_batch_size=True, batch_size=8, gradient_accumulation_steps=3,
                  target_effective_batch_size=target, max_memory_fraction=0.8)
    loader = SimpleNamespace(dataset=None, collate_fn=None)
    cuda = SimpleNamespace(device=torch.device("cuda", 0), distributed=None, data_parallel=False)
    found = session_module.search_batch_size(run, cuda, trainer=None, train_loader=loader, resumed=False)
    assert found == {"batch_size": 24, "gradient_accumulation_steps": expected_steps}
    for session, resumed in ((SimpleNamespace(device=torch.device("cpu"), distributed=None, data_parallel=False), False),
                             (SimpleNamespace(device=torch.device("cuda", 0), distributed=object(),
                                              data_parallel=False), False),
                             (cuda, True)):
        assert session_module.search_batch_size(run, session, None, loader, resumed=resumed) is None
    monkeypatch.setattr("aam.training.batch_size_finder.find_batch_size", lambda *a, **k: None)
    with pytest.raises(session_module.AamError, match="2 samples per batch"):
        session_module.search_batch_size(run, cuda, None, loader, resumed=False)


def test_cli_on_cpu_skips_the_search_and_profiles_memory(synthetic_dir, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "pretrain", "--table", synthetic_dir["table"], "--tree", synthetic_dir["tree"], "--output-dir", str(out),
        "--embedding-dim", "16", "--attention-heads", "2", "--attention-layers", "1", "--token-limit", "16",
        "--batch-size", "8", "--epochs", "2", "--seed", "1", "--device", "cpu", "--quiet",
        "--auto-batch-size", "--memory-profile"])
    assert result.exit_code == 0, result.output
    log_text = (out / "training.log").read_text()
    assert "--auto-batch-size skipped (it measures CUDA memory): using --batch-size 8" in log_text
    assert "memory with the model on cpu (MiB): cpu_peak_rss_mib=" in log_text
    epochs = [line for line in log_text.splitlines() if "epoch " in line and "/2 " in line]
    assert len(epochs) == 2 and all("cpu_peak_rss_mib=" in line for line in epochs)
    config = json.loads((out / "config.json").read_text())
    assert config["options"]["batch_size"] == 8 and config["options"]["memory_profile"] is True


def test_bad_memory_fraction_is_a_one_line_error(synthetic_dir, tmp_path):
    result = CliRunner().invoke(main, [
        "pretrain", "--table", synthetic_dir["table"], "--tree", synthetic_dir["tree"],
        "--output-dir", str(tmp_path / "run"), "--max-memory-fraction", "1.5", "--device", "cpu"])
    assert result.exit_code == 2
    assert "--max-memory-fraction" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()
