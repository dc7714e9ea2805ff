"""The one place where command-line options become model and trainer configs."""

from __future__ import annotations

import dataclasses
import logging
import warnings
from typing import Any

from aam.errors import AamError
from aam.models import EncoderConfig, PredictorConfig
from aam.objectives.losses import validate_quantiles
from aam.training.config import TrainerConfig
from aam.workflows.run_config import FitRun, TrainRun

log = logging.getLogger("aam")

LEGACY_OUTPUT_FLAGS = {
    "bounded_targets": ("--bounded-targets", "bounded"),
    "learnable_output_scale": ("--learnable-output-scale", "nonnegative-learnable"),
}


def shared_options(run: FitRun, config_class: type) -> dict[str, Any]:
    """The run's values of the fields it shares by name with ``config_class``: one option, one field, no mapping
    written by hand (options that differ in name or meaning are given explicitly by the callers below)."""
    names = {f.name for f in dataclasses.fields(config_class)}
    return {f.name: getattr(run, f.name) for f in dataclasses.fields(run) if f.name in names}


def encoder_config_from_options(run: FitRun) -> EncoderConfig:
    """EncoderConfig from the shared model options of ``aam pretrain`` and ``aam train``."""
    try:
        return EncoderConfig(**{**shared_options(run, EncoderConfig), "asv_chunk_size": run.asv_chunk_size or None,
                                "distance_metric": run.unifrac_metric})
    except ValueError as err:
        raise AamError(str(err), source="model options") from None


def output_constraint_from_options(run: TrainRun) -> str:
    """``--output-constraint``, or the legacy flags mapped onto it with a visible deprecation warning."""
    legacy = []
    for key, (flag, constraint) in LEGACY_OUTPUT_FLAGS.items():
        if getattr(run, key):
            legacy.append((flag, constraint))
    activation = run.output_activation
    if activation and activation != "none":
        legacy.append((f"--output-activation {activation}", "nonnegative"))
    chosen = run.output_constraint
    for flag, constraint in legacy:
        message = (f"{flag} is deprecated; use --output-constraint {constraint}"
                   + (" (ignored because --output-constraint is given)" if chosen else ""))
        warnings.warn(message, FutureWarning, stacklevel=2)
        log.warning(message)
    if chosen:
        return chosen
    if len({c for _, c in legacy}) > 1:
        raise AamError("conflicting legacy output flags", source=legacy[1][0],
                       hint="give one --output-constraint instead")
    return legacy[0][1] if legacy else "none"


def _quantiles(run: TrainRun) -> tuple[float, ...] | None:
    if run.loss_type != "quantile":
        return None
    text = run.quantiles or "0.1,0.5,0.9"
    try:
        return validate_quantiles([float(q) for q in text.split(",")])
    except ValueError as err:
        raise AamError(str(err), source="--quantiles", hint="e.g. --quantiles 0.1,0.5,0.9") from None


def predictor_config_from_options(run: TrainRun, *, out_dim: int, cardinalities: tuple[int, ...],
                                  output_scaling_columns: tuple[int, ...]) -> PredictorConfig:
    """PredictorConfig from the ``aam train`` options and what the data told us (classes, categories)."""
    hidden = tuple(int(h) for h in run.regressor_hidden_dims.split(",")) if run.regressor_hidden_dims else ()
    if any(h < 1 for h in hidden):
        raise AamError("widths must be positive", source="--regressor-hidden-dims")
    try:
        return PredictorConfig(
            encoder=encoder_config_from_options(run), out_dim=out_dim, classifier=run.classifier,
            quantiles=_quantiles(run), count_prediction=run.count_prediction,
            categorical_cardinalities=cardinalities, categorical_embed_dim=run.categorical_embed_dim,
            categorical_fusion=run.categorical_fusion, gmu_gate=run.gmu_gate,
            cross_attn_heads=run.cross_attn_heads, perceiver_num_latents=run.perceiver_num_latents,
            perceiver_num_layers=run.perceiver_num_layers,
            conditional_output_scaling_columns=output_scaling_columns,
            output_constraint=output_constraint_from_options(run), regressor_hidden_dims=hidden,
            regressor_dropout=run.regressor_dropout, residual_regression_head=run.residual_regression_head,
            target_layer_norm=run.target_layer_norm,
            target_pooling=run.target_pooling, freeze_base=run.freeze_base,
        )
    except ValueError as err:
        raise AamError(str(err), source="model options") from None


def trainer_config_from_options(run: FitRun, *, best_metric: str) -> TrainerConfig:
    """TrainerConfig from the training options (a fine-tuning run adds its categorical learning rate and may
    freeze the encoder, which turns the masked-nucleotide objective off)."""
    mixed = run.mixed_precision
    fine_tuning = run if isinstance(run, TrainRun) else None
    frozen = fine_tuning is not None and fine_tuning.freeze_base
    try:
        return _trainer_config(run, best_metric, mixed, fine_tuning, frozen)
    except ValueError as err:  # "<field> must ...": the field is the flag
        field = str(err).split(" ", 1)[0]
        raise AamError(str(err).split(" ", 1)[-1], source="--" + field.replace("_", "-")) from None


def _trainer_config(run: FitRun, best_metric: str, mixed: str | None, fine_tuning: TrainRun | None,
                    frozen: bool) -> TrainerConfig:
    return TrainerConfig(**{
        **shared_options(run, TrainerConfig), "best_metric": best_metric,
        "categorical_lr": fine_tuning.categorical_lr if fine_tuning else None,
        "mixed_precision": None if mixed in (None, "none") else mixed, "progress": run.verbose,
        "mask_nucleotides": run.nuc_mask_ratio > 0 and run.nuc_penalty > 0 and not frozen})
