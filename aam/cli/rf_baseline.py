"""``aam rf-baseline``: a classical baseline (the random forest by default) on the split written by ``aam train``."""

from __future__ import annotations

import click

from aam.baselines import BASELINES
from aam.cli import options as o


@click.command("rf-baseline", cls=o.SectionedCommand)
@o.apply([
    o.option("--table", type=click.Path(dir_okay=False), required=True, section="Input", help="BIOM table or FeatureTable[Frequency] .qza."),
    o.option("--metadata", type=click.Path(dir_okay=False), required=True, section="Input", help="Metadata TSV."),
    o.option("--metadata-column", required=True, section="Target", help="Column to predict."),
    o.option("--classifier", is_flag=True, default=o.RF_BASELINE.classifier, section="Target",
             help="Classify instead of regress."),
    o.option("--train-samples", type=click.Path(dir_okay=False), default=o.RF_BASELINE.train_samples, section="Input",
             help="train_samples.txt written by aam train (one id per line); without the two lists and --folds, "
                  "the forest splits the samples itself (--test-size, --group-column)."),
    o.option("--val-samples", type=click.Path(dir_okay=False), default=o.RF_BASELINE.val_samples, section="Input",
             help="val_samples.txt written by aam train."),
    o.option("--folds", type=click.Path(dir_okay=False), default=o.RF_BASELINE.folds, section="Input",
             help="Instead of the two lists: a TSV of sample ids and their fold; each fold is predicted by a "
                  "forest fitted on the others (cross-validation)."),
    o.option("--fold-column", default=o.RF_BASELINE.fold_column, section="Input", help="The fold column of --folds."),
    o.option("--group-column", default=o.RF_BASELINE.group_column, section="Input",
             help="Metadata column of groups (subject or study): a split made here keeps each group on one side; "
                  "with lists or --folds, groups on both sides are reported; per-group metrics go to "
                  "<stem>_groups.tsv."),
    o.option("--test-size", type=float, default=o.RF_BASELINE.test_size, section="Input",
             help="Without lists or --folds: the validation fraction of the split made here (written as "
                  "<stem>_train_samples.txt and <stem>_val_samples.txt)."),
    o.option("--output", type=click.Path(dir_okay=False), required=True, section="Output",
             help="TSV sample_id, prediction, actual (+ fold with --folds), a PNG scatter with the same stem, "
                  "and with --folds per-fold metrics in <stem>_metrics.tsv."),
    o.option("--save-model", type=click.Path(dir_okay=False), default=o.RF_BASELINE.save_model, section="Output",
             help="Write the fitted baseline (joblib) for aam predict --forest, e.g. fitted on an aam train run's "
                  "train_samples.txt to average with that model."),
    o.option("--baseline", type=o.RegistryChoice(BASELINES), default=o.RF_BASELINE.baseline, section="Model",
             help="The classical model: forest (random forest on relative abundances), clr-linear (L2 logistic or "
                  "ridge regression on CLR abundances, penalty chosen by inner CV grouped by --group-column), "
                  "boosted (histogram gradient-boosted trees; on regression they fit the absolute error since "
                  "session 21, better than the squared error on 11 of 12 real-data task-seeds, BENCHMARKS.md); "
                  "clr-linear-clades and boosted-clades: the same with the log shares of the clades of --tree "
                  "beside the ASVs (session 24)."),
    o.option("--tree", type=click.Path(dir_okay=False), default=o.RF_BASELINE.tree, section="Input",
             help="Newick tree (or Phylogeny[Rooted] .qza) of the table's ASVs, read by the -clades baselines."),
    o.option("--n-estimators", type=int, default=o.RF_BASELINE.n_estimators, section="Model", help="Trees (forest)."),
    o.option("--max-features", default=o.RF_BASELINE.max_features, section="Model",
             help="Features per split (forest): sqrt, log2, none, a fraction or a count."),
    o.option("--random-seed", type=int, default=o.RF_BASELINE.random_seed, section="Other",
             help="Seed of the baseline (and its inner CV)."),
    o.option("--n-jobs", type=int, default=o.RF_BASELINE.n_jobs, section="Performance",
             help="Parallel jobs of the forest and of the CLR-linear inner search (-1: all cores)."),
    o.VERBOSE,
])
def command(verbose: bool, **opts) -> None:
    """A classical baseline (random forest, CLR-linear or boosted trees), fitted on --train-samples and scored on
    --val-samples (or cross-validated over --folds) with the same metrics and output format as aam train."""
    from aam.training.runtime import configure_logging
    from aam.workflows.rf_baseline import run_rf_baseline
    from aam.workflows.run_config import RfBaselineRun

    configure_logging(None, verbose)
    run_rf_baseline(RfBaselineRun.from_options(opts, verbose=verbose))
