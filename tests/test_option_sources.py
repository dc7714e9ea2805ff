"""The click options take their defaults from the config dataclasses and their choices from the registries
(#16); these tests fail when a declaration drifts from its source (an option still written as a literal, or a
registry whose implementations and names disagree)."""

from __future__ import annotations

import dataclasses

import click
import pytest

from aam.baselines import BASELINES, FOREST_MAX_FEATURES, FOREST_TREES
from aam.cli.cross_validate import command as cross_validate_command
from aam.cli.demo import command as demo_command
from aam.cli.embed import command as embed_command
from aam.cli.explain import command as explain_command
from aam.cli.inspect import command as inspect_command
from aam.cli.predict import command as predict_command
from aam.cli.pretrain import command as pretrain_command
from aam.cli.rf_baseline import command as rf_baseline_command
from aam.cli.train import command as train_command
from aam.cli.unifrac import command as unifrac_command
from aam.data.normalization import TARGET_TRANSFORMS
from aam.errors import AamError
from aam.models import EncoderConfig, PredictorConfig
from aam.models.asv_encoder import MASK_STRATEGIES
from aam.models.config import DISTANCE_METRICS, GMU_GATES, TARGET_POOLINGS
from aam.models.fusion import FUSIONS
from aam.models.heads import OUTPUT_CONSTRAINTS
from aam.models.layers import ATTENTION_BACKENDS
from aam.models.sample_encoder import COUNT_EMBEDDINGS
from aam.models.sequence_groups import MODEL_TYPE as SEQUENCE_GROUPS
from aam.objectives.losses import TARGET_LOSSES
from aam.objectives.metrics import BEST_METRICS
from aam.training.optim import OPTIMIZERS
from aam.training.precision import AUTOCAST_DTYPES
from aam.training.schedulers import SCHEDULERS
from aam.training.trainer import TrainerConfig
from aam.unifrac.metrics import ALIASES, METRICS
from aam.workflows.attribution import METHODS as ATTRIBUTION_METHODS
from aam.workflows.config_mapping import (
    encoder_config_from_options,
    predictor_config_from_options,
    trainer_config_from_options,
)
from aam.workflows.run_config import (
    CrossValidateRun,
    DemoRun,
    EmbedRun,
    ExplainRun,
    InspectRun,
    PredictRun,
    PretrainRun,
    RfBaselineRun,
    TrainRun,
    UnifracRun,
    option_fields,
)


def choices(command: click.Command, flag: str) -> set[str]:
    (param,) = [p for p in command.params if flag in p.opts]
    return set(param.type.choices)


def defaults(command: click.Command) -> dict:
    return {p.name: p.default for p in command.params if p.name and p.expose_value}


@pytest.mark.parametrize("command, flag, registry", [
    (train_command, "--categorical-fusion", set(FUSIONS)),
    (train_command, "--target-pooling", set(TARGET_POOLINGS)),
    (train_command, "--output-constraint", set(OUTPUT_CONSTRAINTS)),
    (train_command, "--loss-type", set(TARGET_LOSSES)),
    (train_command, "--target-transform", set(TARGET_TRANSFORMS)),
    (train_command, "--gmu-gate", set(GMU_GATES)),
    (train_command, "--best-metric", set(BEST_METRICS)),
    (train_command, "--optimizer", set(OPTIMIZERS)),
    (train_command, "--scheduler", set(SCHEDULERS)),
    (train_command, "--unifrac-metric", set(DISTANCE_METRICS)),
    (train_command, "--count-embedding-method", set(COUNT_EMBEDDINGS)),
    (train_command, "--nuc-mask-strategy", set(MASK_STRATEGIES)),
    (train_command, "--attn-implementation", set(ATTENTION_BACKENDS)),
    (train_command, "--mixed-precision", {"none" if k == "fp32" else k for k in AUTOCAST_DTYPES}),
    (train_command, "--model-type", {"transformer", SEQUENCE_GROUPS}),
    (pretrain_command, "--optimizer", set(OPTIMIZERS)),
    (pretrain_command, "--unifrac-metric", set(DISTANCE_METRICS)),
    (unifrac_command, "--metric", set(METRICS) | set(ALIASES)),
    (explain_command, "--method", set(ATTRIBUTION_METHODS)),
])
def test_cli_choices_are_their_registry(command, flag, registry):
    assert choices(command, flag) == registry


