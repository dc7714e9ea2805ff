"""The model learns from sequences: a regression test for the collapse of ASV embeddings at initialisation."""

from __future__ import annotations

import numpy as np
import torch

from aam.data.metadata import read_metadata
from aam.models import EncoderConfig, PredictorConfig, SequencePredictor
from aam.training.trainer import forward_batch
from aam.workflows.inputs import build_loaders, load_amplicon_data


def test_predictor_fits_the_synthetic_target(synthetic_dir):
    torch.manual_seed(0)
    data = load_amplicon_data(synthetic_dir["table"])
    target = read_metadata(synthetic_dir["metadata"]).loc[data.sample_ids, "target"].astype(float).to_numpy()
    z = ((target - target.mean()) / target.std()).astype(np.float32)
    rows = np.arange(data.n_samples)
    loader, _ = build_loaders(data, rows, rows[:8], batch_size=16, token_limit=32, asv_sampling="abundance",
                              seed=0, train_targets=z, val_targets=z[:8])
    model = SequencePredictor(PredictorConfig(
        encoder=EncoderConfig(embedding_dim=16, attention_heads=2, attention_layers=1, token_limit=32,
                              count_embedding=True, dropout=0.0), count_prediction=False))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(25):
        for batch in loader:
            loss = ((forward_batch(model, batch)["prediction"][:, 0] - batch.targets) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        errors = [((forward_batch(model, b)["prediction"][:, 0] - b.targets) ** 2) for b in loader]
    mse = torch.cat(errors).mean().item()
    assert mse < 0.6, f"training MSE {mse:.3f} (in units of the target's variance): the model did not learn"


def test_asv_embeddings_start_distinguishable():
    """Sequences 5% apart get embeddings far apart relative to their norm from the first training step."""
    torch.manual_seed(0)
    model = SequencePredictor(PredictorConfig(encoder=EncoderConfig(embedding_dim=32, attention_heads=4,
                                                                    attention_layers=2)))
    rng = np.random.default_rng(0)
    root = rng.integers(1, 5, size=120)
    related = np.stack([np.where(rng.random(120) < 0.05, rng.integers(1, 5, 120), root) for _ in range(20)])
    tokens = torch.from_numpy(np.concatenate([np.full((20, 1), 6), related], axis=1))
    with torch.no_grad():
        embeddings = model.encode_asvs(tokens)
    distances = torch.cdist(embeddings, embeddings)
    spread = distances[~torch.eye(20, dtype=torch.bool)].mean() / embeddings.norm(dim=1).mean()
    assert spread > 0.5, f"ASVs 5% apart are only {spread:.3f} apart relative to their norm"
