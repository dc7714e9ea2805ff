"""The distance head starts calibrated to the targets' level."""

from __future__ import annotations

import numpy as np
import torch

from aam.models import EncoderConfig, SequenceEncoder
from aam.training.calibration import calibrate_distance_head
from aam.training.trainer import forward_batch
from aam.workflows.inputs import build_loaders, load_amplicon_data, load_distance_targets


def test_calibrated_predictions_match_mean_target(synthetic_dir):
    torch.manual_seed(0)
    data = load_amplicon_data(synthetic_dir["table"])
    targets = load_distance_targets(data, unifrac_matrix=None, tree=str(synthetic_dir["tree"]), metric="unifrac")
    rows = np.arange(data.n_samples)
    loader, _ = build_loaders(data, rows, rows[:4], batch_size=16, token_limit=32, asv_sampling="abundance",
                              seed=0, distance_lookup=targets.lookup)
    model = SequenceEncoder(EncoderConfig(embedding_dim=16, attention_heads=2, attention_layers=1, token_limit=32))
    calibrate_distance_head(model, loader, torch.device("cpu"), max_batches=100)
    model.eval()
    predicted, true = [], []
    with torch.no_grad():
        for batch in loader:
            upper = torch.triu_indices(len(batch), len(batch), 1)
            predicted.append(forward_batch(model, batch)["distances"][upper[0], upper[1]])
            true.append(batch.distances[upper[0], upper[1]])
    predicted, true = torch.cat(predicted), torch.cat(true)
    # exact for the mean distance; the exponential's curvature leaves a small gap in the mean prediction
    assert abs(predicted.mean().item() - true.mean().item()) < 0.1 * true.mean().item()
