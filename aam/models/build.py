"""Models from their configs and back: `build_model` (alias `from_config`), `to_config`, `unwrap_model`."""

from __future__ import annotations

from torch import nn

from aam.models.config import EncoderConfig, ModelConfig, PredictorConfig
from aam.models.sequence_encoder import SequenceEncoder
from aam.models.sequence_predictor import SequencePredictor


def build_model(config: ModelConfig) -> nn.Module:
    """A fresh `SequenceEncoder` or `SequencePredictor` for `config`."""
    if isinstance(config, PredictorConfig):
        return SequencePredictor(config)
    if isinstance(config, EncoderConfig):
        return SequenceEncoder(config)
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
