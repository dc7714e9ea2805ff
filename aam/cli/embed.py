"""``aam embed``: export sample (and ASV) embeddings of a pretrained encoder or a trained model."""

from __future__ import annotations

import click

from aam.cli import options as o


@click.command("embed", cls=o.SectionedCommand)
@o.apply([
    o.option("--model", "model_path", type=click.Path(), required=True, section="Input",
             help="pretrained_encoder.pt (or checkpoints/*.pt) of aam pretrain, or checkpoints/best_model.pt of a "
                  "transformer aam train run (its encoder is used)."),
    o.option("--table", type=click.Path(dir_okay=False), required=True, section="Input",
             help="BIOM table (or FeatureTable[Frequency] .qza) of the samples to embed."),
    o.SEQUENCES,
    o.option("--output", type=click.Path(dir_okay=False), required=True, section="Output",
             help="Sample embeddings: .tsv (sample_id, dim_0, ...) or .npy [N, D] float32 with the sample ids in "
                  "OUTPUT.ids.txt. The pooled vector the UniFrac head reads: after pretraining, Euclidean "
                  "distances between samples approximate their UniFrac distances."),
    o.option("--asv-output", type=click.Path(dir_okay=False), default=o.EMBED.asv_output, section="Output",
             help="Also every ASV's embedding (.tsv keyed by feature_id, or .npy with OUTPUT.ids.txt)."),
    o.option("--plot", type=click.Path(dir_okay=False), default=o.EMBED.plot, section="Output",
             help="A PNG of the samples' first two principal components."),
    o.option("--metadata", type=click.Path(dir_okay=False), default=o.EMBED.metadata, section="Output",
             help="Metadata TSV for --color-by."),
    o.option("--color-by", default=o.EMBED.color_by, section="Output",
             help="Metadata column colouring --plot (numbers on a colour scale, text as categories)."),
    o.option("--batch-size", type=int, default=o.EMBED.batch_size, section="Performance", help="Samples per batch."),
    o.ATTN_IMPLEMENTATION, o.DEVICE, o.VERBOSE,
])
def command(verbose: bool, **opts) -> None:
    """Write the sample embeddings of every sample of --table (and optionally ASV embeddings and an
    ordination plot)."""
    from aam.training.runtime import configure_logging
    from aam.workflows.embed import run_embed
    from aam.workflows.run_config import EmbedRun

    configure_logging(None, verbose)
    run_embed(EmbedRun.from_options(opts, verbose=verbose))
