"""AAM's models: pure `nn.Module`s built from frozen dataclass configs (tensors in, tensors out).

Nucleotides -> one vector per ASV (`ASVEncoder`); ASVs of a sample -> contextual ASV vectors
(`SampleSequenceEncoder`); -> pooled sample vector and predicted distances (`SequenceEncoder`, pretrainable);
-> target prediction with optional categorical fusion (`SequencePredictor`).

Names are imported from their modules on first use, so `aam.models.config` and `aam.models.registries` load
without torch (the CLI reads defaults and choices from them).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("ASVEncoder", "gather_asv_embeddings"), "asv_encoder"),
    **dict.fromkeys(("build_model", "from_config", "to_config", "unwrap_model"), "build"),
    **dict.fromkeys(("DISTANCE_METRICS", "GMU_GATES", "EncoderConfig", "PredictorConfig", "model_config_from_dict",
                     "model_config_to_dict"), "config"),
    **dict.fromkeys(("CategoricalEmbedder", "CategoricalFusion", "ConditionalOutputScaling"), "fusion"),
    **dict.fromkeys(("CountHead", "DistanceHead"), "heads"),
    **dict.fromkeys(("ATTENTION_BACKENDS", "AttentionPooling", "MultiHeadAttention", "PositionEmbedding",
                     "TransformerBlock", "TransformerStack"), "layers"),
    **dict.fromkeys(("COUNT_EMBEDDINGS", "FUSIONS", "MASK_STRATEGIES", "OUTPUT_CONSTRAINTS", "REGRESSION_HEADS"),
                    "registries"),
    **dict.fromkeys(("SampleSequenceEncoder", "abundance_feature"), "sample_encoder"),
    "SequenceEncoder": "sequence_encoder",
    "SequencePredictor": "sequence_predictor",
    **dict.fromkeys(("count_parameters", "model_summary"), "summary"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'aam.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"aam.models.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
