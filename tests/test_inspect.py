"""``aam inspect``: the model card agrees with what the run wrote (split, ASVs, scores, transform, options)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from aam.cli import cli
from aam.data.novelty import training_fingerprints
from aam.outputs.checkpoint import load_checkpoint
from aam.workflows.inputs import load_amplicon_data

TINY = ["--embedding-dim", "16", "--attention-heads", "2", "--attention-layers", "1", "--token-limit", "24",
        "--max-bp", "150", "--batch-size", "8", "--seed", "3", "--device", "cpu", "--quiet"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(synthetic_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("inspect") / "run"
    result = invoke("train", "--table", synthetic_dir["table"], "--metadata", synthetic_dir["metadata"],
                    "--metadata-column", "target", "--group-column", "site", "--epochs", 2, "--output-dir", out, *TINY)
    assert result.exit_code == 0, result.output
    return out


def test_card_matches_the_run(trained, synthetic_dir):
    path = trained / "checkpoints" / "best_model.pt"
    result = invoke("inspect", path, "--json")
    assert result.exit_code == 0, result.output
    card = json.loads(result.output)
    checkpoint = load_checkpoint(path)
    train_ids = (trained / "train_samples.txt").read_text().split()
    val_ids = (trained / "val_samples.txt").read_text().split()
    data = load_amplicon_data(synthetic_dir["table"], max_bp=150)
    assert card["task"] == "regression" and card["target"] == "target" and card["model_type"] == "transformer"
    assert card["target_transform"]["name"] == "zscore"
    training = card["training"]
    assert (training["samples"], training["validation_samples"]) == (len(train_ids), len(val_ids))
    assert training["group_column"] == "site" and training["groups"] >= 2
    assert training["asvs"] == len(training_fingerprints(data.counts, data.tokens, data.rows_of(train_ids)))
    best = checkpoint["training_state"]["history"][-1]
    assert card["metrics"]["scores"]["val_mae"] == pytest.approx(best["val_mae"])
    assert card["options"]["metadata_column"] == "target" and card["options"]["seed"] == 3
    assert card["created"] != "not recorded"

    text = invoke("inspect", path).output
    assert "predicts       regression of 'target'" in text and "target scale   zscore" in text
    assert f"trained on     {len(train_ids)} samples ({len(val_ids)} validation), grouped by 'site'" in text
    assert f"val_mae={best['val_mae']:.4g}" in text


def test_encoder_and_old_checkpoints(trained, synthetic_dir, tmp_path):
    pre = tmp_path / "pre"
    assert invoke("pretrain", "--table", synthetic_dir["table"], "--tree", synthetic_dir["tree"], "--output-dir", pre,
                  "--epochs", 1, *TINY).exit_code == 0
    result = invoke("inspect", pre / "pretrained_encoder.pt")
    assert result.exit_code == 0, result.output
    assert "kind           encoder" in result.output and "predicts" not in result.output

    checkpoint = load_checkpoint(trained / "checkpoints" / "best_model.pt")
    for key in ("created",):
        checkpoint.pop(key)
    for key in ("run", "training_asvs"):
        checkpoint["data"].pop(key)
    old = tmp_path / "old.pt"
    torch.save(checkpoint, old)
    result = invoke("inspect", old)
    assert result.exit_code == 0, result.output
    assert "trained on     not recorded samples" in result.output and "options        not recorded" in result.output
    assert np.isfinite(json.loads(invoke("inspect", old, "--json").output)["metrics"]["scores"]["val_mae"])


def test_a_file_that_is_not_a_checkpoint_is_one_line(tmp_path):
    bad = tmp_path / "notes.pt"
    bad.write_text("hello")
    result = invoke("inspect", bad)
    assert result.exit_code == 2 and "Traceback" not in result.output and "notes.pt" in result.output