def _differences(built, reference) -> dict[str, tuple]:
    out = {}
    for field in dataclasses.fields(built):
        a, b = getattr(built, field.name), getattr(reference, field.name)
        if dataclasses.is_dataclass(a):
            out.update({f"{field.name}.{k}": v for k, v in _differences(a, b).items()})
        elif a != b:
            out[field.name] = (a, b)
    return out


REQUIRED = {"table": "t.biom", "output_dir": "out", "metadata": "m.tsv", "metadata_column": "y"}


def test_cli_defaults_build_the_default_configs():
    train = TrainRun.from_options({**defaults(train_command), **REQUIRED})
    built = predictor_config_from_options(train, out_dim=1, cardinalities=(), output_scaling_columns=())
    assert _differences(built, PredictorConfig(encoder=EncoderConfig())) == {}
    trainer = trainer_config_from_options(train, best_metric=TrainerConfig().best_metric)
    assert _differences(trainer, TrainerConfig()) == {}
    pretrain = PretrainRun.from_options({**defaults(pretrain_command), "table": "t.biom", "output_dir": "out",
                                         "tree": "t.nwk"})
    assert _differences(encoder_config_from_options(pretrain), EncoderConfig()) == {}


# which options of a run class a command does not offer (the cross-validation folds forbid or set them)
NOT_OFFERED = {"cross-validate": {"distributed", "data_parallel", "fsdp", "fsdp_sharded_checkpoint", "sync_batchnorm"}}


@pytest.mark.parametrize("command, run_class", [
    (pretrain_command, PretrainRun), (train_command, TrainRun), (cross_validate_command, CrossValidateRun),
    (predict_command, PredictRun), (embed_command, EmbedRun), (explain_command, ExplainRun),
    (rf_baseline_command, RfBaselineRun), (unifrac_command, UnifracRun), (inspect_command, InspectRun),
    (demo_command, DemoRun),
])
def test_each_command_offers_its_run_configs_options_with_its_defaults(command, run_class):
    params = {p.name: p for p in command.params if p.name and p.expose_value}
    fields = {f.name: f for f in dataclasses.fields(run_class) if f.name in option_fields(run_class)}
    assert set(params) == set(fields) - NOT_OFFERED.get(command.name, set())
    for name, param in params.items():
        default = fields[name].default
        if default is dataclasses.MISSING:
            assert param.required, name
        else:
            assert not param.required and param.default == default, (name, param.default, default)


def test_a_run_is_checked_when_it_is_built():
    with pytest.raises(AamError, match="--distributed and --fsdp cannot be combined"):
        TrainRun.from_options(REQUIRED, distributed=True, fsdp=True)
    with pytest.raises(AamError, match="--residual-regression-head needs --regressor-hidden-dims"):
        TrainRun.from_options(REQUIRED, residual_regression_head=True)
    with pytest.raises(AamError, match="pretraining needs distance targets"):
        PretrainRun(table="t.biom", output_dir="out")
    with pytest.raises(AamError, match="not available in cross-validation"):
        CrossValidateRun.from_options(REQUIRED, resume_from="last_model.pt")
    with pytest.raises(AamError, match="--forest-weight"):
        PredictRun(model_paths=("m.pt",), table="t.biom", output="p.tsv", forest_weight="2")
    with pytest.raises(TypeError, match="no option embeding_dim"):
        TrainRun.from_options({**REQUIRED, "embeding_dim": 8})


RF = {"table": "t.biom", "metadata": "m.tsv", "metadata_column": "y", "output": "p.tsv"}


