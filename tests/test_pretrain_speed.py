"""``benchmarks/pretrain_speed.py`` keeps working: it runs ``aam pretrain``'s workflow with its probe on the
Trainer, counts the FLOP of a step and splits the step time into parts that add up."""

from __future__ import annotations

import pytest


def test_pretrain_speed_measures_the_real_trainer(load_benchmark, synthetic_dir, tmp_path):
    speed = load_benchmark("pretrain_speed")
    result = speed.main(["--table", str(synthetic_dir["table"]), "--tree", str(synthetic_dir["tree"]),
                         "--device", "cpu", "--preset", "small-data", "--batch-size", "8", "--warmup", "1",
                         "--steps", "2", "--work", str(tmp_path), "--results", str(tmp_path / "speed.json")])
    assert result["timed_steps"] == 2 and result["samples_per_s"] > 0
    assert result["flop_per_sample"] > 1e5  # counted, not guessed: the encoder's matmuls over 8 samples
    assert 0 < result["share_of_peak"] < 1.5 and result["peak_tflops"] > 0
    assert sum(result["step_share"].values()) == pytest.approx(1.0, abs=0.05)
    assert (tmp_path / "speed.json").is_file()
