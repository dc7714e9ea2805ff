"""The two pairwise kernels behind every metric, over a samples x features matrix (features: branches or ASVs).

* ``PresenceKernel``: ``d_ij = unique_ij / union_ij`` with ``shared = (P * w) @ P.T`` and
  ``union_ij = a_i + a_j - shared_ij`` (``a = P @ w``), P the 0/1 presence [N, K] and w the feature weights.
  Unweighted UniFrac (w = branch lengths) and Jaccard (w = 1).
* ``L1Kernel``: ``d_ij = sum_k |x_ik - x_jk| / (z_i + z_j)`` over non-negative features x [N, K] (already
  multiplied by their weights) and an optional per-sample normaliser z. Weighted UniFrac (x = relative
  abundance * branch length) and Bray-Curtis (x = counts, z = totals). Features held by many samples are kept
  dense and go through ``torch.cdist``; the sparse rest uses ``|a - b| = a + b - 2 min(a, b)``, so each such
  feature costs (samples holding it)^2 instead of N^2.

Both compute the matrix in blocks of rows (``block_size``) against the rows at or after them, mirror it, and
offer ``batch(indices)`` for the [B, B] matrix of any subset.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from tqdm import tqdm

# a feature held by more than this fraction of the samples is computed densely (measured on the oral data)
DENSE_FRACTION = 0.2


# Distances are computed in the dtype asked for, never under a caller's autocast: a training step under bf16
# autocast on CPU (the DDP/FSDP path builds the global batch's targets inside the step) would otherwise round
# the targets' matmuls to bf16.
def _exact(compute: Callable) -> Callable:
    @functools.wraps(compute)
    def without_autocast(*args, **kwargs):
        with torch.autocast("cpu", enabled=False):
            return compute(*args, **kwargs)
    return without_autocast


def _row_blocks(n: int, block_size: int) -> list[tuple[int, int]]:
    return [(start, min(start + block_size, n)) for start in range(0, n, block_size)]


def _progress(blocks: list, progress: bool, desc: str) -> Iterator:
    return iter(tqdm(blocks, desc=desc, unit="block", disable=not progress, leave=False))


def _dense(rows: sp.csr_matrix, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(rows.toarray()).to(dtype)


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    return torch.empty(0, dtype=dtype).numpy().dtype


def _symmetric(square: np.ndarray) -> np.ndarray:
    """The upper triangle mirrored below it, zero diagonal: exact symmetry whatever the rounding."""
    upper = np.triu(square, 1)
    return upper + upper.T


def _fill(out: np.ndarray, a0: int, block: np.ndarray) -> None:
    """Write rows [a0, a0 + Ba) x columns [a0, N) of ``out`` and their mirror image below the diagonal."""
    size = block.shape[0]
    block[:, :size] = _symmetric(block[:, :size])
    out[a0:a0 + size, a0:] = block
    out[a0:, a0:a0 + size] = block.T


@dataclass
class PresenceKernel:
    """Presence/absence distances: unweighted UniFrac and Jaccard.

    Attributes:
        presence: [N, K] CSR of 0/1 (features absent from every sample removed, identical ones merged).
        weights: [K] float64 feature weights (summed over merged features).
    """

    presence: sp.csr_matrix
    weights: np.ndarray

    def _block(self, rows_a: sp.csr_matrix, rows_b: sp.csr_matrix, dtype: torch.dtype) -> np.ndarray:
        weights = torch.from_numpy(self.weights).to(dtype)
        dense_a, dense_b = _dense(rows_a, dtype), _dense(rows_b, dtype)  # [Ba, K], [Bb, K]
        shared = (dense_a * weights) @ dense_b.T  # [Ba, Bb]
        union = (dense_a @ weights)[:, None] + (dense_b @ weights)[None, :] - shared
        unique = union - shared
        dist = torch.where(union > 0, unique / torch.where(union > 0, union, 1), 0)
        return dist.clamp_(0, 1).numpy()

    @_exact
    def pairwise(self, block_size: int, dtype: torch.dtype, progress: bool = False) -> np.ndarray:
        n = self.presence.shape[0]
        out = np.zeros((n, n), dtype=_numpy_dtype(dtype))
        blocks = _row_blocks(n, block_size)
        for a0, a1 in _progress(blocks, progress, "distances"):
            rows_a = self.presence[a0:a1]
            block = np.hstack([self._block(rows_a, self.presence[b0:b1], dtype) for b0, b1 in blocks
                               if b0 >= a0])  # [Ba, N - a0]
            _fill(out, a0, block)
        return out

    @_exact
    def batch(self, indices: np.ndarray, dtype: torch.dtype = torch.float64) -> np.ndarray:
        rows = self.presence[np.asarray(indices)]
        return _symmetric(self._block(rows, rows, dtype))


@dataclass
class L1Kernel:
    """Weighted L1 distances: weighted UniFrac and Bray-Curtis.

    Attributes:
        dense: [N, Kd] float64, the features held by many samples.
        sparse: [N, Ks] CSC, the others (already multiplied by their weights).
        sparse_totals: [N] row sums of ``sparse``.
        normaliser: [N] per-sample ``z`` (distance divided by ``z_i + z_j``), or None.
    """

    dense: np.ndarray
    sparse: sp.csc_matrix
    sparse_totals: np.ndarray
    normaliser: np.ndarray | None

    @classmethod
    def from_features(cls, features: sp.csr_matrix, normaliser: np.ndarray | None) -> L1Kernel:
        """Split weighted features [N, K] into dense and sparse columns by how many samples hold them."""
        features = features.tocsc()
        held = features.getnnz(axis=0)  # [K]
        dense_cols = held > DENSE_FRACTION * features.shape[0]
        sparse = features[:, np.flatnonzero(~dense_cols)].tocsc()
        sparse.sort_indices()
        return cls(dense=features[:, np.flatnonzero(dense_cols)].toarray(), sparse=sparse,
                   sparse_totals=np.asarray(sparse.sum(axis=1)).ravel(), normaliser=normaliser)

    def _sparse_rows(self, a0: int, a1: int, b0: int) -> np.ndarray:
        """Sum over sparse features of |x_ik - x_jk| for rows i in [a0, a1) and columns j >= b0: [Ba, N - b0]."""
        block = np.add.outer(self.sparse_totals[a0:a1], self.sparse_totals[b0:])  # x_i + x_j summed
        indptr, indices, data = self.sparse.indptr, self.sparse.indices, self.sparse.data
        for k in range(self.sparse.shape[1]):
            rows, values = indices[indptr[k]:indptr[k + 1]], data[indptr[k]:indptr[k + 1]]
            lo, mid, hi = np.searchsorted(rows, [a0, a1, b0])
            if mid == lo or hi == len(rows):
                continue
            cols = rows[hi:]
            block[np.ix_(rows[lo:mid] - a0, cols - b0)] -= 2 * np.minimum.outer(values[lo:mid], values[hi:])
        return block

    def _normalise(self, block: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        np.maximum(block, 0, out=block)
        if self.normaliser is None:
            return block
        denominator = np.add.outer(self.normaliser[rows], self.normaliser[cols])
        return np.divide(block, denominator, out=np.zeros_like(block), where=denominator > 0)

    @_exact
    def pairwise(self, block_size: int, dtype: torch.dtype, progress: bool = False) -> np.ndarray:
        n = self.dense.shape[0]
        out = np.zeros((n, n), dtype=_numpy_dtype(dtype))
        dense = torch.from_numpy(self.dense).to(dtype)
        for a0, a1 in _progress(_row_blocks(n, block_size), progress, "distances"):
            block = self._sparse_rows(a0, a1, a0)  # [Ba, N - a0]
            if dense.shape[1]:
                block += torch.cdist(dense[a0:a1], dense[a0:], p=1).double().numpy()
            _fill(out, a0, self._normalise(block, np.arange(a0, a1), np.arange(a0, n)))
        return out

    @_exact
    def batch(self, indices: np.ndarray, dtype: torch.dtype = torch.float64) -> np.ndarray:
        indices = np.asarray(indices)
        sparse = self.sparse[indices]
        sparse = sparse[:, np.flatnonzero(sparse.getnnz(axis=0))].toarray()
        features = torch.from_numpy(np.hstack([self.dense[indices], sparse])).to(dtype)  # [B, K']
        block = torch.cdist(features, features, p=1).double().numpy()
        dist = _symmetric(self._normalise(block, indices, indices))
        return dist.astype(_numpy_dtype(dtype), copy=False)
