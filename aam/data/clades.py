"""The clades of a phylogeny worth a feature: the branches above two or more of a table's ASVs, held by enough
samples, each set of ASVs once. Read by the sequence-groups model (``--group-clades``) and the clade-aware
baselines (``clr-linear-clades``, ``boosted-clades``)."""

from __future__ import annotations

import numpy as np
from scipy import sparse

CLADE_PREVALENCE = 0.05  # a clade is kept when at least this share of the training samples hold it


def select_clades(incidence: sparse.csr_matrix, counts: sparse.csr_matrix,
                  min_prevalence: float = CLADE_PREVALENCE) -> sparse.csr_matrix:
    """The clades worth a feature, as [U, C] 0/1 columns over the ``U`` ASVs of ``incidence`` [U, M] (ASV u
    descends from branch m, :class:`aam.unifrac.tree.TreeIncidence`): the branches above two or more but not all
    of the ASVs, each set of ASVs once (a chain of single-child branches is one clade), held by at least
    ``min_prevalence`` of the samples of ``counts`` [n, U]. Columns in the incidence's order."""
    incidence = sparse.csc_matrix(incidence, dtype=np.float64)
    n_asvs = incidence.shape[0]
    sizes = np.diff(incidence.indptr)
    present = sparse.csr_matrix(counts, dtype=np.float64)
    present.data = (present.data > 0).astype(np.float64)
    prevalence = np.asarray(((present @ incidence) > 0).mean(axis=0)).ravel()  # [M] share of samples
    seen: set[bytes] = set()
    keep = []
    for column in np.flatnonzero((sizes >= 2) & (sizes < n_asvs) & (prevalence >= min_prevalence)):
        members = incidence.indices[incidence.indptr[column]:incidence.indptr[column + 1]]
        key = np.sort(members).tobytes()
        if key not in seen:
            seen.add(key)
            keep.append(column)
    return sparse.csr_matrix(incidence[:, keep])
