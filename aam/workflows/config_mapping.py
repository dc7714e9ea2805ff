"""The one place where command-line options become model and trainer configs."""

from __future__ import annotations

import logging
import warnings
from typing import Any

from aam.errors import AamError
from aam.models import EncoderConfig, PredictorConfig
from aam.training.config import TrainerConfig
from aam.training.losses import validate_quantiles

log = logging.getLogger("aam")
ENCODER, PREDICTOR, TRAINER = EncoderConfig(), PredictorConfig(), TrainerConfig()  # defaults of missing options

LEGACY_OUTPUT_FLAGS = {
    "bounded_targets": ("--bounded-targets", "bounded"),
    "learnable_output_scale": ("--learnable-output-scale", "nonnegative-learnable"),
}


def encoder_config_from_options(opts: dict[str, Any]) -> EncoderConfig:
    """EncoderConfig from the shared model options of ``aam pretrain`` and ``aam train``."""
    try:
        return EncoderConfig(
            max_bp=opts["max_bp"], embedding_dim=opts["embedding_dim"], attention_heads=opts["attention_heads"],
            attention_layers=opts["attention_layers"], ffn_ratio=opts["ffn_ratio"], dropout=opts["dropout"],
            token_limit=opts["token_limit"], count_embedding=opts["count_embedding"],
            count_embedding_method=opts["count_embedding_method"], nuc_mask_ratio=opts["nuc_mask_ratio"],
            nuc_mask_strategy=opts["nuc_mask_strategy"], gradient_checkpointing=opts["gradient_checkpointing"],
            asv_chunk_size=opts.get("asv_chunk_size") or None, kmer_size=opts.get("kmer_size", ENCODER.kmer_size),
            distance_metric=opts["unifrac_metric"],
        )
    except ValueError as err:
        raise AamError(str(err), source="model options") from None


def output_constraint_from_options(opts: dict[str, Any]) -> str:
    """``--output-constraint``, or the legacy flags mapped onto it with a visible deprecation warning."""
    legacy = []
    for key, (flag, constraint) in LEGACY_OUTPUT_FLAGS.items():
        if opts.get(key):
            legacy.append((flag, constraint))
    activation = opts.get("output_activation")
    if activation and activation != "none":
        legacy.append((f"--output-activation {activation}", "nonnegative"))
    chosen = opts.get("output_constraint")
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


def _quantiles(opts: dict[str, Any]) -> tuple[float, ...] | None:
    if opts.get("loss_type") != "quantile":
        return None
    text = opts.get("quantiles") or "0.1,0.5,0.9"
    try:
        return validate_quantiles([float(q) for q in text.split(",")])
    except ValueError as err:
        raise AamError(str(err), source="--quantiles", hint="e.g. --quantiles 0.1,0.5,0.9") from None


def predictor_config_from_options(opts: dict[str, Any], *, out_dim: int, cardinalities: tuple[int, ...],
                                  output_scaling_columns: tuple[int, ...]) -> PredictorConfig:
    """PredictorConfig from the ``aam train`` options and what the data told us (classes, categories)."""
    hidden = tuple(int(h) for h in opts["regressor_hidden_dims"].split(",")) if opts.get(
        "regressor_hidden_dims") else ()
    if any(h < 1 for h in hidden):
        raise AamError("widths must be positive", source="--regressor-hidden-dims")
    try:
        return PredictorConfig(
            encoder=encoder_config_from_options(opts), out_dim=out_dim, classifier=bool(opts["classifier"]),
            quantiles=_quantiles(opts), count_prediction=opts["count_prediction"],
            categorical_cardinalities=cardinalities, categorical_embed_dim=opts["categorical_embed_dim"],
            categorical_fusion=opts["categorical_fusion"], gmu_gate=opts["gmu_gate"],
            cross_attn_heads=opts["cross_attn_heads"], perceiver_num_latents=opts["perceiver_num_latents"],
            perceiver_num_layers=opts["perceiver_num_layers"],
            conditional_output_scaling_columns=output_scaling_columns,
            output_constraint=output_constraint_from_options(opts), regressor_hidden_dims=hidden,
            regressor_dropout=opts["regressor_dropout"], residual_regression_head=opts["residual_regression_head"],
            target_layer_norm=opts["target_layer_norm"],
            target_pooling=opts.get("target_pooling", PREDICTOR.target_pooling), freeze_base=bool(opts.get("freeze_base")),
        )
    except ValueError as err:
        raise AamError(str(err), source="model options") from None


def trainer_config_from_options(opts: dict[str, Any], *, best_metric: str) -> TrainerConfig:
    """TrainerConfig from the training options."""
    mixed = opts.get("mixed_precision")
    return TrainerConfig(
        epochs=opts["epochs"], optimizer=opts["optimizer"], lr=opts["lr"], weight_decay=opts["weight_decay"],
        categorical_lr=opts.get("categorical_lr"), scheduler=opts["scheduler"], warmup_steps=opts.get("warmup_steps"),
        scheduler_t0=opts.get("scheduler_t0"), scheduler_t_mult=opts.get("scheduler_t_mult"),
        scheduler_eta_min=opts.get("scheduler_eta_min"), scheduler_patience=opts.get("scheduler_patience"),
        scheduler_factor=opts.get("scheduler_factor"), scheduler_min_lr=opts.get("scheduler_min_lr"),
        patience=opts["patience"], max_grad_norm=opts.get("max_grad_norm"),
        gradient_accumulation_steps=opts["gradient_accumulation_steps"],
        mixed_precision=None if mixed in (None, "none") else mixed, compile_model=opts["compile_model"],
        best_metric=best_metric, mask_nucleotides=opts["nuc_mask_ratio"] > 0 and opts["nuc_penalty"] > 0
        and not opts.get("freeze_base"), log_grad_norms=opts.get("log_grad_norms", TRAINER.log_grad_norms),
        progress=opts.get("verbose", True), ema_decay=opts.get("ema_decay"),
        memory_profile=bool(opts.get("memory_profile")),
        checkpoint_every_steps=opts.get("checkpoint_every_steps"),
        progress_interval=opts.get("progress_interval", TRAINER.progress_interval),
        attn_implementation=opts.get("attn_implementation") or TRAINER.attn_implementation, tf32=bool(opts.get("tf32")),
    )
