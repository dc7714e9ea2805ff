"""Typed run configs: what ``aam pretrain``, ``aam train``, ``aam cross-validate``, ``aam predict``, ``aam embed``,
``aam explain``, ``aam rf-baseline`` and ``aam unifrac`` were asked to do, one field per option, with its default,
checked once when the run is built.

The click options read their defaults from these classes (and the model and trainer fields from
``EncoderConfig``, ``PredictorConfig`` and ``TrainerConfig``, which the fields here name), so a default is
written once; ``tests/test_option_sources.py`` fails when a command's options and its run class differ.
Workflows take a run and read fields; cross-flag rules live in ``check`` and raise the usual one-line
``AamError`` naming the flag. Torch-free, so the CLI builds runs without importing torch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

from aam.baselines import BASELINES, FOREST_MAX_FEATURES, FOREST_TREES, TREE_BASELINES
from aam.errors import AamError
from aam.models.config import TREE_READOUTS, EncoderConfig, PredictorConfig, SequenceGroupsConfig
from aam.training.config import TrainerConfig

log = logging.getLogger("aam")

ENCODER, PREDICTOR, TRAINER, GROUPS = EncoderConfig(), PredictorConfig(), TrainerConfig(), SequenceGroupsConfig()
EXCLUSIVE_PARALLEL_FLAGS = ("distributed", "data_parallel", "fsdp")
# Flags of aam train that a cross-validation fold cannot take (it sets or forbids them itself).
NOT_IN_CROSS_VALIDATION = ("val_samples", "resume_from", "find_lr", "distributed", "fsdp")

R = TypeVar("R", bound="RunConfig")


def flag(name: str) -> str:
    """The command-line flag of a field: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Base of the run configs: built from an options mapping, checked on construction, read back as options."""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Cross-flag rules that click cannot express; each failure names the flag."""

    @classmethod
    def from_options(cls: type[R], opts: Mapping[str, Any], *, ignore_unknown: bool = False, **changes: Any) -> R:
        """The run of these options (click's parameters, a config.json's ``options``), with ``changes`` on top.
        Keys that are not fields are an error unless ``ignore_unknown`` (e.g. a cross-validation's own options
        when it builds the run of one fold)."""
        names = field_names(cls)
        values = {**opts, **changes}
        unknown = sorted(k for k in values if k not in names and k != "config")
        if unknown and not ignore_unknown:
            raise TypeError(f"{cls.__name__} has no option {', '.join(unknown)}")
        return cls(**{k: v for k, v in values.items() if k in names})

    def options(self) -> dict[str, Any]:
        """Every option by name (what config.json and a checkpoint's run record keep)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def replace(self: R, **changes: Any) -> R:
        return dataclasses.replace(self, **changes)


def field_names(cls: type) -> set[str]:
    return {f.name for f in fields(cls)}


def defaults(cls: type) -> SimpleNamespace:
    """The defaults of a run class's fields by name (fields without one, the required options, are absent):
    what the click options show and use."""
    out = {}
    for f in fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return SimpleNamespace(**out)


def require_tree(names: tuple[str, ...], tree: str | None, flag_name: str) -> None:
    """Baselines that read a tree's clades (``TREE_BASELINES``) are refused without ``--tree``."""
    needing = [n for n in names if n in TREE_BASELINES]
    if needing and not tree:
        raise AamError(f"the {needing[0]} baseline reads the clades of a phylogeny of the table's ASVs",
                       source=flag_name, hint="add --tree FILE.nwk (e.g. QIIME 2's rooted tree), or choose a baseline "
                                              "without -clades")


# ----------------------------------------------------------------------------- pretrain and train
@dataclass(frozen=True)
class SampleSplit:
    """Which samples train, validate or stay out (``aam.workflows.samples``): the split options of a run, or of
    ``aam rf-baseline``'s own split."""

    test_size: float = 0.2
    val_samples: str | None = None
    group_column: str | None = None
    exclude_samples: str | None = None
    metadata: str | None = None  # the file holding the group column (named in messages)


