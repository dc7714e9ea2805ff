"""``aam pretrain``: self-supervised pretraining of the SequenceEncoder."""

from __future__ import annotations

import click

from aam.cli import options as o


@click.command("pretrain", cls=o.SectionedCommand)
@o.CONFIG
@o.PRESET
@o.apply(o.data_options(pretrain=True) + [
    o.option("--metadata", type=click.Path(dir_okay=False), default=o.FIT.metadata, section="Input",
             help="Metadata TSV, needed only for --group-column; samples missing from it are left out."),
    o.option("--tables", type=click.Path(dir_okay=False), default=None, section="Input",
             help="A corpus: a TSV manifest with a header and one row per table: table (path, relative to the "
                  "manifest), then optional sequences (FASTA for hashed ids) and weight (how often its samples are "
                  "drawn, relative; default 1). The tables (and --table, if given) are joined by ASV sequence, "
                  "UniFrac comes per batch from one --tree over all of them."),
    o.option("--val-tables", type=click.Path(dir_okay=False), default=None, section="Input",
             help="Whole tables that validate (never train): one table, or a .tsv/.txt manifest as for --tables. "
                  "Replaces --test-size."),
    o.option("--prefix-sample-ids", is_flag=True, default=False, section="Input",
             help="Name every sample TABLE:ID (TABLE: its file's name without suffix, FOLDER/NAME where two "
                  "tables share a file name), so the same sample id may appear in two tables; without it a "
                  "repeated id is an error naming both tables."),
    o.option("--on-disk", type=click.Path(file_okay=False), default=None, section="Input",
             help="Join the tables in blocks of samples into arrays in this folder and memory-map them, for a "
                  "corpus larger than memory (BIOM 2.1 tables are read straight from disk); identical results. "
                  "A later run with the same tables reuses the folder."),
] + o.MODEL_OPTIONS + o.LOSS_WEIGHT_OPTIONS + [
    o.option("--count-penalty", type=float, default=o.FIT.count_penalty, section="Loss",
             help="Accepted for compatibility; the encoder has no count head."),
] + o.TRAINING_OPTIONS + o.PERFORMANCE_OPTIONS + o.DISTRIBUTED_OPTIONS + [o.SEED, o.VERBOSE])
def command(**opts) -> None:
    """Pretrain the sequence encoder: predict pairwise UniFrac distances between samples from their
    embeddings, and masked nucleotides of each ASV. Writes checkpoints/, pretrained_encoder.pt and plots to
    --output-dir."""
    from aam.workflows.pretrain import run_pretrain
    from aam.workflows.run_config import PretrainRun

    run_pretrain(PretrainRun.from_options(opts))
