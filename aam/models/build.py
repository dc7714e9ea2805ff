"""Models from their configs and back: `build_model` (alias `from_config`), `to_config`, `unwrap_model`."""

from __future__ import annotations

from typing import Any

from torch import nn

from aam.models.config import EncoderConfig, ModelConfig, PredictorConfig
from aam.models.sequence_encoder import SequenceEncoder
from aam.models.sequence_predictor import SequencePredictor


def build_model(config: ModelConfig | Any) -> nn.Module:
    """A fresh model for `config`: a `SequenceEncoder`, a `SequencePredictor`, or the model of the family its
    ``model_type`` names (`aam.families`)."""
    if isinstance(config, PredictorConfig):
        return SequencePredictor(config)
    if isinstance(config, EncoderConfig):
        return SequenceEncoder(config)
    from aam.families import MODEL_FAMILIES

    family = getattr(config, "model_type", None)
    if family in MODEL_FAMILIES:
        return MODEL_FAMILIES[family].build(config)
    raise TypeError(f"not a model config: {type(config).__name__}")


from_config = build_model


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare module inside DataParallel/DDP and ``torch.compile`` wrappers (FSDP2 shards in place)."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        else:
            return model


def to_config(model: nn.Module) -> ModelConfig:
    """The config a model was built from (through any wrapper)."""
    return unwrap_model(model).config  # type: ignore[return-value]
