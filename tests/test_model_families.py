"""The model-family registry: a family registered from outside the package (a toy that predicts the training
mean) trains, predicts, is inspected and cross-validated from the CLI like the built-in ones; its checkpoint
records the family; options it cannot honour are refused from its capabilities; old checkpoints still load."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from aam.cli import cli
from aam.families import MODEL_FAMILIES, Capabilities, ModelFamily, family_name
from aam.outputs.checkpoint import load_checkpoint
from aam.workflows.fitted_run import FitInputs, every_sample_targets, fitted_data_config, write_fitted_run

TOY = "mean-target"


@dataclasses.dataclass(frozen=True)
class MeanConfig:
    classifier: bool = False
    out_dim: int = 1
    model_type: str = TOY

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> MeanConfig:
        return cls(**data)


class MeanModel(nn.Module):
    """Predicts the training samples' mean target (model units), or their class frequencies, for every sample."""

    def __init__(self, config: MeanConfig):
        super().__init__()
        self.config = config
        self.value = nn.Parameter(torch.zeros(config.out_dim))

    def forward(self, tokens, asv_index, asv_mask, counts=None, **_):
        value = torch.log_softmax(self.value, -1) if self.config.classifier else self.value
        return {"prediction": value.expand(asv_index.shape[0], -1)}


def fit_mean(inputs: FitInputs):
    targets = every_sample_targets(inputs)
    run = inputs.run
    out_dim = len(targets.setup.class_labels) if run.classifier else 1
    config = MeanConfig(classifier=run.classifier, out_dim=out_dim)
    model = MeanModel(config)
    values = targets.setup.model_targets
    if run.classifier:
        share = np.bincount(values, minlength=out_dim) / len(values)
        model.value.data = torch.log(torch.tensor(share, dtype=torch.float32).clamp_min(1e-6))
        outputs = np.tile(share, (len(values), 1))
    else:
        model.value.data = torch.tensor([float(values.mean())])
        outputs = np.full(len(values), float(values.mean()))
    return write_fitted_run(inputs, targets, family=TOY, model=model, model_config=config.to_dict(),
                            predictions=targets.decode(outputs), data_info=fitted_data_config(inputs, targets))


@pytest.fixture
def toy_family():
    MODEL_FAMILIES.register(TOY, ModelFamily(summary="the training mean", config=MeanConfig, model=MeanModel,
                                             train=fit_mean, capabilities=Capabilities()))
    yield TOY
    MODEL_FAMILIES.unregister(TOY)


def run_cli(*args, code=0):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result


def test_a_registered_family_trains_predicts_is_inspected_and_cross_validated(toy_family, synthetic_dir, tmp_path):
    common = ["--table", synthetic_dir["table"], "--metadata", synthetic_dir["metadata"]]
    run = tmp_path / "toy"
    run_cli("train", *common, "--metadata-column", "target", "--model-type", TOY, "--output-dir", run, "--quiet")
    checkpoint = load_checkpoint(run / "checkpoints" / "best_model.pt")
    assert checkpoint["family"] == TOY
    target = pd.read_csv(synthetic_dir["metadata"], sep="\t")["target"]
    predictions = tmp_path / "predictions.tsv"
    run_cli("predict", "--model", run / "checkpoints" / "best_model.pt", "--table", synthetic_dir["table"],
            "--output", predictions)
    predicted = pd.read_csv(predictions, sep="\t")["prediction"]
    np.testing.assert_allclose(predicted, target.mean(), rtol=1e-4)  # decoded back to original units
    card = json.loads(run_cli("inspect", run / "checkpoints" / "best_model.pt", "--json").output)
    assert card["model_type"] == TOY and card["metrics"]["on"] == "inner out-of-fold predictions"
    assert (run / "report.html").is_file()
    out = tmp_path / "cv"
    run_cli("cross-validate", *common, "--metadata-column", "label", "--classifier", "--model-type", TOY,
            "--n-folds", 2, "--baselines", "forest", "--rf-n-estimators", 10, "--seed", 1, "--output-dir", out,
            "--quiet")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["aam"]["fold_mean"]["auroc"] == pytest.approx(0.5)  # one answer for every sample of a fold
    assert summary["best_baseline"] == "forest"


def test_options_a_family_cannot_honour_are_refused(toy_family, synthetic_dir, tmp_path):
    assert set(MODEL_FAMILIES[TOY].refused_options()) >= {"categorical_columns", "pretrained_encoder",
                                                          "val_samples", "distributed", "blend_baselines"}
    assert "categorical_columns" not in MODEL_FAMILIES["transformer"].refused_options()
    common = ["train", "--table", synthetic_dir["table"], "--metadata", synthetic_dir["metadata"],
              "--metadata-column", "target", "--model-type", TOY]
    for extra, named in ((["--categorical-columns", "site"], "--categorical-columns"),
                         (["--blend-baselines", "forest"], "--blend-baselines"),
                         (["--loss-type", "quantile"], "--loss-type")):
        result = run_cli(*common, *extra, "--output-dir", tmp_path / "x", code=2)
        assert named in result.output and f"--model-type {TOY}" in result.output
        assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
    result = run_cli(*common[:-1], "transformer", "--group-readout", "boosted", "--output-dir", tmp_path / "z",
                     code=2)  # an option only another family reads
    assert "--group-readout: is an option of --model-type sequence-groups, not transformer" in result.output
    result = run_cli(*common[:-1], "no-such-family", "--output-dir", tmp_path / "y", code=2)
    assert "no-such-family" in result.output and TOY in result.output  # the choices come from the registry


def test_family_of_checkpoints_written_before_it_was_recorded():
    assert family_name({"model_config": {"embedding_dim": 8}}) == "transformer"
    assert family_name({"model_config": {"model_type": "sequence-groups"}}) == "sequence-groups"
    assert family_name({"family": TOY, "model_config": {}}) == TOY