@dataclass(frozen=True, kw_only=True)
class FitRun(RunConfig):
    """The options ``aam pretrain`` and ``aam train`` share: inputs, the split, the encoder, training, hardware."""

    # input
    table: str
    output_dir: str
    sequences: str | None = None
    metadata: str | None = None
    unifrac_matrix: str | None = None
    tree: str | None = None
    unifrac_metric: str = ENCODER.distance_metric
    rarefy_depth: int | None = None
    test_size: float = 0.2
    val_samples: str | None = None
    group_column: str | None = None
    exclude_samples: str | None = None
    max_bp: int = ENCODER.max_bp
    token_limit: int = ENCODER.token_limit
    asv_sampling: str = "abundance"
    no_sequence_cache: bool = False
    num_workers: int = 0
    size_groups: int = 1
    # model (encoder)
    embedding_dim: int = ENCODER.embedding_dim
    attention_heads: int = ENCODER.attention_heads
    attention_layers: int = ENCODER.attention_layers
    ffn_ratio: int = ENCODER.ffn_ratio
    dropout: float = ENCODER.dropout
    kmer_size: int = ENCODER.kmer_size
    count_embedding: bool = ENCODER.count_embedding
    count_embedding_method: str = ENCODER.count_embedding_method
    nuc_mask_ratio: float = ENCODER.nuc_mask_ratio
    nuc_mask_strategy: str = ENCODER.nuc_mask_strategy
    # loss weights
    penalty: float = 1.0
    nuc_penalty: float = 1.0
    count_penalty: float = 1.0
    # training
    epochs: int = TRAINER.epochs
    batch_size: int = 8
    gradient_accumulation_steps: int = TRAINER.gradient_accumulation_steps
    lr: float = TRAINER.lr
    weight_decay: float = TRAINER.weight_decay
    optimizer: str = TRAINER.optimizer
    scheduler: str = TRAINER.scheduler
    warmup_steps: int | None = TRAINER.warmup_steps
    scheduler_t0: int | None = TRAINER.scheduler_t0
    scheduler_t_mult: int | None = TRAINER.scheduler_t_mult
    scheduler_eta_min: float | None = TRAINER.scheduler_eta_min
    scheduler_patience: int | None = TRAINER.scheduler_patience
    scheduler_factor: float | None = TRAINER.scheduler_factor
    scheduler_min_lr: float | None = TRAINER.scheduler_min_lr
    patience: int = TRAINER.patience
    max_grad_norm: float | None = TRAINER.max_grad_norm
    ema_decay: float | None = TRAINER.ema_decay
    log_grad_norms: bool = TRAINER.log_grad_norms
    resume_from: str | None = None
    checkpoint_every_steps: int | None = TRAINER.checkpoint_every_steps
    progress_interval: float = TRAINER.progress_interval
    val_every_steps: int | None = TRAINER.val_every_steps
    val_subsample: int = 2048
    auto_batch_size: bool = False
    max_memory_fraction: float = 0.8
    target_effective_batch_size: int | None = None
    # performance
    mixed_precision: str = "none"
    compile_model: bool = TRAINER.compile_model
    tf32: bool = TRAINER.tf32
    gradient_checkpointing: bool = ENCODER.gradient_checkpointing
    attn_implementation: str = TRAINER.attn_implementation
    asv_chunk_size: int | None = ENCODER.asv_chunk_size
    use_expandable_segments: bool = False
    memory_profile: bool = False
    device: str = "auto"
    # distributed
    distributed: bool = False
    data_parallel: bool = False
    fsdp: bool = False
    fsdp_sharded_checkpoint: bool = False
    sync_batchnorm: bool = False
    # other
    seed: int | None = None
    verbose: bool = True

    @property
    def split(self) -> SampleSplit:
        return SampleSplit(self.test_size, self.val_samples, self.group_column, self.exclude_samples, self.metadata)

    def check(self) -> None:
        chosen = [flag(name) for name in EXCLUSIVE_PARALLEL_FLAGS if getattr(self, name)]
        if len(chosen) > 1:
            raise AamError(f"{' and '.join(chosen)} cannot be combined", source=chosen[1],
                           hint="--distributed: DDP via torchrun; --fsdp: sharded DDP via torchrun; "
                                "--data-parallel: one process, all GPUs")
        if self.fsdp and self.ema_decay is not None:
            raise AamError("a weight average does not combine with --fsdp", source="--ema-decay",
                           hint="drop --ema-decay, or use --distributed (DDP)")
        if self.fsdp_sharded_checkpoint and not self.fsdp:
            raise AamError("needs --fsdp", source="--fsdp-sharded-checkpoint")
        if self.fsdp and self.mixed_precision == "fp16":
            raise AamError("fp16 loss scaling does not combine with --fsdp", source="--mixed-precision",
                           hint="use --mixed-precision bf16 (no loss scaling needed)")
        for name in ("epochs", "batch_size", "gradient_accumulation_steps", "max_bp", "token_limit",
                     "embedding_dim", "attention_heads", "attention_layers", "ffn_ratio"):
            if getattr(self, name) < 1:
                raise AamError(f"must be at least 1, got {getattr(self, name)}", source=flag(name))
        if self.embedding_dim % self.attention_heads:
            raise AamError(f"{self.attention_heads} heads do not divide --embedding-dim {self.embedding_dim}",
                           source="--attention-heads", hint="choose a head count that divides the width")
        if not 0 <= self.nuc_mask_ratio < 1:
            raise AamError("must be in [0, 1)", source="--nuc-mask-ratio")
        if not 0 < self.lr:
            raise AamError("must be positive", source="--lr")
        if not 0 <= self.dropout < 1:
            raise AamError("must be in [0, 1)", source="--dropout")
        if not 0 < self.max_memory_fraction <= 1:
            raise AamError("must be in (0, 1]", source="--max-memory-fraction")
        if (self.target_effective_batch_size or 1) < 1:
            raise AamError("must be at least 1", source="--target-effective-batch-size")


