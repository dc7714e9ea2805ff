"""``aam unifrac``: a sample x sample distance matrix from a BIOM table (and a Newick tree for UniFrac)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import click

from aam.errors import AamError

log = logging.getLogger(__name__)

# aam.unifrac.metrics' METRICS and ALIASES (importing them here would load torch for --help; a test keeps them equal)
METRIC_CHOICES = ("unweighted", "weighted-normalized", "weighted-unnormalized", "braycurtis", "jaccard",
                  "unifrac", "weighted", "unweighted_unifrac", "weighted_normalized_unifrac", "weighted_unifrac")


@click.command("unifrac", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--table", "table_path", required=True, type=click.Path(dir_okay=False),
              help="BIOM table (1.0 JSON or 2.1 HDF5) or FeatureTable[Frequency] .qza, ASVs x samples.")
@click.option("--tree", "tree_path", type=click.Path(dir_okay=False),
              help="Rooted Newick tree (or Phylogeny[Rooted] .qza) whose tips include every ASV id of the table "
                   "(needed for UniFrac).")
@click.option("--metric", type=click.Choice(METRIC_CHOICES), default="unweighted", show_default=True,
              help="Distance: UniFrac (unweighted, weighted-normalized, weighted-unnormalized; 'unifrac' = "
                   "unweighted, 'weighted' = weighted-normalized; unifrac-binaries' names are accepted too), "
                   "Bray-Curtis or Jaccard. Unitless, in [0, 1] "
                   "except weighted-unnormalized (tree branch-length units).")
@click.option("--output", "output_path", required=True, type=click.Path(dir_okay=False),
              help="Output file, format by extension: .h5 (unifrac-binaries layout), .tsv (scikit-bio "
                   "DistanceMatrix text), .csv, or .npy (ids written to <stem>.ids.txt beside it).")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="CPU threads for the matrix products (0 = torch's default, all cores).")
@click.option("--block-size", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Samples per block: memory for temporaries is about block-size x samples x 8 bytes.")
@click.option("--float32", "use_float32", is_flag=True,
              help="Compute and write in float32 (half the memory, ~1e-6 relative error); default float64.")
@click.option("--seed", type=int, default=42, show_default=True,
              help="Accepted like every aam command; the computation is deterministic.")
def command(table_path: str, tree_path: str | None, metric: str, output_path: str, threads: int,
            block_size: int, use_float32: bool, seed: int) -> None:
    """Compute a sample x sample distance matrix (UniFrac, Bray-Curtis, Jaccard) and write it to --output.

    Exact to rounding against scikit-bio's beta_diversity; the result is read back by --unifrac-matrix.
    """
    from aam.data.biom_table import load_table
    from aam.data.distances import check_output_path, write_distance_matrix
    from aam.unifrac import UniFracEngine, get_metric

    check_output_path(output_path)
    chosen = get_metric(metric)
    if chosen.needs_tree and tree_path is None:
        raise AamError(f"{chosen.label} needs a phylogenetic tree", source="--tree", hint="pass --tree FILE.nwk")
    start = time.perf_counter()
    table = load_table(table_path)
    asv_ids = [str(i) for i in table.ids(axis="observation")]
    sample_ids = [str(i) for i in table.ids(axis="sample")]
    counts = table.matrix_data.T.tocsr()  # [N samples, T ASVs]
    engine = UniFracEngine(tree_path if chosen.needs_tree else None, asv_ids,
                           source=Path(tree_path) if chosen.needs_tree else None)
    _warn_empty_samples(counts)
    distances = engine.pairwise(counts, chosen.name, block_size=block_size,
                                dtype="float32" if use_float32 else "float64", threads=threads or None,
                                progress=True)
    write_distance_matrix(output_path, sample_ids, distances)
    elapsed = time.perf_counter() - start
    log.info("%s: %d samples x %d ASVs in %.1f s", chosen.label, len(sample_ids), len(asv_ids), elapsed)
    click.echo(f"{chosen.label}: {len(sample_ids)} samples x {len(asv_ids)} ASVs in {elapsed:.1f} s "
               f"-> {output_path}", err=True)


def _warn_empty_samples(counts) -> None:
    empty = int((counts.getnnz(axis=1) == 0).sum())
    if empty:
        log.warning("%d samples have no counts; as in scikit-bio they are at distance 0 from each other",
                    empty)
