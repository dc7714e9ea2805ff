"""Distance metrics as small classes in a registry: each turns counts [N, T] into a kernel's features.

Add a metric by adding a class and one line in ``METRICS``; the CLI's choices come from this registry.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from aam.unifrac.kernels import L1Kernel, PresenceKernel
from aam.unifrac.tree import TreeIncidence

Kernel = PresenceKernel | L1Kernel


def merge_identical_columns(features: sp.csr_matrix, weights: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    """Drop features with zero weight or held by no sample, and merge identical columns (weights summed).

    Exact for both kernels: two identical columns contribute ``(w1 + w2) * f(column)``.
    Returns features [N, K'] and weights [K'].
    """
    columns = features.tocsc()
    columns.sort_indices()
    keep = np.flatnonzero((columns.getnnz(axis=0) > 0) & (weights > 0))
    first_of: dict[tuple[bytes, bytes], int] = {}
    group = np.empty(len(keep), dtype=np.int64)  # merged column of each kept column
    for position, k in enumerate(keep):
        start, end = columns.indptr[k], columns.indptr[k + 1]
        key = (columns.indices[start:end].tobytes(), columns.data[start:end].tobytes())
        group[position] = first_of.setdefault(key, len(first_of))
    representatives = keep[np.unique(group, return_index=True)[1]]
    merged_weights = np.bincount(group, weights=weights[keep], minlength=len(first_of))
    return columns[:, representatives].tocsr(), merged_weights


def compact_columns(features: sp.csr_matrix, weights: np.ndarray, merge: bool = True
                    ) -> tuple[sp.csr_matrix, np.ndarray]:
    """``merge_identical_columns``, or with ``merge=False`` only the columns held by no sample or of zero
    weight dropped (cheaper for a few samples, where few columns repeat)."""
    if merge:
        return merge_identical_columns(features, weights)
    keep = np.flatnonzero((features.getnnz(axis=0) > 0) & (weights > 0))
    return features[:, keep].tocsr(), weights[keep]


def _relative(counts: sp.csr_matrix) -> tuple[sp.csr_matrix, np.ndarray]:
    """Rows divided by their totals (empty rows stay zero), and the totals [N]."""
    totals = np.asarray(counts.sum(axis=1)).ravel()
    scale = np.divide(1.0, totals, out=np.zeros_like(totals), where=totals > 0)
    return sp.diags(scale) @ counts, totals


class Metric:
    """One distance metric: ``kernel(counts, tree)`` builds the per-dataset features; ``merge=False`` skips
    merging identical feature columns (worth it for a whole dataset's matrix, not for one batch)."""

    name: ClassVar[str]
    label: ClassVar[str]
    needs_tree: ClassVar[bool] = True

    def kernel(self, counts: sp.csr_matrix, tree: TreeIncidence | None, merge: bool = True) -> Kernel:
        raise NotImplementedError


class UnweightedUniFrac(Metric):
    name, label = "unweighted", "unweighted UniFrac"

    def kernel(self, counts, tree, merge=True):
        presence = (counts @ tree.incidence).tocsr()  # [N, M] branch counts
        presence.data = (presence.data > 0).astype(np.float64)
        presence.eliminate_zeros()
        return PresenceKernel(*compact_columns(presence, tree.lengths, merge))


class WeightedUnnormalizedUniFrac(Metric):
    name, label = "weighted-unnormalized", "weighted unnormalized UniFrac"
    normalized: ClassVar[bool] = False

    def kernel(self, counts, tree, merge=True):
        relative, _ = _relative(counts)  # [N, T]
        branch_abundance = (relative @ tree.incidence).tocsr()  # [N, M]
        features, lengths = compact_columns(branch_abundance, tree.lengths, merge)
        normaliser = relative @ tree.tip_depths if self.normalized else None  # [N]
        return L1Kernel.from_features((features @ sp.diags(lengths)).tocsr(), normaliser)


class WeightedNormalizedUniFrac(WeightedUnnormalizedUniFrac):
    name, label = "weighted-normalized", "weighted normalized UniFrac"
    normalized = True


class BrayCurtis(Metric):
    name, label, needs_tree = "braycurtis", "Bray-Curtis", False

    def kernel(self, counts, tree, merge=True):
        totals = np.asarray(counts.sum(axis=1)).ravel()
        return L1Kernel.from_features(counts.tocsr(), totals)


class Jaccard(Metric):
    name, label, needs_tree = "jaccard", "Jaccard", False

    def kernel(self, counts, tree, merge=True):
        presence = counts.tocsr(copy=True)
        presence.data = (presence.data > 0).astype(np.float64)
        presence.eliminate_zeros()
        return PresenceKernel(*compact_columns(presence, np.ones(presence.shape[1]), merge))


METRICS: dict[str, type[Metric]] = {
    cls.name: cls for cls in (UnweightedUniFrac, WeightedNormalizedUniFrac, WeightedUnnormalizedUniFrac,
                              BrayCurtis, Jaccard)
}
# names the reference tool and scikit-bio use
ALIASES: dict[str, str] = {
    "unifrac": "unweighted",
    "unweighted_unifrac": "unweighted",
    "weighted": "weighted-normalized",
    "weighted_normalized_unifrac": "weighted-normalized",
    "weighted_unifrac": "weighted-unnormalized",
}


def get_metric(name: str) -> Metric:
    """The metric called ``name`` (or one of its aliases); ValueError for an unknown name."""
    key = ALIASES.get(name, name)
    if key not in METRICS:
        raise ValueError(f"unknown metric {name!r}; choose from {', '.join([*METRICS, *ALIASES])}")
    return METRICS[key]()
