"""``aam unifrac``: a sample x sample distance matrix (UniFrac, Bray-Curtis, Jaccard) of a table, written in
the formats ``--unifrac-matrix`` reads back."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from aam.data.biom_table import load_table
from aam.data.distances import write_distance_matrix
from aam.errors import AamError
from aam.unifrac import UniFracEngine, get_metric
from aam.workflows.run_config import UnifracRun

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UnifracResult:
    """What ``run_unifrac`` computed: the metric's label, the matrix's size, the time it took and its file."""

    label: str
    n_samples: int
    n_asvs: int
    seconds: float
    output: str


def run_unifrac(run: UnifracRun) -> UnifracResult:
    """Compute ``run.metric`` between every pair of samples of ``run.table`` and write it to ``run.output``."""
    chosen = get_metric(run.metric)
    if chosen.needs_tree and run.tree is None:
        raise AamError(f"{chosen.label} needs a phylogenetic tree", source="--tree", hint="pass --tree FILE.nwk")
    start = time.perf_counter()
    table = load_table(run.table)
    asv_ids = [str(i) for i in table.ids(axis="observation")]
    sample_ids = [str(i) for i in table.ids(axis="sample")]
    counts = table.matrix_data.T.tocsr()  # [N samples, T ASVs]
    engine = UniFracEngine(run.tree if chosen.needs_tree else None, asv_ids,
                           source=Path(run.tree) if chosen.needs_tree else None)
    _warn_empty_samples(counts)
    distances = engine.pairwise(counts, chosen.name, block_size=run.block_size,
                                dtype="float32" if run.float32 else "float64", threads=run.threads or None,
                                progress=True)
    write_distance_matrix(run.output, sample_ids, distances)
    elapsed = time.perf_counter() - start
    log.info("%s: %d samples x %d ASVs in %.1f s", chosen.label, len(sample_ids), len(asv_ids), elapsed)
    return UnifracResult(chosen.label, len(sample_ids), len(asv_ids), elapsed, run.output)


def _warn_empty_samples(counts) -> None:
    empty = int((counts.getnnz(axis=1) == 0).sum())
    if empty:
        log.warning("%d samples have no counts; as in scikit-bio they are at distance 0 from each other",
                    empty)
