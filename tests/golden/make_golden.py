"""Write tests/golden/predictor_tiny.pt: a seeded tiny SequencePredictor (float64), its inputs and outputs.

Run from the repository root after a deliberate change to the model's numerics:
    python tests/golden/make_golden.py
The test (tests/test_models.py::test_golden_outputs) rebuilds the model from the stored config and weights
and compares its outputs with the stored ones (rtol 1e-6).
"""

from __future__ import annotations

from pathlib import Path

import torch

from aam.models import EncoderConfig, PredictorConfig, build_model, model_config_to_dict

GOLDEN_PATH = Path(__file__).with_name("predictor_tiny.pt")
OUTPUT_KEYS = ("embeddings", "distances", "sample_embeddings", "count_prediction", "prediction",
               "cross_attention_weights")


def golden_config() -> PredictorConfig:
    encoder = EncoderConfig(max_bp=9, embedding_dim=8, attention_heads=2, attention_layers=1, ffn_ratio=2,
                            dropout=0.0, count_embedding=True, count_embedding_method="film")
    return PredictorConfig(encoder=encoder, out_dim=2, categorical_cardinalities=(3, 4),
                           categorical_embed_dim=4, categorical_fusion="cross-attention", cross_attn_heads=2,
                           conditional_output_scaling_columns=(0,), regressor_hidden_dims=(6,))


def golden_inputs() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1234)
    tokens = torch.randint(1, 6, (5, 10), generator=generator)
    tokens[:, 0] = 6
    tokens[1, 7:] = 0
    tokens[3, 5:] = 0
    asv_index = torch.tensor([[0, 1, 2, 3], [4, 2, 0, 0], [1, 0, 0, 0]])
    asv_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    counts = torch.randint(1, 50, (3, 4), generator=generator).double() * asv_mask
    categoricals = torch.tensor([[1, 3], [2, 0], [0, 1]])
    return dict(tokens=tokens, asv_index=asv_index, asv_mask=asv_mask, counts=counts, categoricals=categoricals)


def main() -> None:
    torch.manual_seed(0)
    model = build_model(golden_config()).double().eval()
    inputs = golden_inputs()
    with torch.no_grad():
        outputs = model(**inputs)
    torch.save({"config": model_config_to_dict(model.config), "state_dict": model.state_dict(), "inputs": inputs,
                "outputs": {key: outputs[key] for key in OUTPUT_KEYS}}, GOLDEN_PATH)
    print(f"wrote {GOLDEN_PATH}")


if __name__ == "__main__":
    main()
