"""Data-dependent initialisation of the distance head's rate.

The predicted distance is 1 - exp(-rate * ||e_i - e_j||). The embeddings' scale is fixed by the encoder's
final LayerNorm, so only the scalar rate sets the level of the predictions, and Adam moves a scalar by about
the learning rate per step: from a fixed start, matching the targets' level would take thousands of steps.
Setting the rate once from one batch, so that the mean prediction equals the mean target, removes that wait.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from torch import nn

from aam.models.build import unwrap_model
from aam.training.forward import forward_batch

log = logging.getLogger(__name__)


@torch.no_grad()
def calibrate_distance_head(model: nn.Module, loader: Iterable, device: torch.device, max_batches: int = 16) -> None:
    """Set the distance head's rate so that predictions match the mean target over a few batches.

    Runs in training mode and on the way fills the ASV normalisation's running statistics with the average
    over these batches, so training starts from well-scaled embeddings.
    """
    bare = unwrap_model(model)
    head = bare.distance_head
    norms = [m for m in bare.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the calibration batches
    was_training = bare.training
    bare.train()
    distance_sum, target_sum, pairs = 0.0, 0.0, 0
    try:
        for i, batch in enumerate(loader):
            if i >= max_batches:
                break
            if batch.distances is None or batch.distances.dim() != 2 or len(batch) < 2:
                continue
            batch = batch.to(device)
            embeddings = forward_batch(bare, batch)["embeddings"].float()
            upper = torch.triu_indices(len(batch), len(batch), 1, device=device)
            distances = torch.cdist(embeddings, embeddings)[upper[0], upper[1]]
            distance_sum += distances.sum().item()
            target_sum += batch.distances[upper[0], upper[1]].float().sum().item()
            pairs += distances.numel()
    finally:
        bare.train(was_training)
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
    if pairs == 0 or distance_sum <= 0:
        return
    mean_distance, mean_target = distance_sum / pairs, target_sum / pairs
    rate = head.calibrate(mean_distance, mean_target)
    log.info("distance head calibrated: rate %.3g (mean target %.3f, mean embedding distance %.3f)", rate,
             mean_target, mean_distance)
