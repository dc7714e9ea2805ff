"""BIOM tables: reading (1.0 JSON, 2.1 HDF5), optional rarefaction, and samples x ASVs CSR counts."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import biom
import numpy as np
from scipy import sparse

from aam.data.qiime2 import artifact_payload, is_artifact
from aam.errors import AamError

log = logging.getLogger(__name__)


def load_table(path: str | Path) -> biom.Table:
    """Load a BIOM table, BIOM 1.0 (JSON) or 2.1 (HDF5), or a QIIME 2 FeatureTable[Frequency] ``.qza``,
    raising ``AamError`` on anything unreadable."""
    path = Path(path)
    if not path.is_file():
        raise AamError("file not found", source=path, hint="check the --table path")
    if is_artifact(path):
        with artifact_payload(path, "table") as payload:
            table = _read_biom(payload, source=path)
    else:
        table = _read_biom(path, source=path)
    if table.shape[0] == 0 or table.shape[1] == 0:
        raise AamError(f"the table is empty ({table.shape[0]} ASVs x {table.shape[1]} samples)", source=path)
    return table


def _read_biom(path: Path, source: Path) -> biom.Table:
    try:
        return biom.load_table(str(path))
    except Exception as err:  # biom raises many types for malformed input
        raise AamError(f"not a readable BIOM table ({type(err).__name__})", source=source,
                       hint="give a BIOM 1.0 (JSON) or 2.1 (HDF5) file") from None


@dataclass
class CountTable:
    """Counts as samples x ASVs CSR (float32, explicit zeros removed), with string sample and feature ids."""

    counts: sparse.csr_matrix  # [N_samples, N_asvs] float32
    sample_ids: list[str]
    feature_ids: list[str]


def table_to_csr(table: biom.Table) -> CountTable:
    """Transpose a BIOM table (ASVs x samples) to samples x ASVs, dropping ASVs never observed.

    Samples with no reads are kept (and counted in the log); the dataset layer skips them.
    """
    counts = sparse.csr_matrix(table.matrix_data.T, dtype=np.float32)  # [N_samples, N_asvs]
    counts.eliminate_zeros()
    if counts.nnz and counts.data.min() < 0:
        raise AamError("the table has negative counts", hint="give raw or rarefied read counts")
    feature_ids = [str(i) for i in table.ids(axis="observation")]
    observed = np.diff(counts.tocsc().indptr) > 0  # [N_asvs]
    if not observed.all():
        log.info("%d ASV(s) with no count in any sample are ignored", int((~observed).sum()))
        counts = counts[:, np.flatnonzero(observed)].tocsr()
        feature_ids = [f for f, keep in zip(feature_ids, observed) if keep]
    sample_ids = [str(i) for i in table.ids(axis="sample")]
    n_empty = int((np.diff(counts.indptr) == 0).sum())
    if n_empty:
        log.info("%d of %d sample(s) have no reads", n_empty, len(sample_ids))
    return CountTable(counts, sample_ids, feature_ids)


def rarefy(table: biom.Table, depth: int, seed: int | None = None) -> tuple[biom.Table, int]:
    """Subsample every sample to ``depth`` reads without replacement; shallower samples are dropped.

    Returns the rarefied table and the number of samples dropped.
    """
    if depth < 1:
        raise AamError(f"must be at least 1, got {depth}", source="--rarefy-depth")
    values = table.matrix_data.data
    if values.size and not np.array_equal(values, np.round(values)):
        raise AamError("rarefaction needs integer read counts, the table has fractional values",
                       source="--rarefy-depth", hint="leave --rarefy-depth out for relative abundances")
    depths = table.sum(axis="sample")  # [N_samples]
    n_dropped = int((depths < depth).sum())
    if n_dropped == len(depths):
        raise AamError(f"every sample has fewer than {depth} reads (the deepest has {int(depths.max())})",
                       source="--rarefy-depth", hint=f"use --rarefy-depth {int(depths.max())} or lower, or leave "
                                                     "it out to use counts as given")
    rarefied = table.subsample(int(depth), axis="sample", by_id=False, with_replacement=False,
                               seed=None if seed is None else int(seed) % (2**32))
    if n_dropped:
        log.info("rarefaction to %d reads dropped %d of %d samples below that depth", depth, n_dropped,
                 len(depths))
    return rarefied, n_dropped
