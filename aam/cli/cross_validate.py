"""``aam cross-validate``: cross-validate an ``aam train`` recipe next to classical baselines, on the same folds."""

from __future__ import annotations

import click

from aam.cli import options as o
from aam.cli.train import TRAIN_OPTIONS

CV_OPTIONS = [
    o.option("--n-folds", type=int, default=o.CV.n_folds, section="Cross-validation",
             help="Outer folds: stratified by class for classifiers, grouped with --group-column."),
    o.option("--leave-one-group-out", is_flag=True, default=o.CV.leave_one_group_out, section="Cross-validation",
             help="One outer fold per value of --group-column (e.g. leave one study out)."),
    o.option("--folds", type=click.Path(dir_okay=False), default=o.CV.folds, section="Cross-validation",
             help="TSV of sample ids and their outer fold (e.g. folds.tsv of another run) instead of making folds."),
    o.option("--fold-column", default=o.CV.fold_column, section="Cross-validation", help="The fold column of --folds."),
    o.option("--members", type=int, default=o.CV.members, section="Cross-validation",
             help="Models per fold, seeds --seed, --seed+1, ...; their average is the fold's prediction "
                  "(as aam predict --model A --model B)."),
    o.option("--variant", "variants", multiple=True, default=o.CV.variants, section="Cross-validation",
             help="Also train, per fold and seed, the recipe with these extra train flags (quoted, e.g. "
                  "'--kmer-size 6'), and average every model: an ensemble of recipes. Repeatable."),
    o.option("--pretrain-epochs", type=click.IntRange(1, None), default=o.CV.pretrain_epochs, section="Cross-validation",
             help="Per fold, first pretrain the encoder for this many epochs on the fold's training samples "
                  "(UniFrac targets from --tree or --unifrac-matrix, the recipe's model options), then "
                  "fine-tune from it (add --freeze-base to train only the head)."),
    o.option("--only-folds", default=o.CV.only_folds, section="Cross-validation",
             help="Comma list of fold names to run now (e.g. one per GPU or job into the same --output-dir); "
                  "the summary covers every finished fold."),
    o.option("--baselines", default=o.CV.baselines, section="Cross-validation",
             help="Classical baselines fitted on the same folds and compared (aam rf-baseline --baseline): a comma "
                  "list of forest, clr-linear, boosted, clr-linear-clades, boosted-clades (these two read the "
                  "clades of --tree), or none. The table names the best of them per run."),
    o.option("--forest/--no-forest", default=o.CV.forest, section="Cross-validation",
             help="--no-forest leaves the forest out of --baselines."),
    o.option("--rf-n-estimators", type=int, default=o.CV.rf_n_estimators, section="Cross-validation", help="Trees of the forest."),
    o.option("--rf-max-features", default=o.CV.rf_max_features, section="Cross-validation",
             help="Forest features per split: sqrt, log2, none, a fraction or a count."),
    o.option("--rf-n-jobs", type=int, default=o.CV.rf_n_jobs, section="Cross-validation", help="Jobs of the forest and of the CLR-linear inner search (-1: all cores)."),
]


@click.command("cross-validate", cls=o.SectionedCommand)
@o.CONFIG
@o.PRESET
@o.apply(o.data_options(pretrain=False) + o.MODEL_OPTIONS + TRAIN_OPTIONS + o.LOSS_WEIGHT_OPTIONS
         + o.TRAINING_OPTIONS + o.PERFORMANCE_OPTIONS + CV_OPTIONS + [o.SEED, o.VERBOSE])
def command(**opts) -> None:
    """Cross-validate an aam train recipe (every train flag applies to each fold) and classical baselines
    (random forest, CLR-linear, boosted trees) on the same outer folds: k-fold, grouped (--group-column), leave-one-group-out or a --folds file. Each fold
    trains on the other folds (early stopping on an inner split that honours --group-column) and predicts
    its held-out samples. Writes out-of-fold predictions, per-fold, pooled and per-group scores, a side-by-side
    table and a plot to --output-dir; rerunning the command resumes after an interruption."""
    from aam.workflows.cross_validate import run_cross_validate
    from aam.workflows.run_config import CrossValidateRun

    variants = tuple(_variant_options(flags, opts) for flags in opts["variants"])
    run_cross_validate(CrossValidateRun.from_options(opts, variants=variants))


def _variant_options(flags: str, opts: dict) -> dict:
    """The options a ``--variant`` changes: its flags parsed by this command over the run's own options."""
    import shlex

    from aam.errors import AamError

    base = {k: v for k, v in opts.items() if k != "variants"}
    try:
        args = shlex.split(flags)
        context = command.make_context("cross-validate", args, default_map=base, resilient_parsing=False)
    except (ValueError, click.ClickException) as err:
        message = err.format_message() if isinstance(err, click.ClickException) else str(err)
        raise AamError(f"cannot parse {flags!r}: {message}", source="--variant") from None
    changed = {k: v for k, v in context.params.items() if k in base and v != base[k]}
    if not changed:
        raise AamError(f"{flags!r} changes no option", source="--variant",
                       hint="give train flags that differ from the recipe, e.g. '--kmer-size 6'")
    return changed
