"""AAM's models: pure `nn.Module`s built from frozen dataclass configs (tensors in, tensors out).

Nucleotides -> one vector per ASV (`ASVEncoder`); ASVs of a sample -> contextual ASV vectors
(`SampleSequenceEncoder`); -> pooled sample vector and predicted distances (`SequenceEncoder`, pretrainable);
-> target prediction with optional categorical fusion (`SequencePredictor`).
"""

from aam.models.asv_encoder import MASK_STRATEGIES, ASVEncoder, gather_asv_embeddings
from aam.models.build import build_model, from_config, to_config, unwrap_model
from aam.models.config import (
                               DISTANCE_METRICS,
                               GMU_GATES,
                               EncoderConfig,
                               PredictorConfig,
                               model_config_from_dict,
                               model_config_to_dict,
)
from aam.models.fusion import FUSIONS, CategoricalEmbedder, CategoricalFusion, ConditionalOutputScaling
from aam.models.heads import OUTPUT_CONSTRAINTS, REGRESSION_HEADS, CountHead, DistanceHead
from aam.models.layers import (
                               ATTENTION_BACKENDS,
                               AttentionPooling,
                               MultiHeadAttention,
                               PositionEmbedding,
                               TransformerBlock,
                               TransformerStack,
)
from aam.models.sample_encoder import COUNT_EMBEDDINGS, SampleSequenceEncoder, abundance_feature
from aam.models.sequence_encoder import SequenceEncoder
from aam.models.sequence_predictor import SequencePredictor
from aam.models.summary import count_parameters, model_summary

__all__ = [
    "ASVEncoder", "ATTENTION_BACKENDS", "AttentionPooling", "COUNT_EMBEDDINGS", "CategoricalEmbedder",
    "CategoricalFusion", "ConditionalOutputScaling", "CountHead", "DISTANCE_METRICS", "DistanceHead",
    "EncoderConfig", "FUSIONS", "GMU_GATES", "MASK_STRATEGIES", "MultiHeadAttention", "OUTPUT_CONSTRAINTS",
    "PositionEmbedding", "PredictorConfig", "REGRESSION_HEADS", "SampleSequenceEncoder", "SequenceEncoder",
    "SequencePredictor", "TransformerBlock", "TransformerStack", "abundance_feature", "build_model",
    "count_parameters", "from_config", "gather_asv_embeddings", "model_config_from_dict",
    "model_config_to_dict", "model_summary", "to_config", "unwrap_model",
]