@dataclass(frozen=True, kw_only=True)
class PretrainRun(FitRun):
    """``aam pretrain``: the shared options; ``--metadata`` only serves ``--group-column``. A corpus of several
    tables joined by sequence: ``--tables`` (a manifest; ``--table`` adds one more), ``--val-tables`` (whole
    tables that validate), ``--prefix-sample-ids`` (samples named TABLE:ID), ``--on-disk`` (the union's arrays
    memory-mapped from a folder)."""

    table: str | None = None  # type: ignore[assignment]  # optional here: --tables may list the tables
    tables: str | None = None
    val_tables: str | None = None
    prefix_sample_ids: bool = False
    on_disk: str | None = None

    def check(self) -> None:
        super().check()
        if self.on_disk and self.rarefy_depth is not None:
            raise AamError("--rarefy-depth is not supported with --on-disk", source="--on-disk",
                           hint="rarefy the tables beforehand, or drop --on-disk")
        if not self.table and not self.tables:
            raise AamError("no table to pretrain on", source="--table",
                           hint="give --table FILE.biom, or --tables MANIFEST.tsv listing several tables")
        if self.val_tables and self.val_samples:
            raise AamError("give either --val-tables or --val-samples, not both", source="--val-tables")
        if self.val_tables and self.group_column:
            raise AamError("--val-tables already holds whole tables out; a group split does not apply",
                           source="--group-column", hint="drop --group-column, or --val-tables for a split")
        if not self.unifrac_matrix and not self.tree and self.penalty > 0:
            raise AamError("pretraining needs distance targets", source="--unifrac-matrix",
                           hint="give --unifrac-matrix FILE or --tree FILE.nwk (or --penalty 0 for nucleotides only)")


