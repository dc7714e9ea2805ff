"""Named option sets for ``aam pretrain``/``aam train --preset NAME``: defaults that flags can override.

``small-data`` is the recipe measured in BENCHMARKS.md on the oral-age benchmark (1,900 samples, 2 CPU
cores): a narrow model (D 32, one layer per stack) over each sample's 32 most abundant ASVs, batches of 16,
the L1 loss, an EMA of the weights and abundance-weighted target pooling; pretraining on UniFrac alone in
batches of 64. It sets no ``--max-bp`` (give your ASV length). The benchmarked recommendation trains it twice,
as is and with ``--kmer-size 6``, and averages the two with ``aam predict --model A --model B``.
"""

from __future__ import annotations

from typing import Any

_SMALL_DATA_MODEL: dict[str, Any] = {
    "embedding_dim": 32, "attention_heads": 4, "attention_layers": 1, "token_limit": 32, "dropout": 0.0,
    "count_embedding": True, "nuc_penalty": 0.0, "lr": 3e-3,
}

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "small-data": {
        "pretrain": {**_SMALL_DATA_MODEL, "batch_size": 64, "epochs": 20},
        "train": {**_SMALL_DATA_MODEL, "batch_size": 16, "epochs": 30, "patience": 8, "loss_type": "mae",
                  "target_pooling": "abundance", "ema_decay": 0.99},
    },
}
