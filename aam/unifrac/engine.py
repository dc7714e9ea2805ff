"""The UniFrac engine: one tree indexed once per dataset, then full matrices, batches and Faith PD.

Counts are samples x ASVs ([N, T], the transpose of a BIOM table), in the order of ``asv_ids``.
Results match ``skbio.diversity.beta_diversity`` / ``alpha_diversity('faith_pd')`` to rounding.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from skbio import TreeNode

from aam.errors import AamError
from aam.unifrac.metrics import Kernel, Metric, get_metric
from aam.unifrac.tree import TreeIncidence, load_tree

DTYPES = {"float64": torch.float64, "float32": torch.float32}


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` intra-op threads (None or 0: leave torch's setting)."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def as_counts(counts: sp.spmatrix | np.ndarray, n_asvs: int, source: str | None = None) -> sp.csr_matrix:
    """Counts [N, T] as float64 CSR, checked once: finite and non-negative."""
    matrix = _checked(sp.csr_matrix(counts, dtype=np.float64), n_asvs, source)
    matrix.eliminate_zeros()
    return matrix


def _checked(matrix: sp.csr_matrix, n_asvs: int, source: str | None) -> sp.csr_matrix:
    """``matrix`` itself, once its width and values are checked: finite and non-negative."""
    if matrix.shape[1] != n_asvs:
        raise ValueError(f"counts have {matrix.shape[1]} columns, the engine {n_asvs} ASVs")
    if not np.all(np.isfinite(matrix.data)) or np.any(matrix.data < 0):
        raise AamError("counts must be finite and non-negative", source=source)
    return matrix


@dataclass
class BatchedSamples:
    """A dataset's samples ready for batches only: each batch's features are built from its samples' counts
    when it is asked for, so memory is the counts' (no [N, branches] matrix) and a batch costs the same in a
    corpus of any size. Equal to ``PreparedSamples.batch`` to rounding."""

    metric: Metric
    counts: sp.csr_matrix
    tree: TreeIncidence | None

    @property
    def n_samples(self) -> int:
        return self.counts.shape[0]

    def batch(self, sample_indices: np.ndarray | list[int], dtype: str = "float64") -> np.ndarray:
        """Distances among the samples ``sample_indices``: [B, B]."""
        rows = self.counts[np.asarray(sample_indices, dtype=np.int64)].astype(np.float64)
        rows.eliminate_zeros()
        kernel = self.metric.kernel(rows, self.tree, merge=False)
        return kernel.batch(np.arange(rows.shape[0]), DTYPES[dtype])


@dataclass
class PreparedSamples:
    """A dataset's samples ready for any pair or batch: the metric's kernel over [N, K] features."""

    metric: Metric
    kernel: Kernel
    n_samples: int

    def batch(self, sample_indices: np.ndarray | list[int], dtype: str = "float64") -> np.ndarray:
        """Distances among the samples ``sample_indices``: [B, B], equal to that block of the full matrix."""
        return self.kernel.batch(np.asarray(sample_indices, dtype=np.int64), DTYPES[dtype])

    def pairwise(self, block_size: int = 1024, dtype: str = "float64", threads: int | None = None,
                 progress: bool = False) -> np.ndarray:
        """The full [N, N] matrix, computed ``block_size`` rows at a time."""
        if block_size < 1:
            raise AamError("the block size must be at least 1", source="--block-size")
        with torch_threads(threads):
            return self.kernel.pairwise(block_size, DTYPES[dtype], progress)


class UniFracEngine:
    """UniFrac (and Bray-Curtis, Jaccard) for tables whose ASVs are ``asv_ids``.

    Args:
        tree: a skbio ``TreeNode``, a Newick path, or None (then only non-phylogenetic metrics work).
        asv_ids: the table's ASV ids, in column order; all must be tips of the tree.
        source: the tree's file or flag, for error messages.
    """

    def __init__(self, tree: TreeNode | str | os.PathLike | None, asv_ids: list[str],
                 source: str | os.PathLike | None = None):
        if isinstance(tree, str | os.PathLike):
            source = source or tree
            tree = load_tree(Path(tree))
        self.asv_ids = [str(a) for a in asv_ids]
        self.source = source
        self.tree = None if tree is None else TreeIncidence.build(tree, self.asv_ids, source)

    @property
    def n_asvs(self) -> int:
        return len(self.asv_ids)

    def prepare(self, counts: sp.spmatrix | np.ndarray, metric: str) -> PreparedSamples:
        """Per-sample features for ``metric``, once per dataset (counts [N, T])."""
        chosen = self._metric(metric)
        matrix = as_counts(counts, self.n_asvs)
        return PreparedSamples(chosen, chosen.kernel(matrix, self.tree), matrix.shape[0])

    def for_batches(self, counts: sp.spmatrix | np.ndarray, metric: str) -> BatchedSamples:
        """Like :meth:`prepare` for batches only (training targets): features per batch, memory of the counts
        (kept as given, e.g. float32, and checked once; each batch's rows become float64)."""
        return BatchedSamples(self._metric(metric), _checked(sp.csr_matrix(counts), self.n_asvs, self.source),
                              self.tree)

    def _metric(self, metric: str) -> Metric:
        chosen = get_metric(metric)
        if chosen.needs_tree and self.tree is None:
            raise AamError(f"{chosen.label} needs a phylogenetic tree", source="--tree",
                           hint="pass --tree FILE.nwk")
        return chosen

    def pairwise(self, counts: sp.spmatrix | np.ndarray, metric: str, block_size: int = 1024,
                 dtype: str = "float64", threads: int | None = None, progress: bool = False) -> np.ndarray:
        """The [N, N] distance matrix of ``metric`` among the rows of ``counts`` [N, T]."""
        return self.prepare(counts, metric).pairwise(block_size, dtype, threads, progress)

    def batch(self, counts_rows: sp.spmatrix | np.ndarray, metric: str, dtype: str = "float64") -> np.ndarray:
        """The [B, B] matrix among a few samples' counts [B, T] (prepare once for repeated batches)."""
        prepared = self.prepare(counts_rows, metric)
        return prepared.batch(np.arange(prepared.n_samples), dtype)

    def faith_pd(self, counts: sp.spmatrix | np.ndarray) -> np.ndarray:
        """Faith's phylogenetic diversity of each sample [N]: the total length of the branches it holds."""
        if self.tree is None:
            raise AamError("Faith PD needs a phylogenetic tree", source="--tree", hint="pass --tree FILE.nwk")
        presence = (as_counts(counts, self.n_asvs) @ self.tree.incidence).tocsr()  # [N, M]
        presence.data = (presence.data > 0).astype(np.float64)
        return np.asarray(presence @ self.tree.lengths).ravel()
