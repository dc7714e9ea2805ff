"""Which reads a model has never seen: fingerprints of the ASVs a model trained on, and each new sample's share
of reads in ASVs outside them (a model reading mostly unseen ASVs is extrapolating; ``aam predict`` says so)."""

from __future__ import annotations

import hashlib

import numpy as np
from scipy import sparse


def asv_fingerprints(tokens: np.ndarray) -> np.ndarray:
    """[U, L] tokenised ASVs -> sorted distinct int64 fingerprints (8 bytes of BLAKE2b of each row), so the same
    sequence read at the same ``max_bp`` matches whatever its feature id (hashed or the sequence itself)."""
    return np.unique(asv_fingerprints_per_row(tokens))


def training_fingerprints(counts: sparse.csr_matrix, tokens: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Fingerprints of the ASVs held by the samples ``rows`` of ``counts`` [N, U] (``tokens`` [U, L])."""
    held = np.unique(sparse.csr_matrix(counts)[rows].indices)
    return asv_fingerprints(tokens[held])


def unseen_read_share(counts: sparse.csr_matrix, tokens: np.ndarray, known: np.ndarray) -> np.ndarray:
    """[N] share of each sample's reads in ASVs whose fingerprint is not in ``known`` (0 for an empty sample)."""
    counts = sparse.csr_matrix(counts)
    unseen = ~np.isin(asv_fingerprints_per_row(tokens), np.asarray(known, dtype=np.int64))  # [U]
    totals = np.asarray(counts.sum(axis=1)).ravel()
    outside = counts @ unseen.astype(np.float64)
    return np.divide(outside, totals, out=np.zeros_like(totals, dtype=np.float64), where=totals > 0)


def asv_fingerprints_per_row(tokens: np.ndarray) -> np.ndarray:
    """[U, L] -> [U] fingerprint of each row, in row order (not deduplicated)."""
    return np.asarray([int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little", signed=True)
                       for row in np.ascontiguousarray(tokens, dtype=np.uint8)], dtype=np.int64)