@dataclass(frozen=True, kw_only=True)
class TrainRun(FitRun):
    """``aam train``: the shared options plus the target, the head, categorical metadata and the losses."""

    metadata: str = field()  # type: ignore[assignment]  # required here
    metadata_column: str
    # target
    classifier: bool = False
    out_dim: int = 1
    class_weights: str | None = None
    target_transform: str | None = None
    normalize_by: str | None = None
    normalize_targets: bool | None = None
    normalize_targets_by: str | None = None
    log_transform_targets: bool = False
    output_constraint: str | None = None
    bounded_targets: bool = False
    output_activation: str | None = None
    learnable_output_scale: bool = False
    # model
    model_type: str = "transformer"
    sequence_groups: str = ",".join(map(str, GROUPS.group_counts))
    group_clusterings: int = GROUPS.clusterings
    group_kmeans_starts: int = 1
    group_readout: str = GROUPS.readout
    group_kmer_size: int = GROUPS.kmer_size
    group_positions: bool = True
    group_anchors: int = 512
    group_centred: bool = True
    group_diversity: bool = True
    group_clades: bool = False
    group_inner_score: bool = True
    group_boosted_loss: str = "squared-error"
    forest_blend: bool = False
    blend_baselines: str | None = None
    blend_weights: str = "inner-cv"
    target_layer_norm: bool = PREDICTOR.target_layer_norm
    target_pooling: str = PREDICTOR.target_pooling
    regressor_hidden_dims: str | None = None
    regressor_dropout: float = PREDICTOR.regressor_dropout
    residual_regression_head: bool = PREDICTOR.residual_regression_head
    pretrained_encoder: str | None = None
    freeze_base: bool = False
    count_prediction: bool = PREDICTOR.count_prediction
    # loss
    target_penalty: float = 1.0
    loss_type: str = "huber"
    loss_config: str | None = None
    quantiles: str | None = None
    over_penalty: float = 1.0
    under_penalty: float = 1.0
    categorical_loss_weights: str | None = None
    categorical_loss_weight_column: str | None = None
    # categorical metadata
    categorical_columns: str | None = None
    categorical_embed_dim: int = PREDICTOR.categorical_embed_dim
    categorical_fusion: str = PREDICTOR.categorical_fusion
    gmu_gate: str = PREDICTOR.gmu_gate
    cross_attn_heads: int = PREDICTOR.cross_attn_heads
    perceiver_num_latents: int = PREDICTOR.perceiver_num_latents
    perceiver_num_layers: int = PREDICTOR.perceiver_num_layers
    conditional_output_scaling: str | None = None
    categorical_lr: float | None = TRAINER.categorical_lr
    # training
    best_metric: str | None = None
    augment_reads: float | None = None
    min_asv_groups: int | None = None
    val_prediction_passes: int = 1
    find_lr: bool = False
    # output
    report: bool = True

    @property
    def target_column(self) -> str:
        return self.metadata_column.strip()

    def check(self) -> None:
        super().check()
        if self.loss_config:
            object.__setattr__(self, "loss_type", _loss_of_config(self.loss_config, self.metadata_column,
                                                                  self.classifier))
        if (self.val_prediction_passes or 1) > 1:
            raise AamError("several validation passes are not supported: validation reads each sample's most "
                           "abundant ASVs once, so its scores are deterministic", source="--val-prediction-passes",
                           hint="leave it at 1; aam predict --prediction-passes N averages random ASV draws")
        if self.classifier and self.loss_type in ("quantile", "asymmetric"):
            raise AamError(f"--loss-type {self.loss_type} is for regression", source="--classifier")
        if self.quantiles and self.loss_type != "quantile":
            raise AamError("--quantiles needs --loss-type quantile", source="--quantiles")
        if self.class_weights and not self.classifier:
            raise AamError("--class-weights needs --classifier", source="--class-weights")
        if self.residual_regression_head and not self.regressor_hidden_dims:
            raise AamError("--residual-regression-head needs --regressor-hidden-dims",
                           source="--residual-regression-head")
        if self.categorical_loss_weights and not self.categorical_columns:
            raise AamError("needs --categorical-columns", source="--categorical-loss-weights")
        if self.conditional_output_scaling and not self.categorical_columns:
            raise AamError("needs --categorical-columns", source="--conditional-output-scaling")
        if self.classifier and self.output_constraint not in (None, "none"):
            raise AamError("output constraints are for regression", source="--output-constraint")
        if self.conditional_output_scaling and self.categorical_fusion in ("gmu", "cross-attention"):
            log.warning("--conditional-output-scaling with --categorical-fusion %s models the same effect twice; "
                        "see aam train --categorical-help", self.categorical_fusion)
        self._check_family()

    @property
    def blend_names(self) -> tuple[str, ...]:
        """The baselines averaged with a sequence-groups model: ``--blend-baselines``, else the forest under
        ``--forest-blend``, else none."""
        from aam.baselines import BASELINES

        if self.blend_weights not in ("inner-cv", "equal"):
            raise AamError(f"unknown weighting {self.blend_weights!r}", source="--blend-weights",
                           hint="inner-cv or equal")
        text = str(self.blend_baselines or "").strip()
        if not text or text.lower() == "none":
            return ("forest",) if self.forest_blend else ()
        names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
        unknown = [n for n in names if n not in BASELINES]
        if unknown:
            raise AamError(f"unknown baseline {unknown[0]!r}", source="--blend-baselines",
                           hint=f"a comma list of {', '.join(BASELINES.names())}")
        return names

    @property
    def blend_weighs_inner_predictions(self) -> bool:
        """The baseline blend's weights are chosen against the model's inner out-of-fold predictions."""
        return bool(self.blend_names) and self.blend_weights == "inner-cv"

    def _check_family(self) -> None:
        """The options the ``--model-type`` family cannot honour (from its capabilities) are refused."""
        from aam.families import MODEL_FAMILIES

        if self.model_type not in MODEL_FAMILIES:
            raise AamError(f"unknown model type {self.model_type!r}", source="--model-type",
                           hint=f"choose one of {', '.join(MODEL_FAMILIES.names())}")
        family = MODEL_FAMILIES[self.model_type]
        for key, (unset, what) in family.refused_options().items():
            if getattr(self, key, unset) not in (unset, None, False, "", ()):
                raise AamError(f"{what} is not available with --model-type {self.model_type}",
                               source=flag(key), hint=_REFUSED_HINTS.get(key, "leave it out, or use another "
                                                                              "--model-type"))
        unset = defaults(type(self))
        for name, other in MODEL_FAMILIES.items():
            changed = [o for o in other.own_options if name != self.model_type and hasattr(unset, o)
                       and getattr(self, o) != getattr(unset, o)]
            if changed:
                raise AamError(f"is an option of --model-type {name}, not {self.model_type}", source=flag(changed[0]),
                               hint=f"leave it out, or use --model-type {name}")
        if family.capabilities.baseline_blend:
            require_tree(self.blend_names, self.tree, "--blend-baselines")  # unknown ones refused now, too
        if self.group_clades and not self.tree:
            raise AamError("the clades come from a phylogenetic tree of the table's ASVs", source="--group-clades",
                           hint="add --tree FILE.nwk (e.g. QIIME 2's rooted tree), or leave the flag out")
        if not self.group_inner_score and self.group_readout not in TREE_READOUTS:
            raise AamError("only a tree read-out (boosted, forest) can skip its inner cross-validation (the linear "
                           "read-out's chooses its shrinkage)", source="--no-group-inner-score",
                           hint="add --group-readout boosted (or forest), or leave the flag out")
        if self.group_boosted_loss != defaults(type(self)).group_boosted_loss and (
                self.classifier or self.group_readout != "boosted"):
            raise AamError("is the loss of the boosted read-out on regression", source="--group-boosted-loss",
                           hint="add --group-readout boosted (without --classifier), or leave the option out")
        if not self.group_inner_score and self.blend_weighs_inner_predictions:
            raise AamError("--blend-weights inner-cv weighs the model by its inner out-of-fold predictions",
                           source="--no-group-inner-score", hint="add --blend-weights equal, or leave the flag out")
        if self.loss_type == "quantile" and not family.capabilities.quantiles:
            raise AamError(f"quantile outputs are not available with --model-type {self.model_type}",
                           source="--loss-type")


