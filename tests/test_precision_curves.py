"""bf16 pretraining tracks fp32 (issue #29 point 3, the CPU half): the same tiny `aam pretrain` run, 200
optimizer steps, in fp32 and under bf16 autocast, from the same seed.

Why bf16 strays more than fp16 and by how much: both round each matmul's inputs, bf16 to 8 significant bits
and fp16 to 11, so bf16's rounding error per operation is 2^3 = 8 times fp16's (unit roundoff 2^-8 against
2^-11); fp16 pays for its precision with range, hence its loss scaler. The bound below (1e-3 relative on every
epoch's training loss) is ~4 times what this run shows (2e-4); fp16 on the same run stays within 4e-5.
"""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from aam.cli import cli

TINY = ["--embedding-dim", "16", "--attention-heads", "2", "--attention-layers", "1", "--token-limit", "16",
        "--max-bp", "40", "--batch-size", "4", "--seed", "3", "--device", "cpu", "--quiet"]


def _curve(synthetic_dir, out, precision: str) -> list[float]:
    result = CliRunner().invoke(cli, [str(a) for a in [
        "pretrain", "--table", synthetic_dir["table"], "--tree", synthetic_dir["tree"], "--output-dir", out,
        "--epochs", 20, "--lr", "1e-3", "--mixed-precision", precision, "--test-size", 0.15, *TINY]])
    assert result.exit_code == 0, result.output
    state = torch.load(out / "checkpoints" / "last_model.pt", map_location="cpu", weights_only=False)
    history = state["training_state"]["history"]
    assert len(history) == 20 and state["training_state"]["global_step"] == 200  # 40 training samples, 10 full batches
    return [row["train_loss"] for row in history]


def test_a_200_step_bf16_pretraining_curve_tracks_fp32(synthetic_dir, tmp_path):
    fp32 = _curve(synthetic_dir, tmp_path / "fp32", "none")
    bf16 = _curve(synthetic_dir, tmp_path / "bf16", "bf16")
    assert fp32[-1] < 0.8 * fp32[0]  # it learns: the comparison is over a moving curve, not a flat one
    for epoch, (low, full) in enumerate(zip(bf16, fp32)):
        assert low == pytest.approx(full, rel=1e-3), epoch
