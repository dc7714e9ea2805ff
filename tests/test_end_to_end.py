"""Unmocked round trips through the CLI on tiny synthetic data: pretrain -> train -> predict on CPU."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from aam.cli import cli

TINY = ["--embedding-dim", "16", "--attention-heads", "2", "--attention-layers", "1", "--token-limit", "24",
        "--max-bp", "150", "--batch-size", "8", "--seed", "3", "--device", "cpu", "--quiet"]


def invoke(*args: str):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result


def run_ok(*args: str):
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def pretrained(synthetic_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain")
    run_ok("pretrain", "--table", synthetic_dir["table"], "--tree", synthetic_dir["tree"], "--output-dir", out,
           "--epochs", 2, "--lr", "1e-3", *TINY)
    return out


def test_pretrain_writes_the_run_folder(pretrained):
    for name in ("config.json", "training.log", "train_samples.txt", "val_samples.txt", "pretrained_encoder.pt",
                 "checkpoints/best_model.pt", "checkpoints/last_model.pt", "plots/loss_curves.png",
                 "plots/unifrac_predicted_vs_true.png"):
        assert (pretrained / name).is_file(), name
    assert list((pretrained / "tensorboard").iterdir())
    config = json.loads((pretrained / "config.json").read_text())
    assert config["options"]["seed"] == 3 and config["options"]["embedding_dim"] == 16
    train = set((pretrained / "train_samples.txt").read_text().split())
    val = set((pretrained / "val_samples.txt").read_text().split())
    assert train and val and not train & val
    from aam.outputs.checkpoint import load_checkpoint

    state = load_checkpoint(pretrained / "checkpoints" / "last_model.pt")["training_state"]
    assert len(train) % 8  # a partial last batch exists, and pretraining leaves it out (full batches only)
    assert state["global_step"] == 2 * (len(train) // 8)


def test_train_then_predict_round_trip(synthetic_dir, pretrained, tmp_path):
    out = tmp_path / "train"
    run_ok("train", "--table", synthetic_dir["table"], "--metadata", synthetic_dir["metadata"],
           "--metadata-column", "target", "--pretrained-encoder", pretrained / "pretrained_encoder.pt",
           "--freeze-base", "--output-dir", out, "--epochs", 3, "--lr", "1e-3", *TINY)
    val = pd.read_csv(out / "val_predictions.tsv", sep="\t", dtype={"sample_id": str})
    assert list(val.columns[:3]) == ["sample_id", "prediction", "actual"]
    metadata = pd.read_csv(synthetic_dir["metadata"], sep="\t", dtype={"sample_id": str}).set_index("sample_id")
    np.testing.assert_allclose(val["actual"], metadata.loc[val["sample_id"], "target"], rtol=1e-6)
    # predictions are in original units (the target is far from the z-scored range)
    assert abs(val["prediction"].mean() - val["actual"].mean()) < 5 * val["actual"].std()

    predicted_path = tmp_path / "pred.tsv"
    run_ok("predict", "--model", out / "checkpoints" / "best_model.pt", "--table", synthetic_dir["table"],
           "--output", predicted_path, "--device", "cpu", "--quiet")
    predicted = pd.read_csv(predicted_path, sep="\t", dtype={"sample_id": str}).set_index("sample_id")
    assert len(predicted) == len(metadata)
    np.testing.assert_allclose(predicted.loc[val["sample_id"], "prediction"], val["prediction"], rtol=1e-4,
                               atol=1e-4)


def test_classifier_with_string_labels(synthetic_dir, tmp_path):
    out = tmp_path / "clf"
    run_ok("train", "--table", synthetic_dir["table"], "--metadata", synthetic_dir["metadata"],
           "--metadata-column", "label", "--classifier", "--output-dir", out, "--epochs", 2, *TINY)
    val = pd.read_csv(out / "val_predictions.tsv", sep="\t")
    labels = sorted(pd.read_csv(synthetic_dir["metadata"], sep="\t")["label"].unique())
    assert set(val["prediction"]) <= set(labels)
    probabilities = val[[f"prob_{label}" for label in labels]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-5)
    predicted_path = tmp_path / "pred.tsv"
    run_ok("predict", "--model", out / "checkpoints" / "best_model.pt", "--table", synthetic_dir["table"],
           "--output", predicted_path, "--device", "cpu", "--quiet")
    predicted = pd.read_csv(predicted_path, sep="\t", dtype={"sample_id": str}).set_index("sample_id")
    assert set(predicted["prediction"]) <= set(labels)
    assert (out / "plots" / "confusion_matrix.png").is_file()


@pytest.mark.parametrize("fusion", ["concat", "add", "gmu", "cross-attention", "perceiver"])
def test_every_fusion_trains_and_predicts(synthetic_dir, tmp_path, fusion):
    out = tmp_path / fusion
    run_ok("train", "--table", synthetic_dir["table"], "--metadata", synthetic_dir["metadata"],
           "--metadata-column", "target", "--categorical-columns", "site", "--categorical-fusion", fusion,
           "--cross-attn-heads", 2, "--perceiver-num-latents", 4, "--perceiver-num-layers", 1,
           "--count-embedding", "--output-dir", out, "--epochs", 1, *TINY)
    predicted_path = tmp_path / "pred.tsv"
    run_ok("predict", "--model", out / "checkpoints" / "best_model.pt", "--table", synthetic_dir["table"],
           "--metadata", synthetic_dir["metadata"], "--output", predicted_path, "--device", "cpu", "--quiet")
    predicted = pd.read_csv(predicted_path, sep="\t")
    assert np.isfinite(predicted["prediction"]).all()


def test_predict_averages_an_ensemble_of_checkpoints(synthetic_dir, tmp_path):
    """Several --model: the mean of the members' predictions, their spread as prediction_std. Members may differ
    in architecture (here one has a k-mer bag, the other not)."""
    members = []
    for seed, extra in ((3, []), (4, ["--kmer-size", "4"])):
        out = tmp_path / f"seed{seed}"
        run_ok("train", "--table", synthetic_dir["table"], "--metadata", synthetic_dir["metadata"],
               "--metadata-column", "target", "--output-dir", out, "--epochs", 1, *TINY, "--seed", seed, *extra)
        members.append(out / "checkpoints" / "best_model.pt")
    alone = []
    for i, member in enumerate(members):
        path = tmp_path / f"member{i}.tsv"
        run_ok("predict", "--model", member, "--table", synthetic_dir["table"], "--output", path,
               "--device", "cpu", "--quiet")
        alone.append(pd.read_csv(path, sep="\t", dtype={"sample_id": str}).set_index("sample_id")["prediction"])
    assert not np.allclose(alone[0], alone[1])  # the seeds give different members

    ensemble_path = tmp_path / "ensemble.tsv"
    run_ok("predict", "--model", members[0], "--model", members[1], "--table", synthetic_dir["table"],
           "--output", ensemble_path, "--device", "cpu", "--quiet")
    ensemble = pd.read_csv(ensemble_path, sep="\t", dtype={"sample_id": str}).set_index("sample_id")
    assert list(ensemble.columns) == ["prediction", "prediction_std", "unseen_read_share"]
    assert ensemble["unseen_read_share"].between(0, 1).all()
    stacked = np.stack([a.loc[ensemble.index].to_numpy() for a in alone])
    # the files hold 6 significant digits: a member near 25 carries up to 5e-5 of rounding into the mean
    rounding = 1e-5 * np.abs(stacked).max()
    np.testing.assert_allclose(ensemble["prediction"], stacked.mean(0), rtol=1e-5, atol=rounding)
    np.testing.assert_allclose(ensemble["prediction_std"], stacked.std(0, ddof=1), rtol=1e-4, atol=rounding)

    mixed = invoke("predict", "--model", members[0], "--model", _classifier(synthetic_dir, tmp_path, 3),
                   "--table", synthetic_dir["table"], "--output", tmp_path / "mixed.tsv", "--device", "cpu")
    assert mixed.exit_code == 2 and "task (regression or classification)" in mixed.output
    assert not (tmp_path / "mixed.tsv").exists()


def _classifier(synthetic_dir, tmp_path, seed: int):
    out = tmp_path / f"clf{seed}"
    run_ok("train", "--table", synthetic_dir["table"], "--metadata", synthetic_dir["metadata"],
           "--metadata-column", "label", "--classifier", "--output-dir", out, "--epochs", 1, *TINY, "--seed", seed)
    return out / "checkpoints" / "best_model.pt"


def test_predict_ensemble_of_classifiers_averages_probabilities(synthetic_dir, tmp_path):
    members = [_classifier(synthetic_dir, tmp_path, seed) for seed in (3, 4)]
    frames = []
    for i, args in enumerate([["--model", members[0]], ["--model", members[1]],
                              ["--model", members[0], "--model", members[1]]]):
        path = tmp_path / f"pred{i}.tsv"
        run_ok("predict", *args, "--table", synthetic_dir["table"], "--output", path, "--device", "cpu", "--quiet")
        frames.append(pd.read_csv(path, sep="\t", dtype={"sample_id": str}).set_index("sample_id"))
    columns = [c for c in frames[0].columns if c.startswith("prob_")]
    assert len(columns) >= 2
    expected = (frames[0][columns] + frames[1].loc[frames[0].index, columns]) / 2
    ensemble = frames[2].loc[frames[0].index]
    np.testing.assert_allclose(ensemble[columns], expected, rtol=1e-5, atol=1e-6)
    labels = [c.removeprefix("prob_") for c in columns]
    assert list(ensemble["prediction"].astype(str)) == [labels[i] for i in expected.to_numpy().argmax(1)]


class _Crash(Exception):
    pass


@pytest.mark.parametrize("extra", [[], ["--ema-decay", "0.9"]], ids=["plain", "ema"])
def test_resume_matches_uninterrupted_run(synthetic_dir, tmp_path, monkeypatch, extra):
    import aam.outputs.checkpoint as checkpoint_module

    base = ["train", "--table", synthetic_dir["table"], "--metadata", synthetic_dir["metadata"],
            "--metadata-column", "target", "--lr", "1e-3", "--patience", 50, "--epochs", 3,
            "--count-embedding", *TINY, *extra]
    run_ok(*base, "--output-dir", tmp_path / "full")

    original = checkpoint_module.save_checkpoint

    def crash_after_second_epoch(path, **kwargs):
        original(path, **kwargs)
        if kwargs["training_state"] and kwargs["training_state"]["epoch"] == 1 and "last" in str(path):
            raise _Crash

    monkeypatch.setattr(checkpoint_module, "save_checkpoint", crash_after_second_epoch)
    with pytest.raises(_Crash):
        invoke(*base, "--output-dir", tmp_path / "part")
    monkeypatch.setattr(checkpoint_module, "save_checkpoint", original)
    run_ok(*base, "--output-dir", tmp_path / "part",
           "--resume-from", tmp_path / "part" / "checkpoints" / "last_model.pt")

    full = torch.load(tmp_path / "full" / "checkpoints" / "last_model.pt", weights_only=False)
    resumed = torch.load(tmp_path / "part" / "checkpoints" / "last_model.pt", weights_only=False)
    assert resumed["training_state"]["epoch"] == full["training_state"]["epoch"] == 2
    for key, value in full["model_state"].items():
        torch.testing.assert_close(resumed["model_state"][key], value, rtol=1e-5, atol=1e-6)
    assert resumed["training_state"]["best_value"] == pytest.approx(full["training_state"]["best_value"])
    if extra:  # checkpoints hold the average; the raw weights, also restored on resume, differ from it
        raw, average = full["training_state"]["raw_model_state"], full["model_state"]
        assert full["training_state"]["ema_n_averaged"] == resumed["training_state"]["ema_n_averaged"] > 0
        assert any(not torch.equal(raw[k], average[k]) for k in raw if k.endswith("weight"))
        for key, value in raw.items():
            torch.testing.assert_close(resumed["training_state"]["raw_model_state"][key], value,
                                       rtol=1e-5, atol=1e-6)


def test_preset_sets_defaults_that_flags_override(synthetic_dir, tmp_path):
    from aam.cli.presets import PRESETS

    pre, out = tmp_path / "pre", tmp_path / "train"
    run_ok("pretrain", "--preset", "small-data", "--table", synthetic_dir["table"], "--tree", synthetic_dir["tree"],
           "--output-dir", pre, "--epochs", 1, "--token-limit", 24, "--seed", 1, "--device", "cpu", "--quiet")
    run_ok("train", "--preset", "small-data", "--table", synthetic_dir["table"], "--metadata",
           synthetic_dir["metadata"], "--metadata-column", "target", "--output-dir", out, "--epochs", 1,
           "--pretrained-encoder", pre / "pretrained_encoder.pt", "--seed", 1, "--device", "cpu", "--quiet")
    for run, command in ((pre, "pretrain"), (out, "train")):
        options = json.loads((run / "config.json").read_text())["options"]
        preset = {k: v for k, v in PRESETS["small-data"][command].items() if k != "epochs"}
        assert {k: options[k] for k in preset} == {**preset, **({"token_limit": 24} if command == "pretrain" else {})}
        assert options["epochs"] == 1
    checkpoint = torch.load(out / "checkpoints" / "best_model.pt", weights_only=False)
    assert checkpoint["training_state"]["ema_n_averaged"] > 0


def test_config_json_feeds_back(synthetic_dir, pretrained, tmp_path):
    out = tmp_path / "again"
    result = run_ok("pretrain", "--config", pretrained / "config.json", "--output-dir", out, "--epochs", 1)
    config = json.loads((out / "config.json").read_text())
    assert config["options"]["embedding_dim"] == 16 and config["options"]["epochs"] == 1
    assert result.exit_code == 0


def test_val_samples_fixes_the_split_and_rf_baseline_uses_it(synthetic_dir, pretrained, tmp_path):
    fold = tmp_path / "fold.txt"
    ids = (pretrained / "val_samples.txt").read_text().split()
    fold.write_text("\n".join(ids + ["not_a_sample"]) + "\n")
    out = tmp_path / "fixed"
    run_ok("train", "--table", synthetic_dir["table"], "--metadata", synthetic_dir["metadata"],
           "--metadata-column", "target", "--val-samples", fold, "--output-dir", out, "--epochs", 1, *TINY)
    assert sorted((out / "val_samples.txt").read_text().split()) == sorted(ids)
    val = pd.read_csv(out / "val_predictions.tsv", sep="\t", dtype={"sample_id": str})
    assert sorted(val["sample_id"]) == sorted(ids)
    run_ok("rf-baseline", "--table", synthetic_dir["table"], "--metadata", synthetic_dir["metadata"],
           "--metadata-column", "target", "--train-samples", out / "train_samples.txt", "--val-samples",
           out / "val_samples.txt", "--output", tmp_path / "rf.tsv", "--n-estimators", 20, "--n-jobs", 1, "--quiet")
    forest = pd.read_csv(tmp_path / "rf.tsv", sep="\t", dtype={"sample_id": str})
    assert list(forest.columns) == ["sample_id", "prediction", "actual"]
    assert sorted(forest["sample_id"]) == sorted(ids)
