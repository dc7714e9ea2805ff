"""``aam unifrac``: a sample x sample distance matrix from a BIOM table (and a Newick tree for UniFrac)."""

from __future__ import annotations

import click

from aam.cli import options as o
from aam.workflows.run_config import UNIFRAC_METRICS


@click.command("unifrac", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--table", required=True, type=click.Path(dir_okay=False),
              help="BIOM table (1.0 JSON or 2.1 HDF5) or FeatureTable[Frequency] .qza, ASVs x samples.")
@click.option("--tree", type=click.Path(dir_okay=False), default=o.UNIFRAC.tree,
              help="Rooted Newick tree (or Phylogeny[Rooted] .qza) whose tips include every ASV id of the table "
                   "(needed for UniFrac).")
@click.option("--metric", type=click.Choice(UNIFRAC_METRICS), default=o.UNIFRAC.metric, show_default=True,
              help="Distance: UniFrac (unweighted, weighted-normalized, weighted-unnormalized; 'unifrac' = "
                   "unweighted, 'weighted' = weighted-normalized; unifrac-binaries' names are accepted too), "
                   "Bray-Curtis or Jaccard. Unitless, in [0, 1] "
                   "except weighted-unnormalized (tree branch-length units).")
@click.option("--output", required=True, type=click.Path(dir_okay=False),
              help="Output file, format by extension: .h5 (unifrac-binaries layout), .tsv (scikit-bio "
                   "DistanceMatrix text), .csv, or .npy (ids written to <stem>.ids.txt beside it).")
@click.option("--threads", type=click.IntRange(min=0), default=o.UNIFRAC.threads, show_default=True,
              help="CPU threads for the matrix products (0 = torch's default, all cores).")
@click.option("--block-size", type=click.IntRange(min=1), default=o.UNIFRAC.block_size, show_default=True,
              help="Samples per block: memory for temporaries is about block-size x samples x 8 bytes.")
@click.option("--float32", is_flag=True, default=o.UNIFRAC.float32,
              help="Compute and write in float32 (half the memory, ~1e-6 relative error); default float64.")
@click.option("--seed", type=int, default=o.UNIFRAC.seed, show_default=True,
              help="Accepted like every aam command; the computation is deterministic.")
def command(**opts) -> None:
    """Compute a sample x sample distance matrix (UniFrac, Bray-Curtis, Jaccard) and write it to --output.

    Exact to rounding against scikit-bio's beta_diversity; the result is read back by --unifrac-matrix.
    """
    from aam.workflows.run_config import UnifracRun
    from aam.workflows.unifrac import run_unifrac

    done = run_unifrac(UnifracRun.from_options(opts))
    click.echo(f"{done.label}: {done.n_samples} samples x {done.n_asvs} ASVs in {done.seconds:.1f} s "
               f"-> {done.output}", err=True)