_REFUSED_HINTS = {
    "val_samples": "this model trains on every usable sample (its inner cross-validation is its validation); "
                   "hold samples out with --exclude-samples FILE, then score them with aam predict",
    "blend_baselines": "the blend's weights are chosen by the sequence-groups model's inner cross-validation: use "
                       "--model-type sequence-groups, or average a model with aam predict --forest FOREST "
                       "--forest-weight W",
}
_REFUSED_HINTS["forest_blend"] = _REFUSED_HINTS["blend_baselines"]


def _loss_of_config(text: str, column: str, classifier: bool) -> str:
    """``--loss-config '{"0": "mae"}'`` (the reference tool's per-output losses) as a ``--loss-type``: one entry,
    keyed by output 0 or the target column, naming mse, mae or huber."""
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise AamError(f"is not JSON ({err.msg})", source="--loss-config",
                       hint='e.g. --loss-config \'{"0": "mae"}\'') from None
    if not isinstance(config, dict) or len(config) != 1:
        raise AamError("needs exactly one entry: AAM regression predicts one column", source="--loss-config",
                       hint='e.g. --loss-config \'{"0": "mae"}\'')
    (key, loss), = config.items()
    if str(key) not in ("0", str(column)):
        raise AamError(f"entry {key!r} names no output; use 0 or {column!r}", source="--loss-config")
    if loss not in ("mse", "mae", "huber"):
        raise AamError(f"loss {loss!r} is not one of mse, mae, huber", source="--loss-config",
                       hint="quantile and asymmetric losses are set with --loss-type")
    if classifier:
        raise AamError("is for regression (classifiers use NLL)", source="--loss-config")
    log.info("--loss-config: output 0 uses the %s loss", loss)
    return loss


