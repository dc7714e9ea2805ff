"""benchmarks/gpu_check.py at toy sizes on CPU, so the script a GPU session runs cannot rot in between."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def gpu_check(load_benchmark):
    return load_benchmark("gpu_check")


def test_gpu_check_runs_every_check_at_toy_size_on_cpu(gpu_check, tmp_path):
    result = gpu_check.main(["--device", "cpu", "--quick", "--output", str(tmp_path)])
    assert json.loads((tmp_path / "gpu_check.json").read_text()) == result
    assert result["precision"]["bf16_relative_difference"] < 0.1
    assert result["precision"]["fp16_relative_difference"] < 0.05
    by_loss = result["precision"]["by_loss"]  # what pretraining optimises stays close in bf16 (#29 point 3)
    assert by_loss["unifrac"]["bf16"] < 1e-2 and by_loss["nucleotide"]["bf16"] < 1e-2
    assert result["compile"]["graph_breaks"] == 0 and 1 <= result["compile"]["unique_graphs"] <= 3
    assert len(result["attention"]) == 8 and all(v["ok"] and v["max_abs_difference"] < 1e-5
                                                 for v in result["attention"].values())
    memory = result["memory"]
    assert memory["bf16+chunks/batch 8"]["mib"] < 0.5 * memory["fp32/batch 8"]["mib"]
    assert set(result["speed"]) == {"toy/fp32", "toy/bf16", "toy/fp16"} and min(result["speed"].values()) > 0
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| compile (eager, 3 steps) | " in table and "samples/s, toy/fp16" in table
