"""Model families: what ``--model-type`` chooses. Each family declares, in one place, its config class, how its
model is built (and so loaded from a checkpoint), how it trains, and what it can do; commands ask the family,
never compare its name. Importable without torch (the CLI lists the families in ``--help``).

To add a family: write its config (``to_dict``/``from_dict``, a ``model_type`` field naming the family), its
model (an ``nn.Module`` taking a batch as the transformer does: ``tokens, asv_index, asv_mask, counts=...``
and returning ``{"prediction": [B, out_dim]}``) and its training function (``FitInputs -> FitResult``, e.g.
with ``aam.workflows.fitted_run``), then ``MODEL_FAMILIES.register(name, ModelFamily(...))``
(CONTRIBUTING.md walks through it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aam.registry import Lazy, Registry

DEFAULT_FAMILY = "transformer"


@dataclass(frozen=True)
class Capabilities:
    """What a family can do; the options it refuses follow from these (``ModelFamily.refused_options``)."""

    epochs: bool = False  # trained by the gradient loop: a validation split, --find-lr, resuming, several GPUs
    learned_embeddings: bool = False  # aam embed reads its sample and ASV vectors
    gradient_attribution: bool = False  # aam explain --method gradient
    categorical_metadata: bool = False  # --categorical-columns and their fusion
    pretrained_encoder: bool = False  # --pretrained-encoder; cross-validate --pretrain-epochs
    quantiles: bool = False  # --loss-type quantile
    baseline_blend: bool = False  # --blend-baselines / --forest-blend: weights chosen by its inner CV


# option -> (its "not set" value, what it asks for, the capability it needs)
_NEEDS: tuple[tuple[str, Any, str, str], ...] = (
    ("categorical_columns", None, "categorical metadata", "categorical_metadata"),
    ("pretrained_encoder", None, "a pretrained encoder", "pretrained_encoder"),
    ("freeze_base", False, "--freeze-base", "pretrained_encoder"),
    ("pretrain_epochs", None, "--pretrain-epochs", "pretrained_encoder"),
    ("distributed", False, "--distributed", "epochs"),
    ("fsdp", False, "--fsdp", "epochs"),
    ("data_parallel", False, "--data-parallel", "epochs"),
    ("find_lr", False, "--find-lr", "epochs"),
    ("resume_from", None, "--resume-from", "epochs"),
    ("val_samples", None, "a validation split (--val-samples)", "epochs"),
    ("quantiles", None, "quantile outputs", "quantiles"),
    ("blend_baselines", None, "--blend-baselines", "baseline_blend"),
    ("forest_blend", False, "--forest-blend", "baseline_blend"),
)


@dataclass(frozen=True)
class ModelFamily:
    """A model family: ``config`` (class with ``from_dict``), ``model`` (config -> nn.Module), ``train``
    (``FitInputs -> FitResult``: writes the run folder), each the object itself or a ``Lazy`` reference."""

    summary: str
    config: Any
    model: Any
    train: Any
    capabilities: Capabilities = Capabilities()
    own_options: tuple[str, ...] = ()  # options only this family reads: another family refuses them when set

    def _resolve(self, value: Any) -> Any:
        return value.load() if isinstance(value, Lazy) else value

    @property
    def config_class(self) -> Any:
        return self._resolve(self.config)

    @property
    def build(self) -> Callable[[Any], Any]:
        """config -> a fresh model."""
        return self._resolve(self.model)

    @property
    def fit(self) -> Callable[[Any], Any]:
        """``FitInputs -> FitResult``: train the family on the inputs and write its run folder."""
        return self._resolve(self.train)

    def refused_options(self) -> dict[str, tuple[Any, str]]:
        """The options this family cannot honour: name -> (its unset value, what it asks for)."""
        return {name: (unset, what) for name, unset, what, needed in _NEEDS
                if not getattr(self.capabilities, needed)}


MODEL_FAMILIES: Registry = Registry("model family", {
    "transformer": ModelFamily(
        summary="reads each ASV's nucleotides with attention, then the sample's ASVs (the default)",
        config=Lazy("aam.models.config:PredictorConfig"), model=Lazy("aam.models.sequence_predictor:SequencePredictor"),
        train=Lazy("aam.workflows.train:train_transformer"),
        capabilities=Capabilities(epochs=True, learned_embeddings=True, gradient_attribution=True,
                                  categorical_metadata=True, pretrained_encoder=True, quantiles=True)),
    "sequence-groups": ModelFamily(
        summary="shares of k-mer groups of ASV sequences, read by a shrunk linear model, boosted trees or a forest",
        config=Lazy("aam.models.config:SequenceGroupsConfig"), model=Lazy("aam.models.sequence_groups:sequence_group_model"),
        train=Lazy("aam.workflows.sequence_groups:train_sequence_groups"),
        capabilities=Capabilities(baseline_blend=True),
        own_options=("sequence_groups", "group_clusterings", "group_kmeans_starts", "group_readout",
                     "group_kmer_size", "group_positions", "group_anchors", "group_centred",
                     "group_diversity", "group_clades", "group_inner_score", "group_boosted_loss")),
})


def family_name(checkpoint: Mapping[str, Any]) -> str:
    """The family of a loaded checkpoint: recorded since the registry exists; before, the model config's
    ``model_type`` (sequence groups), else the transformer."""
    recorded = checkpoint.get("family")
    if recorded:
        return str(recorded)
    return str((checkpoint.get("model_config") or {}).get("model_type") or DEFAULT_FAMILY)
