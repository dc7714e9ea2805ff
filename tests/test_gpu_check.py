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
    assert len(result["attention"]) == 8 and all(v["ok"] and v["expected"] and v["max_abs_difference"] < 1e-5
                                                 for v in result["attention"].values())
    assert "failed_checks" not in result
    syncs = result["syncs"]  # a pretraining step waits for nothing: 6 batches cost what 2 do (#29 point 2)
    assert syncs["per_step"] == {} and syncs["epoch_of_6"] == syncs["epoch_of_2"]
    memory = result["memory"]
    assert memory["bf16+chunks/batch 8"]["mib"] < 0.5 * memory["fp32/batch 8"]["mib"]
    assert set(result["speed"]) == {"toy/fp32", "toy/bf16", "toy/fp16"} and min(result["speed"].values()) > 0
    speed = result["pretrain_speed"]  # aam pretrain's own loop, on a synthetic table and tree
    assert speed["samples_per_s"] > 0 and speed["flop_per_sample"] > 0 and speed["timed_steps"] == 2
    grouped = result["size_groups"]  # the same run with the sample-level stacks on groups of like size
    assert grouped["size_groups"] == 4 and speed["size_groups"] == 1 and grouped["samples_per_s"] > 0
    assert grouped["flop_per_sample"] <= speed["flop_per_sample"]  # no more work (toy samples are all capped alike)
    assert set(result["budgets_s"]) == set(gpu_check.BUDGETS) and sum(gpu_check.BUDGETS.values()) <= 480
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| compile (eager, 3 steps) | " in table and "samples/s, toy/fp16" in table
    assert "| host syncs, pretraining epoch of 2 / 6 batches | " in table and "none per step" in table
    assert "size groups 4) | " in table


def test_a_kernel_expected_to_run_that_did_not_fails_the_attention_check(gpu_check):
    import torch

    assert gpu_check.kernel_expected("flash", torch.bfloat16, masked=False)
    assert not gpu_check.kernel_expected("flash", torch.bfloat16, masked=True)  # FlashAttention takes no mask
    assert not gpu_check.kernel_expected("flash", torch.float32, masked=False)
    assert gpu_check.kernel_expected("mem_efficient", torch.float32, masked=True)
    ran = {"ok": True, "expected": True, "max_abs_difference": 1e-3}
    refused_as_expected = {"ok": False, "expected": False, "error": "No available kernel."}
    refused = {"ok": False, "expected": True, "error": "No available kernel."}
    fine = {"math/bfloat16/mask": ran, "flash/bfloat16/mask": refused_as_expected}
    assert gpu_check.attention_failures(fine) == []
    assert gpu_check.attention_failures({**fine, "flash/bfloat16/no mask": refused}) == ["flash/bfloat16/no mask"]
    assert gpu_check.attention_failures({"timed_out": 60}) == ["attention"]
    line = gpu_check._attention_lines({**fine, "flash/bfloat16/no mask": refused}, {})[0]
    assert "1/3 ran alone" in line and "refused as expected: flash/bfloat16/mask" in line
    assert "FAILED (expected to run): flash/bfloat16/no mask" in line


def test_an_isolated_check_runs_in_its_own_process_and_stops_at_its_budget(gpu_check, tmp_path):
    result = gpu_check.main(["--device", "cpu", "--quick", "--only", "precision,attention", "--isolate",
                             "--budgets", "attention=0.5", "--output", str(tmp_path)])
    assert result["precision"]["fp16_relative_difference"] < 0.05  # the child's figures came back
    assert (tmp_path / "check_precision" / "gpu_check.json").is_file()
    assert result["attention"] == {"timed_out": 0.5}  # a child cannot even start in half a second
    assert "over its budget of 0.5 s" in gpu_check._markdown(result)


@pytest.mark.slow
def test_the_two_rank_checks_run_under_torchrun_on_cpu(gpu_check, tmp_path):
    """The 2-GPU part of the check, on 2 CPU ranks with gloo: pretraining from --tree under DDP and FSDP (bf16),
    training under both, and a pretraining stopped by SIGTERM and resumed from the checkpoint it names."""
    result = gpu_check.check_multi_gpu(tmp_path, device="cpu")
    for name in ("ddp pretrain --tree", "fsdp bf16 pretrain --tree", "ddp train", "fsdp train"):
        assert result[name]["exit_code"] == 0, (name, result[name]["stderr_tail"])
    stopped = result["ddp pretrain: SIGTERM, then resume"]
    assert stopped["resumed"] and stopped["checkpoint"] == "last_model.pt", stopped
    assert stopped["stopped_exit_code"] != 0  # stopped by the signal, not finished
