"""Frozen dataclass configs for AAM's models (built by `aam.models.build`).

A config is data: `to_dict()` gives plain JSON-ready values (nested for `PredictorConfig.encoder`) and
`from_dict()` rebuilds the same config, so a checkpoint that stores `model_config_to_dict(model.config)`
rebuilds an identical model with `from_config(model_config_from_dict(d))`.

Invalid values raise `ValueError` naming the field; the CLI turns that into an `AamError` on the flag.
The vocabulary is `aam.data.vocabulary`'s; each registry a field names is its module's (fusions, heads, ...).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from aam.baselines import BOOSTED_REGRESSION_LOSSES
from aam.data.vocabulary import VOCAB_SIZE
from aam.models.registries import COUNT_EMBEDDINGS, FUSIONS, MASK_STRATEGIES, OUTPUT_CONSTRAINTS

DISTANCE_METRICS = ("unifrac", "weighted", "faith_pd")
GMU_GATES = ("learned", "open", "closed")
TARGET_POOLINGS = ("attention", "abundance", "attention+abundance", "mean", "composition")
ATTENTION_IMPLEMENTATIONS = ("sdpa", "flash", "mem_efficient", "math")  # run-time choice (aam.models.layers)
MAX_KMER_SIZE = 8  # a k-mer table has 4^k rows

_ConfigT = TypeVar("_ConfigT", bound="_Config")


def _check_choice(field: str, value: Any, choices) -> None:
    if value not in choices:
        raise ValueError(f"{field} must be one of {', '.join(map(str, choices))}; got {value!r}")


def _check_divides(heads_field: str, heads: int, dim: int) -> None:
    if heads < 1 or dim % heads:
        raise ValueError(f"{heads_field} ({heads}) must be a positive divisor of embedding_dim ({dim})")


def _check_range(field: str, value: float, low: float, high: float) -> None:
    if not low <= value < high:
        raise ValueError(f"{field} must be in [{low}, {high}); got {value}")


def _check_positive(field: str, value: int | None, allow_zero: bool = False) -> None:
    if value is not None and (value < 0 or (value == 0 and not allow_zero)):
        raise ValueError(f"{field} must be {'>= 0' if allow_zero else '> 0'}; got {value}")


class _Config:
    """`to_dict()`/`from_dict()` shared by the model configs (tuple fields survive a JSON round trip).

    Fields in `RETIRED` were written by earlier versions and are dropped on reading, so their checkpoints load.
    """

    RETIRED: ClassVar[frozenset[str]] = frozenset()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[_ConfigT], data: Mapping[str, Any]) -> _ConfigT:
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        data = {k: v for k, v in data.items() if k not in cls.RETIRED}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {', '.join(unknown)}")
        values = {}
        for name, value in data.items():
            if isinstance(value, list):
                value = tuple(value)
            values[name] = value
        return cls(**values)


@dataclass(frozen=True)
class EncoderConfig(_Config):
    """The pretrainable `SequenceEncoder` (ASV, sample and encoder stacks, distance head).

    `attention_layers` sets every stack unless `asv_layers`, `sample_layers` or `encoder_layers` override it.
    `asv_chunk_size` encodes the batch's distinct ASVs in chunks of that many rows (memory, not results).
    `kmer_size` > 0 adds the mean of learned k-mer vectors to each ASV's pooled nucleotide encoding.
    The attention kernel is not part of a model: it is chosen when running (``--attn-implementation``).
    """

    RETIRED: ClassVar[frozenset[str]] = frozenset({"attn_implementation"})  # now a run-time setting

    vocab_size: int = VOCAB_SIZE
    max_bp: int = 150
    embedding_dim: int = 128
    attention_heads: int = 4
    attention_layers: int = 4
    asv_layers: int | None = None
    sample_layers: int | None = None
    encoder_layers: int | None = None
    ffn_ratio: int = 4
    dropout: float = 0.1
    token_limit: int = 1024
    count_embedding: bool = False
    count_embedding_method: str = "add"
    nuc_mask_ratio: float = 0.15
    nuc_mask_strategy: str = "random"
    gradient_checkpointing: bool = False
    distance_metric: str = "unifrac"
    asv_chunk_size: int | None = None
    kmer_size: int = 0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "max_bp", "embedding_dim", "ffn_ratio", "token_limit", "asv_chunk_size"):
            _check_positive(name, getattr(self, name))
        for name in ("attention_layers", "asv_layers", "sample_layers", "encoder_layers"):
            _check_positive(name, getattr(self, name), allow_zero=True)
        _check_divides("attention_heads", self.attention_heads, self.embedding_dim)
        if not 0 <= self.kmer_size <= MAX_KMER_SIZE:
            raise ValueError(f"kmer_size must be 0 (off) to {MAX_KMER_SIZE}; got {self.kmer_size}")
        _check_range("dropout", self.dropout, 0.0, 1.0)
        _check_range("nuc_mask_ratio", self.nuc_mask_ratio, 0.0, 1.0)
        _check_choice("count_embedding_method", self.count_embedding_method, COUNT_EMBEDDINGS)
        _check_choice("nuc_mask_strategy", self.nuc_mask_strategy, MASK_STRATEGIES)
        _check_choice("distance_metric", self.distance_metric, DISTANCE_METRICS)

    @property
    def max_length(self) -> int:
        """Token positions per ASV: START + `max_bp` nucleotides."""
        return self.max_bp + 1

    def layers(self, stack: str) -> int:
        """Depth of the `asv`, `sample` or `encoder` stack."""
        override = getattr(self, f"{stack}_layers")
        return self.attention_layers if override is None else override


@dataclass(frozen=True)
class PredictorConfig(_Config):
    """The fine-tuning `SequencePredictor`: an `EncoderConfig` base plus count and target branches.

    `categorical_cardinalities` holds the embedding rows per categorical column (known values + 1, row 0 =
    unknown), in the column order of `Batch.categoricals`; `conditional_output_scaling_columns` are indices
    into that order. `target_layers`/`count_layers` default to `encoder.attention_layers`.
    `gmu_gate_bias_init` = 2.0 starts the gate at sigmoid(2) ~ 0.88 weight on the sequence branch.
    `target_pooling` reduces the target transformer's [B, S, D] to [B, D]: `attention` (learned softmax
    weights), `abundance` (weighted by each ASV's relative abundance) or `attention+abundance` (both, mixed
    by a linear layer) or `mean` (every ASV of the sample alike) or `composition` (centred log shares of
    learned ASV groups, `CompositionPooling`).
    """

    encoder: EncoderConfig = dataclasses.field(default_factory=EncoderConfig)
    out_dim: int = 1
    classifier: bool = False
    quantiles: tuple[float, ...] | None = None
    target_layers: int | None = None
    count_layers: int | None = None
    count_prediction: bool = True
    categorical_cardinalities: tuple[int, ...] = ()
    categorical_embed_dim: int = 16
    categorical_fusion: str = "concat"
    gmu_gate: str = "learned"
    gmu_gate_bias_init: float = 2.0
    cross_attn_heads: int = 8
    perceiver_num_latents: int = 64
    perceiver_num_layers: int = 2
    conditional_output_scaling_columns: tuple[int, ...] = ()
    output_constraint: str = "none"
    regressor_hidden_dims: tuple[int, ...] = ()
    regressor_dropout: float = 0.0
    residual_regression_head: bool = False
    target_layer_norm: bool = True
    target_pooling: str = "attention"
    freeze_base: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.encoder, Mapping):
            object.__setattr__(self, "encoder", EncoderConfig.from_dict(self.encoder))
        for name in ("categorical_cardinalities", "conditional_output_scaling_columns", "regressor_hidden_dims"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.quantiles is not None:
            object.__setattr__(self, "quantiles", tuple(float(q) for q in self.quantiles))
        self._validate(FUSIONS, OUTPUT_CONSTRAINTS)

    def _validate(self, fusions, constraints) -> None:
        dim = self.encoder.embedding_dim
        _check_positive("out_dim", self.out_dim)
        _check_positive("categorical_embed_dim", self.categorical_embed_dim)
        _check_positive("target_layers", self.target_layers, allow_zero=True)
        _check_positive("count_layers", self.count_layers, allow_zero=True)
        _check_positive("perceiver_num_latents", self.perceiver_num_latents)
        _check_positive("perceiver_num_layers", self.perceiver_num_layers, allow_zero=True)
        _check_range("regressor_dropout", self.regressor_dropout, 0.0, 1.0)
        _check_choice("categorical_fusion", self.categorical_fusion, fusions)
        _check_choice("gmu_gate", self.gmu_gate, GMU_GATES)
        _check_choice("output_constraint", self.output_constraint, constraints)
        _check_choice("target_pooling", self.target_pooling, TARGET_POOLINGS)
        for hidden in self.regressor_hidden_dims:
            _check_positive("regressor_hidden_dims", hidden)
        if any(card < 2 for card in self.categorical_cardinalities):
            raise ValueError("categorical_cardinalities must be >= 2 (known values + the unknown row 0)")
        if self.categorical_cardinalities and self.categorical_fusion in ("cross-attention", "perceiver"):
            _check_divides("cross_attn_heads", self.cross_attn_heads, dim)
        for column in self.conditional_output_scaling_columns:
            if not 0 <= column < len(self.categorical_cardinalities):
                raise ValueError(f"conditional_output_scaling_columns index {column} is not one of the "
                                 f"{len(self.categorical_cardinalities)} categorical columns")
        if self.quantiles is not None:
            if not self.quantiles or any(not 0.0 < q < 1.0 for q in self.quantiles):
                raise ValueError(f"quantiles must be in (0, 1); got {self.quantiles}")
            if list(self.quantiles) != sorted(set(self.quantiles)):
                raise ValueError(f"quantiles must be sorted and unique; got {self.quantiles}")
        if self.classifier:
            if self.out_dim < 2:
                raise ValueError("a classifier needs out_dim >= 2 (the number of classes)")
            if self.quantiles is not None or self.output_constraint != "none":
                raise ValueError("a classifier takes neither quantiles nor an output_constraint")

    @property
    def num_quantiles(self) -> int:
        return 0 if self.quantiles is None else len(self.quantiles)

    def layers(self, stack: str) -> int:
        """Depth of the `target` or `count` stack."""
        override = getattr(self, f"{stack}_layers")
        return self.encoder.attention_layers if override is None else override


ModelConfig = EncoderConfig | PredictorConfig
# --model-type sequence-groups (aam.models.sequence_groups), torch-free so the CLI can read its defaults
MODEL_TYPE = "sequence-groups"
MAX_GROUP_KMER = 6  # 4^6 = 4,096 profile columns
GROUP_READOUTS = ("linear", "boosted", "forest")  # a shrunk linear model, boosted trees or a forest
TREE_READOUTS = ("boosted", "forest")  # fitted scikit-learn trees kept in the checkpoint; nothing to choose


DIVERSITY_FEATURES = 2  # Shannon entropy and log(1 + observed ASVs)


@dataclass(frozen=True)
class SequenceGroupsConfig(_Config):
    """``group_counts``: groups per resolution; ``clusterings``: independent k-means runs per resolution (their
    features side by side: one clustering's luck of initialisation no longer decides the groups);
    ``kmer_size``: length of the k-mers describing an ASV; ``positions``: how many leading nucleotide positions
    also describe it, one-hot, beside the k-mer profile (each part scaled to unit length; 0: k-mers only, the
    profile of checkpoints written before session 13); ``anchors``: how many widespread training ASVs head a
    group of their own, which every other ASV joins when it is nearer to it than to any other anchor (0: none;
    the fit chooses them); ``pseudo_share``: added to every group share before the log (a group the sample lacks
    reads as this); ``centred``: each sample's log group shares are centred over its groups (the centred
    log-ratio of compositional data analysis); False: the log shares as they are, which trees read as the shares
    themselves (a split on one group then does not depend on the sample's other groups); ``diversity``: two more
    features per sample, the Shannon entropy of its ASV shares and the log of one plus its count of ASVs;
    ``clades``: how many clades of a phylogenetic tree add their log share as a feature each (0: none; the fit
    chooses them, :func:`~aam.data.clades.select_clades`), and ``clade_tips``: how many training
    ASVs the clades were described by (an ASV joins the clades of the nearest of them by profile);
    ``out_dim``: 1 for regression, the number of classes for a classifier; ``readout``: what
    reads the prediction off the features (``linear``: the shrunk linear layer; ``boosted``: gradient-boosted
    trees; ``forest``: a random forest; trees are kept in the checkpoint beside the buffers); ``boosted_loss``: the
    boosted read-out's regression loss, ``squared_error`` (the conditional mean; models written before session
    21) or ``absolute_error`` (the conditional median)."""

    group_counts: tuple[int, ...] = (8, 16, 32, 64)
    clusterings: int = 8
    anchors: int = 0
    kmer_size: int = 4
    positions: int = 0
    pseudo_share: float = 1e-4
    centred: bool = True
    diversity: bool = False
    clades: int = 0
    clade_tips: int = 0
    classifier: bool = False
    out_dim: int = 1
    readout: str = "linear"
    boosted_loss: str = "squared_error"
    model_type: str = MODEL_TYPE  # tells a checkpoint's reader which model to build

    def __post_init__(self) -> None:
        if not self.group_counts:
            raise ValueError("group_counts must name at least one resolution")
        for count in self.group_counts:
            _check_positive("group_counts", count)
        if not 1 <= self.kmer_size <= MAX_GROUP_KMER:
            raise ValueError(f"kmer_size must be in [1, {MAX_GROUP_KMER}]; got {self.kmer_size}")
        if not 0 < self.pseudo_share < 1:
            raise ValueError(f"pseudo_share must be in (0, 1); got {self.pseudo_share}")
        _check_positive("out_dim", self.out_dim)
        _check_positive("clusterings", self.clusterings)
        _check_positive("anchors", self.anchors, allow_zero=True)
        _check_positive("positions", self.positions, allow_zero=True)
        _check_positive("clades", self.clades, allow_zero=True)
        _check_positive("clade_tips", self.clade_tips, allow_zero=True)
        if bool(self.clades) != bool(self.clade_tips):
            raise ValueError(f"clades and clade_tips are both 0 or both positive; got {self.clades} and "
                             f"{self.clade_tips}")
        if self.model_type != MODEL_TYPE:
            raise ValueError(f"model_type must be {MODEL_TYPE!r}; got {self.model_type!r}")
        if self.boosted_loss not in BOOSTED_REGRESSION_LOSSES:
            raise ValueError(f"boosted_loss must be one of {', '.join(BOOSTED_REGRESSION_LOSSES)}; "
                             f"got {self.boosted_loss!r}")
        if self.readout not in GROUP_READOUTS:
            raise ValueError(f"readout must be one of {', '.join(GROUP_READOUTS)}; got {self.readout!r}")

    @property
    def kmeans_resolutions(self) -> tuple[int, ...]:
        """Groups of every k-means clustering, in the order of the model's features (the counts, repeated)."""
        return self.group_counts * self.clusterings

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Groups of every resolution of the model's features: the k-means clusterings, then the anchors' groups
        when there are any."""
        return self.kmeans_resolutions + ((self.anchors,) if self.anchors else ())

    @property
    def n_features(self) -> int:
        return sum(self.resolutions) + self.clades + (DIVERSITY_FEATURES if self.diversity else 0)

    @property
    def profile_width(self) -> int:
        """Columns of an ASV's profile: 4^k k-mer frequencies, then 4 per described position."""
        return 4 ** self.kmer_size + 4 * self.positions


_MODEL_TYPES: dict[str, type[_Config]] = {"encoder": EncoderConfig, "predictor": PredictorConfig}


def model_config_to_dict(config: ModelConfig) -> dict[str, Any]:
    """`{"kind": "encoder"|"predictor", "config": {...}}` (the checkpoint's kind, not the model family)."""
    kind = "predictor" if isinstance(config, PredictorConfig) else "encoder"
    return {"kind": kind, "config": config.to_dict()}


def model_config_from_dict(data: Mapping[str, Any]) -> ModelConfig:
    """Inverse of `model_config_to_dict` (files written before the key was named ``kind`` say ``model_type``)."""
    kind = data.get("kind", data.get("model_type"))
    if kind not in _MODEL_TYPES:
        raise ValueError(f"kind must be one of {', '.join(_MODEL_TYPES)}; got {kind!r}")
    return _MODEL_TYPES[kind].from_dict(data["config"])  # type: ignore[return-value]
