"""Self-contained checkpoints: wrapper prefixes stripped, exact rebuild, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from aam.errors import AamError
from aam.models import EncoderConfig, PredictorConfig, SequencePredictor
from aam.models.build import unwrap_model
from aam.outputs.checkpoint import load_checkpoint, save_checkpoint, strip_wrapper_prefixes
from aam.outputs.data_config import DataConfig
from aam.workflows.loading import load_predictor


def tiny_predictor() -> SequencePredictor:
    torch.manual_seed(0)
    return SequencePredictor(PredictorConfig(encoder=EncoderConfig(max_bp=20, embedding_dim=16, attention_heads=2,
                                                                   attention_layers=1, token_limit=8)))


def inputs():
    torch.manual_seed(1)
    tokens = torch.cat([torch.full((5, 1), 6), torch.randint(1, 5, (5, 20))], dim=1)
    asv_index = torch.tensor([[0, 1, 2], [3, 4, 0]])
    asv_mask = torch.tensor([[True, True, True], [True, True, False]])
    return tokens, asv_index, asv_mask, torch.tensor([[5.0, 3, 1], [2, 2, 0]])


def test_strip_prefixes_in_any_order():
    state = {"module._orig_mod.head.weight": 1, "_orig_mod.module.x": 2, "plain": 3}
    assert strip_wrapper_prefixes(state) == {"head.weight": 1, "x": 2, "plain": 3}


@pytest.mark.parametrize("wrap", ["dataparallel", "compiled_prefix"])
def test_wrapped_model_round_trip(tmp_path, wrap):
    model = tiny_predictor().eval()
    wrapped = nn.DataParallel(model) if wrap == "dataparallel" else model
    assert unwrap_model(wrapped) is model
    path = tmp_path / "best_model.pt"
    save_checkpoint(path, kind="predictor", model=wrapped, model_config=model.config.to_dict(), data={"max_bp": 20})
    if wrap == "compiled_prefix":  # a state dict saved by another tool from a compiled DDP model
        payload = torch.load(path, weights_only=False)
        payload["model_state"] = {f"module._orig_mod.{k}": v for k, v in payload["model_state"].items()}
        torch.save(payload, path)
    rebuilt, info = load_predictor(path)
    assert info == DataConfig(max_bp=20)
    batch = inputs()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(*batch)["prediction"], model(*batch)["prediction"])


def test_kind_and_version_errors(tmp_path):
    model = tiny_predictor()
    path = tmp_path / "encoder.pt"
    save_checkpoint(path, kind="encoder", model=model.base, model_config=model.config.encoder.to_dict())
    with pytest.raises(AamError, match="expected predictor"):
        load_checkpoint(path, expected_kind="predictor")
    payload = torch.load(path, weights_only=False)
    payload["version"] = 99
    torch.save(payload, path)
    with pytest.raises(AamError, match="newer"):
        load_checkpoint(path)
    torch.save({"weights": 1}, path)
    with pytest.raises(AamError, match="not an aam checkpoint"):
        load_checkpoint(path)


def test_weights_that_do_not_fit(tmp_path):
    model = tiny_predictor()
    path = tmp_path / "m.pt"
    save_checkpoint(path, kind="predictor", model=model, model_config=model.config.to_dict())
    payload = torch.load(path, weights_only=False)
    payload["model_state"].pop(next(iter(payload["model_state"])))
    torch.save(payload, path)
    with pytest.raises(AamError, match="does not fit"):
        load_predictor(path)


def test_checkpoints_of_earlier_versions_still_load_and_predict(synthetic_dir, tmp_path):
    """A checkpoint whose data section was written before the typed DataConfig (a dict without the training-ASV
    fingerprints, run record or forest weight, plus a key this version does not know) predicts exactly as the
    same weights with today's data section."""
    from click.testing import CliRunner

    from aam.cli import cli
    from aam.workflows.predict import run_predict
    from aam.workflows.run_config import PredictRun

    out = tmp_path / "run"
    result = CliRunner().invoke(cli, [str(a) for a in [
        "train", "--table", synthetic_dir["table"], "--metadata", synthetic_dir["metadata"], "--metadata-column",
        "target", "--embedding-dim", 16, "--attention-heads", 2, "--attention-layers", 1, "--token-limit", 16,
        "--epochs", 1, "--batch-size", 8, "--device", "cpu", "--output-dir", out, "--quiet"]])
    assert result.exit_code == 0, result.output
    today = out / "checkpoints" / "best_model.pt"
    payload = torch.load(today, weights_only=False)
    old_keys = ("max_bp", "token_limit", "asv_sampling", "metadata_column", "classifier", "class_labels",
                "target_transform", "normalize_by", "categorical_columns", "categorical_encoder", "quantiles", "seed")
    payload["data"] = {**{k: payload["data"][k] for k in old_keys}, "retired_key": 1}
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    _, info = load_predictor(old)
    assert info.training_asvs is None and info.forest_weight is None and info.run == {}
    assert info.max_bp == 150 and info.token_limit == 16
    new_frame = run_predict(PredictRun(model_paths=(str(today),), table=synthetic_dir["table"],
                                       output=str(tmp_path / "a.tsv")))
    old_frame = run_predict(PredictRun(model_paths=(str(old),), table=synthetic_dir["table"],
                                       output=str(tmp_path / "b.tsv")))
    assert "unseen_read_share" in new_frame and "unseen_read_share" not in old_frame
    np.testing.assert_allclose(old_frame["prediction"], new_frame["prediction"])
