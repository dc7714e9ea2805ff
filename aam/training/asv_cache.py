"""Cached ASV embeddings for a frozen encoder.

When the base encoder is frozen it runs in eval mode, so each ASV's embedding is a fixed function of its
sequence. Encoding every distinct ASV of the table once, up front, lets each training step skip the
nucleotide-level transformer (the most expensive part of the model) entirely.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from aam.models.build import unwrap_model


@torch.no_grad()
def encode_all_asvs(model: nn.Module, tokens: np.ndarray, device: torch.device,
                    chunk_size: int = 512) -> torch.Tensor:
    """Embeddings [N_asvs, D] of every row of ``tokens`` [N_asvs, L] (uint8), on ``device``.

    Chunks are sorted by sequence length and trimmed to their longest member, like training batches.
    """
    bare = unwrap_model(model)
    lengths = (tokens != 0).sum(axis=1)
    order = np.argsort(lengths, kind="stable")
    chunks = []
    was_training = bare.training
    bare.eval()
    try:
        for start in range(0, len(order), chunk_size):
            rows = order[start:start + chunk_size]
            width = int(lengths[rows].max())
            batch = torch.from_numpy(tokens[rows, :width].astype(np.int64)).to(device)
            chunks.append(bare.encode_asvs(batch).float())
    finally:
        bare.train(was_training)
    embeddings = torch.cat(chunks)
    result = torch.empty_like(embeddings)
    result[torch.from_numpy(order).to(device)] = embeddings
    return result
