"""The one loader of trained models: a checkpoint's family (``aam.families``) builds its model from the stored
config, and the stored weights go in. Serves predict, explain, embed, inspect and cross-validate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from aam.errors import AamError
from aam.families import DEFAULT_FAMILY, MODEL_FAMILIES, ModelFamily
from aam.models import EncoderConfig, SequenceEncoder, SequencePredictor
from aam.models.build import unwrap_model
from aam.outputs.checkpoint import load_checkpoint
from aam.outputs.data_config import DataConfig
from aam.workflows.resume import load_weights


def family_of(checkpoint: dict[str, Any], path: str | Path) -> ModelFamily:
    """The family that wrote ``checkpoint``; one line naming the file when this aam does not know it."""
    name = checkpoint["family"]
    if name not in MODEL_FAMILIES:
        raise AamError(f"checkpoint holds a {name!r} model, a family this aam does not know", source=path,
                       hint=f"known families: {', '.join(MODEL_FAMILIES.names())}")
    return MODEL_FAMILIES[name]


def family_of_model(model: torch.nn.Module) -> ModelFamily:
    """The family of a built model (its config's ``model_type``; the transformer's configs have none)."""
    return MODEL_FAMILIES[getattr(unwrap_model(model).config, "model_type", DEFAULT_FAMILY)]


def model_from_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> torch.nn.Module:
    """The model a loaded checkpoint describes, with its weights: a SequenceEncoder (``encoder``), or for a
    ``predictor`` the model its family builds from the stored config."""
    if checkpoint["kind"] == "encoder":
        config_class, build = EncoderConfig, SequenceEncoder
    else:
        family = family_of(checkpoint, path)
        config_class, build = family.config_class, family.build
    try:
        config = config_class.from_dict(checkpoint["model_config"])
    except (TypeError, ValueError, KeyError) as err:
        raise AamError(f"checkpoint's model configuration is not understood ({err})", source=path,
                       hint="the checkpoint may come from an incompatible aam version") from None
    model = build(config)
    load_weights(model, checkpoint["model_state"], path)
    return model


def load_predictor(path: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, DataConfig]:
    """The exact model of a ``predictor`` checkpoint (weights on ``device``, eval mode) and its data config."""
    checkpoint = load_checkpoint(path, map_location="cpu", expected_kind="predictor")
    return model_from_checkpoint(checkpoint, path).to(device).eval(), DataConfig.from_dict(checkpoint.get("data"))


def load_encoder(path: str | Path, device: torch.device) -> tuple[SequenceEncoder, DataConfig]:
    """The encoder (the base of a trained model, or a pretrained encoder) of a checkpoint, in eval mode."""
    checkpoint = load_checkpoint(path, map_location="cpu", expected_kind=("encoder", "predictor"))
    if checkpoint["kind"] == "predictor" and not family_of(checkpoint, path).capabilities.learned_embeddings:
        raise AamError(f"a {checkpoint['family']} model has no learned embeddings", source=str(path),
                       hint="give a pretrained_encoder.pt or a transformer model")
    model = model_from_checkpoint(checkpoint, path)
    encoder = model.base if isinstance(model, SequencePredictor) else model
    recorded = {"max_bp": encoder.config.max_bp, "token_limit": encoder.config.token_limit,
                **(checkpoint.get("data") or {})}  # a checkpoint without data reads as its model does
    return encoder.to(device).eval(), DataConfig.from_dict(recorded)
