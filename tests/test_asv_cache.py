"""A frozen encoder's ASV embedding cache gives the same outputs as running the encoder."""

from __future__ import annotations

import numpy as np
import torch

from aam.models import EncoderConfig, PredictorConfig, SequencePredictor
from aam.training.asv_cache import encode_all_asvs
from aam.training.trainer import forward_batch
from aam.workflows.inputs import build_loaders, load_amplicon_data


def test_cached_embeddings_reproduce_the_encoder(synthetic_dir):
    torch.manual_seed(0)
    data = load_amplicon_data(synthetic_dir["table"])
    rows = np.arange(data.n_samples)
    loader, _ = build_loaders(data, rows, rows[:4], batch_size=8, token_limit=32, asv_sampling="abundance", seed=0)
    model = SequencePredictor(PredictorConfig(encoder=EncoderConfig(embedding_dim=16, attention_heads=2,
                                                                    attention_layers=1, token_limit=32)))
    model.freeze_base(True)
    model.train()  # the frozen base stays in eval mode, so its ASV embeddings are fixed per sequence
    assert not model.base.training
    cache = encode_all_asvs(model, data.tokens, torch.device("cpu"), chunk_size=7)
    model.eval()  # compare without dropout in the trainable branch
    with torch.no_grad():
        for batch in loader:
            direct = forward_batch(model, batch)["prediction"]
            cached = forward_batch(model, batch, asv_embeddings=cache[batch.asv_ids])["prediction"]
            torch.testing.assert_close(cached, direct, rtol=1e-5, atol=1e-5)