@dataclass(frozen=True, kw_only=True)
class CrossValidateRun(TrainRun):
    """``aam cross-validate``: an ``aam train`` recipe (every train option) and how to fold, ensemble and compare.

    ``variants`` are the option changes of each ``--variant`` (the CLI parses its flags over the recipe)."""

    n_folds: int = 5
    leave_one_group_out: bool = False
    folds: str | None = None
    fold_column: str = "fold"
    members: int = 1
    variants: tuple[Any, ...] = ()
    pretrain_epochs: int | None = None
    only_folds: str | None = None
    forest: bool = True
    baselines: str = "forest,clr-linear,boosted"
    rf_n_estimators: int = FOREST_TREES
    rf_max_features: str = FOREST_MAX_FEATURES
    rf_n_jobs: int = -1

    def check(self) -> None:
        super().check()
        if self.pretrain_epochs and not (self.tree or self.unifrac_matrix):
            raise AamError("pretraining needs distance targets", source="--pretrain-epochs",
                           hint="give --tree FILE.nwk or --unifrac-matrix FILE")
        if self.pretrain_epochs and self.pretrained_encoder:
            raise AamError("cannot be combined with --pretrained-encoder", source="--pretrain-epochs")
        for name in NOT_IN_CROSS_VALIDATION:
            if getattr(self, name):
                raise AamError("is not available in cross-validation", source=flag(name),
                               hint="inner early-stopping splits come from --test-size and --group-column; a rerun "
                                    "resumes by itself")
        if self.members < 1:
            raise AamError("must be at least 1", source="--members")
        require_tree(self.baseline_names, self.tree, "--baselines")  # unknown ones refused now, too

    @property
    def baseline_names(self) -> tuple[str, ...]:
        """The classical baselines to fit on the same folds: ``--baselines`` (``none`` for none), without the
        forest under ``--no-forest``."""
        text = str(self.baselines or "").strip()
        names = () if text.lower() in ("", "none") else tuple(dict.fromkeys(n.strip() for n in text.split(",")
                                                                           if n.strip()))
        unknown = [n for n in names if n not in BASELINES]
        if unknown:
            raise AamError(f"unknown baseline {unknown[0]!r}", source="--baselines",
                           hint=f"a comma list of {', '.join(BASELINES.names())}, or none")
        return tuple(n for n in names if self.forest or n != "forest")

    def recipe(self, **changes: Any) -> TrainRun:
        """The ``aam train`` run of one fold: the recipe's options with ``changes`` (a variant, the fold's folder)."""
        return TrainRun.from_options(self.options(), ignore_unknown=True, **changes)


