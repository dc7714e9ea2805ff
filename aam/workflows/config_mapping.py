"""The one place where command-line options become model and trainer configs."""

from __future__ import annotations

import logging
import warnings

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


def encoder_config_from_options(run: FitRun) -> EncoderConfig:
    """EncoderConfig from the shared model options of ``aam pretrain`` and ``aam train``."""
    try:
        return EncoderConfig(
            max_bp=run.max_bp, embedding_dim=run.embedding_dim, attention_heads=run.attention_heads,
            attention_layers=run.attention_layers, ffn_ratio=run.ffn_ratio, dropout=run.dropout,
            token_limit=run.token_limit, count_embedding=run.count_embedding,
            count_embedding_method=run.count_embedding_method, nuc_mask_ratio=run.nuc_mask_ratio,
            nuc_mask_strategy=run.nuc_mask_strategy, gradient_checkpointing=run.gradient_checkpointing,
            asv_chunk_size=run.asv_chunk_size or None, kmer_size=run.kmer_size,
            distance_metric=run.unifrac_metric,
        )
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
    return TrainerConfig(
        epochs=run.epochs, optimizer=run.optimizer, lr=run.lr, weight_decay=run.weight_decay,
        categorical_lr=fine_tuning.categorical_lr if fine_tuning else None, scheduler=run.scheduler, warmup_steps=run.warmup_steps,
        scheduler_t0=run.scheduler_t0, scheduler_t_mult=run.scheduler_t_mult,
        scheduler_eta_min=run.scheduler_eta_min, scheduler_patience=run.scheduler_patience,
        scheduler_factor=run.scheduler_factor, scheduler_min_lr=run.scheduler_min_lr,
        patience=run.patience, max_grad_norm=run.max_grad_norm,
        gradient_accumulation_steps=run.gradient_accumulation_steps,
        mixed_precision=None if mixed in (None, "none") else mixed, compile_model=run.compile_model,
        best_metric=best_metric, mask_nucleotides=run.nuc_mask_ratio > 0 and run.nuc_penalty > 0
        and not frozen, log_grad_norms=run.log_grad_norms,
        progress=run.verbose, ema_decay=run.ema_decay,
        memory_profile=run.memory_profile,
        checkpoint_every_steps=run.checkpoint_every_steps,
        progress_interval=run.progress_interval, val_every_steps=run.val_every_steps,
        attn_implementation=run.attn_implementation, tf32=run.tf32,
    )
