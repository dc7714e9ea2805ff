"""``aam explain``: which ASVs a trained model relies on."""

from __future__ import annotations

import click

from aam.cli import options as o
from aam.workflows.run_config import ATTRIBUTION_METHODS


@click.command("explain", cls=o.SectionedCommand)
@o.apply([
    o.option("--model", "model_paths", type=click.Path(), multiple=True, required=True, section="Input",
             help="checkpoints/best_model.pt of aam train (transformer or sequence-groups). Repeat for an "
                  "ensemble: effects are averaged over members, as aam predict averages their answers."),
    o.option("--table", type=click.Path(dir_okay=False), required=True, section="Input",
             help="BIOM table (or FeatureTable[Frequency] .qza) of the samples to explain, e.g. the training "
                  "samples or a new cohort."),
    o.SEQUENCES,
    o.option("--metadata", type=click.Path(dir_okay=False), default=o.EXPLAIN.metadata, section="Input",
             help="Metadata TSV with the model's categorical columns (needed when it was trained with them)."),
    o.option("--samples", type=click.Path(dir_okay=False), default=o.EXPLAIN.samples, section="Input",
             help="File of sample ids (one per line) to explain instead of every sample of --table (a cohort's "
                  "subset: the cost grows with samples x ASVs read)."),
    o.option("--group-column", default=o.EXPLAIN.group_column, section="Input",
             help="Metadata column of groups (a subject or study id): adds n_groups per ASV and the share of the "
                  "attribution on ASVs found in one group only, with a warning when it is most of it (a model "
                  "that recognises people instead of learning what transfers). Needs --metadata."),
    o.option("--taxonomy", type=click.Path(dir_okay=False), default=o.EXPLAIN.taxonomy, section="Input",
             help="QIIME 2 taxonomy TSV (Feature ID, Taxon) or FeatureData[Taxonomy] .qza: adds a taxon column "
                  "and labels the plot."),
    o.option("--output-dir", type=click.Path(file_okay=False), required=True, section="Output",
             help="Folder for asv_importance.tsv, sample_top_asvs.tsv, deletion_check.tsv, summary.json, "
                  "plots/top_asvs.png (and categorical_effects.tsv, fusion.tsv for models with metadata)."),
    o.option("--method", type=click.Choice(ATTRIBUTION_METHODS), default=o.EXPLAIN.method, section="Attribution",
             help="occlusion: the answer with an ASV less the answer without it (exact, any model; one extra "
                  "pass of the sample layers per ASV). gradient: gradient x input at each ASV's vector (one "
                  "backward pass; transformer models; a first-order approximation that ranked the driving "
                  "clades worse in _design_plan/attribution.md)."),
    o.option("--top-asvs", type=int, default=o.EXPLAIN.top_asvs, section="Output",
             help="ASVs shown in the plot and the report."),
    o.option("--report/--no-report", default=o.EXPLAIN.report, section="Output",
             help="Write report.html: one page that opens offline with the top ASVs by taxon, their direction and "
                  "agreement across samples, and the deletion check."),
    o.option("--top-per-sample", type=int, default=o.EXPLAIN.top_per_sample, section="Output",
             help="ASVs listed per sample in sample_top_asvs.tsv."),
    o.option("--batch-size", type=int, default=o.EXPLAIN.batch_size, section="Performance", help="Samples per batch."),
    o.option("--seed", type=int, default=o.EXPLAIN.seed, section="Other",
             help="Seed of the deletion check's random ASVs."),
    o.ATTN_IMPLEMENTATION, o.DEVICE, o.VERBOSE,
])
def command(verbose: bool, **opts) -> None:
    """Attribute a model's answers to the ASVs of --table: per-ASV importance, direction (per class for
    classifiers), prevalence and stability; each sample's top ASVs; a deletion check (top-attributed vs random
    ASVs removed); categorical effects and fusion gates or attention; a plot of the top ASVs."""
    from aam.training.runtime import configure_logging
    from aam.workflows.explain import run_explain
    from aam.workflows.run_config import ExplainRun

    configure_logging(None, verbose)
    run_explain(ExplainRun.from_options(opts, verbose=verbose))