# ----------------------------------------------------------------------------- predict
@dataclass(frozen=True, kw_only=True)
class PredictRun(RunConfig):
    """``aam predict``: checkpoints (an ensemble when several), the table, and how to read and average.

    ``sample_ids`` (not an option) restricts prediction to those samples, as cross-validation does per fold."""

    model_paths: tuple[str, ...]
    table: str
    output: str
    sequences: str | None = None
    metadata: str | None = None
    batch_size: int = 8
    asv_sampling: str | None = None
    prediction_passes: int = 1
    q2_metadata: bool = False
    output_variance: bool = False
    no_sequence_cache: bool = False
    forest: str | None = None
    forest_weight: str | float = "auto"
    group_column: str | None = None
    attn_implementation: str = TRAINER.attn_implementation
    device: str = "auto"
    seed: int | None = None
    verbose: bool = True
    sample_ids: tuple[str, ...] | None = field(default=None, metadata={"option": False})

    def check(self) -> None:
        paths = (self.model_paths,) if isinstance(self.model_paths, str) else tuple(map(str, self.model_paths))
        object.__setattr__(self, "model_paths", paths)
        if self.sample_ids is not None:
            object.__setattr__(self, "sample_ids", tuple(self.sample_ids))
        if not paths:
            raise AamError("give at least one checkpoint", source="--model")
        if self.batch_size < 1:
            raise AamError("must be at least 1", source="--batch-size")
        if self.prediction_passes < 1:
            raise AamError("must be at least 1", source="--prediction-passes")
        self.forest_weight_value  # noqa: B018 -- checked now, before any model is read
        if self.group_column and self.metadata is None:
            raise AamError("needs --metadata (the file with the group column)", source="--group-column")

    @property
    def forest_weight_value(self) -> float | None:
        """``--forest-weight`` as a number in [0, 1], or None for ``auto`` (the model's recorded weight)."""
        value = self.forest_weight
        if value is None or str(value).strip().lower() == "auto":
            return None
        try:
            weight = float(value)
        except ValueError:
            weight = float("nan")
        if not 0.0 <= weight <= 1.0:
            raise AamError(f"must be a number in [0, 1] or auto, got {value}", source="--forest-weight")
        return weight


# ----------------------------------------------------------------------------- embed and explain
EMBEDDING_SUFFIXES = (".tsv", ".npy")  # the files aam embed writes vectors to
ATTRIBUTION_METHODS = ("occlusion", "gradient")  # aam explain --method (aam.workflows.attribution.METHODS)


def _at_least_one(run: RunConfig, *names: str) -> None:
    for name in names:
        if getattr(run, name) < 1:
            raise AamError("must be at least 1", source=flag(name))


@dataclass(frozen=True, kw_only=True)
class EmbedRun(RunConfig):
    """``aam embed``: an encoder (or a trained model's), the table, where the sample (and ASV) vectors go, and an
    optional ordination plot coloured by a metadata column."""

    model_path: str
    table: str
    output: str
    sequences: str | None = None
    asv_output: str | None = None
    plot: str | None = None
    metadata: str | None = None
    color_by: str | None = None
    batch_size: int = 32
    attn_implementation: str = TRAINER.attn_implementation
    device: str = "auto"
    verbose: bool = True

    def check(self) -> None:
        for name in ("output", "asv_output"):
            path = getattr(self, name)
            if path is not None and Path(path).suffix.lower() not in EMBEDDING_SUFFIXES:
                raise AamError(f"must end in {' or '.join(EMBEDDING_SUFFIXES)}, got {path}", source=flag(name))
        _at_least_one(self, "batch_size")
        if self.color_by is not None and self.metadata is None:
            raise AamError("colouring needs the metadata", source="--color-by", hint="add --metadata FILE.tsv")
        if self.plot is not None and Path(self.plot).suffix.lower() != ".png":
            raise AamError(f"must end in .png, got {self.plot}", source="--plot")


@dataclass(frozen=True, kw_only=True)
class ExplainRun(RunConfig):
    """``aam explain``: checkpoints (an ensemble when several), the samples to explain, the attribution method
    and what to write."""

    model_paths: tuple[str, ...]
    table: str
    output_dir: str
    sequences: str | None = None
    metadata: str | None = None
    samples: str | None = None
    group_column: str | None = None
    taxonomy: str | None = None
    method: str = "occlusion"
    top_asvs: int = 20
    report: bool = True
    top_per_sample: int = 10
    batch_size: int = 16
    seed: int = 0
    attn_implementation: str = TRAINER.attn_implementation
    device: str = "auto"
    verbose: bool = True

    def check(self) -> None:
        paths = (self.model_paths,) if isinstance(self.model_paths, str) else tuple(map(str, self.model_paths))
        object.__setattr__(self, "model_paths", paths)
        if not paths:
            raise AamError("give at least one checkpoint", source="--model")
        if self.method not in ATTRIBUTION_METHODS:
            raise AamError(f"unknown method {self.method!r}", source="--method",
                           hint=f"choose one of {', '.join(ATTRIBUTION_METHODS)}")
        _at_least_one(self, "batch_size", "top_asvs", "top_per_sample")
        if self.group_column is not None and self.metadata is None:
            raise AamError("needs --metadata (the file with the group column)", source="--group-column")