@pytest.mark.parametrize("build, named, message", [
    (lambda: EmbedRun(model_path="m.pt", table="t", output="e.csv"), "--output", "must end in .tsv or .npy"),
    (lambda: EmbedRun(model_path="m.pt", table="t", output="e.tsv", asv_output="a.txt"), "--asv-output",
     "must end in"),
    (lambda: EmbedRun(model_path="m.pt", table="t", output="e.tsv", batch_size=0), "--batch-size", "at least 1"),
    (lambda: EmbedRun(model_path="m.pt", table="t", output="e.tsv", color_by="site"), "--color-by",
     "needs the metadata"),
    (lambda: EmbedRun(model_path="m.pt", table="t", output="e.tsv", plot="p.pdf"), "--plot", "must end in .png"),
    (lambda: ExplainRun(model_paths=(), table="t", output_dir="o"), "--model", "at least one checkpoint"),
    (lambda: ExplainRun(model_paths="m.pt", table="t", output_dir="o", method="shap"), "--method",
     "unknown method 'shap'"),
    (lambda: ExplainRun(model_paths="m.pt", table="t", output_dir="o", top_asvs=0), "--top-asvs", "at least 1"),
    (lambda: ExplainRun(model_paths="m.pt", table="t", output_dir="o", top_per_sample=0), "--top-per-sample",
     "at least 1"),
    (lambda: ExplainRun(model_paths="m.pt", table="t", output_dir="o", batch_size=0), "--batch-size", "at least 1"),
    (lambda: ExplainRun(model_paths="m.pt", table="t", output_dir="o", group_column="subject"), "--group-column",
     "needs --metadata"),
    (lambda: RfBaselineRun(**RF, baseline="svm"), "--baseline", "unknown baseline 'svm'"),
    (lambda: RfBaselineRun(**RF, folds="f.tsv", train_samples="t.txt"), "--folds", "either --train-samples"),
    (lambda: RfBaselineRun(**RF, train_samples="t.txt"), "--val-samples", "give both"),
    (lambda: RfBaselineRun(**RF, folds="f.tsv", save_model="f.joblib"), "--save-model", "not of cross-validation"),
    (lambda: UnifracRun(table="t", output="d.h5", metric="euclid"), "--metric", "unknown metric"),
    (lambda: UnifracRun(table="t", output="d.parquet"), "d.parquet", "cannot write a distance matrix"),
])
def test_a_run_names_the_flag_it_refuses(build, named, message):
    with pytest.raises(AamError, match=message) as caught:
        build()
    assert caught.value.one_line().startswith(f"{named}: ")


def test_the_forest_settings_are_written_once():
    assert CrossValidateRun.from_options(REQUIRED).rf_n_estimators == FOREST_TREES
    rf = RfBaselineRun(**RF)
    assert (rf.n_estimators, rf.max_features) == (FOREST_TREES, FOREST_MAX_FEATURES)
    forest = BASELINES["forest"].build(classifier=False, seed=0, n_jobs=1)
    assert (forest[-1].n_estimators, forest[-1].max_features) == (FOREST_TREES, FOREST_MAX_FEATURES)


def test_a_run_round_trips_through_its_options_and_resolves_loss_config():
    run = TrainRun.from_options(REQUIRED, loss_config='{"0": "mae"}', embedding_dim=32)
    assert run.loss_type == "mae"
    assert TrainRun.from_options(run.options()) == run
    fold = CrossValidateRun.from_options(REQUIRED, members=2).recipe(output_dir="fold", seed=3)
    assert type(fold) is TrainRun and fold.output_dir == "fold" and fold.seed == 3
    assert PredictRun(model_paths="m.pt", table="t", output="o").model_paths == ("m.pt",)
    explain = ExplainRun(model_paths=["a.pt", "b.pt"], table="t", output_dir="o")
    assert explain.model_paths == ("a.pt", "b.pt") and ExplainRun.from_options(explain.options()) == explain