# ----------------------------------------------------------------------------- rf-baseline
@dataclass(frozen=True, kw_only=True)
class RfBaselineRun(RunConfig):
    """``aam rf-baseline``: a classical baseline on the lists of an ``aam train`` run, on folds, or on a split
    made here; its settings (the forest's trees and features per split) and outputs."""

    table: str
    metadata: str
    metadata_column: str
    output: str
    classifier: bool = False
    train_samples: str | None = None
    val_samples: str | None = None
    folds: str | None = None
    fold_column: str = "fold"
    group_column: str | None = None
    test_size: float = 0.2
    save_model: str | None = None
    baseline: str = "forest"
    n_estimators: int = FOREST_TREES
    max_features: str = FOREST_MAX_FEATURES
    tree: str | None = None
    random_seed: int = 42
    n_jobs: int = -1
    verbose: bool = True

    def check(self) -> None:
        if self.baseline not in BASELINES:
            raise AamError(f"unknown baseline {self.baseline!r}", source="--baseline",
                           hint=f"choose one of {', '.join(BASELINES.names())}")
        require_tree((self.baseline,), self.tree, "--baseline")
        lists = (self.train_samples, self.val_samples)
        if self.folds is not None and any(lists):
            raise AamError("give either --train-samples and --val-samples, or --folds", source="--folds")
        if any(lists) and not all(lists):
            raise AamError("give both --train-samples and --val-samples (or neither, to split here)",
                           source="--train-samples" if self.train_samples is None else "--val-samples")
        if self.save_model and self.folds is not None:
            raise AamError("saves the forest of one fit, not of cross-validation folds", source="--save-model",
                           hint="give --train-samples and --val-samples (e.g. those of the aam train run to combine)")


# ----------------------------------------------------------------------------- unifrac
# aam.unifrac.metrics' METRICS and ALIASES (importing them here would load torch; a test keeps them equal)
UNIFRAC_METRICS = ("unweighted", "weighted-normalized", "weighted-unnormalized", "braycurtis", "jaccard",
                   "unifrac", "weighted", "unweighted_unifrac", "weighted_normalized_unifrac", "weighted_unifrac")


@dataclass(frozen=True, kw_only=True)
class UnifracRun(RunConfig):
    """``aam unifrac``: a table (and a tree for UniFrac), the metric, the matrix file, and how to compute it.
    Whether the metric needs ``--tree`` is checked by the workflow (the metric registry loads torch)."""

    table: str
    output: str
    tree: str | None = None
    metric: str = "unweighted"
    threads: int = 0
    block_size: int = 1024
    float32: bool = False
    seed: int = 42

    def check(self) -> None:
        from aam.data.distances import check_output_path

        if self.metric not in UNIFRAC_METRICS:
            raise AamError(f"unknown metric {self.metric!r}", source="--metric",
                           hint=f"choose one of {', '.join(UNIFRAC_METRICS)}")
        if self.threads < 0:
            raise AamError(f"must be at least 0, got {self.threads}", source="--threads")
        if self.block_size < 1:
            raise AamError(f"must be at least 1, got {self.block_size}", source="--block-size")
        check_output_path(self.output)


def option_fields(cls: type) -> set[str]:
    """The fields of a run class that are command-line options (not programmatic ones such as ``sample_ids``)."""
    return {f.name for f in fields(cls) if f.metadata.get("option", True)}


# ----------------------------------------------------------------------------- inspect and demo
@dataclass(frozen=True, kw_only=True)
class InspectRun(RunConfig):
    """``aam inspect``: a checkpoint's model card, as text or JSON."""

    model: str
    as_json: bool = False


@dataclass(frozen=True, kw_only=True)
class DemoRun(RunConfig):
    """``aam demo``: the size of the synthetic dataset and of the pipeline run on it."""

    output_dir: str
    data_only: bool = False
    samples: int = 160
    asvs: int = 60
    pretrain_epochs: int = 8
    train_epochs: int = 30
    seed: int | None = None

    def check(self) -> None:
        for name in ("samples", "asvs", "pretrain_epochs", "train_epochs"):
            if getattr(self, name) < 1:
                raise AamError("must be at least 1", source=flag(name))

