"""``aam predict``: apply a trained model to a new table."""

from __future__ import annotations

import click

from aam.cli import options as o


@click.command("predict", cls=o.SectionedCommand)
@o.apply([
    o.option("--model", "model_paths", type=click.Path(), required=True, multiple=True, section="Input",
             help="checkpoints/best_model.pt (or last_model.pt, or the best_model/ directory of a "
                  "--fsdp-sharded-checkpoint run) of an aam train run; the model is rebuilt from it alone. "
                  "Repeat to average an ensemble (e.g. one recipe trained with several --seed values)."),
    o.option("--table", type=click.Path(dir_okay=False), required=True, section="Input",
             help="BIOM table (or FeatureTable[Frequency] .qza) of the samples to predict (not rarefied)."),
    o.SEQUENCES,
    o.option("--metadata", type=click.Path(dir_okay=False), default=o.PREDICT.metadata, section="Input",
             help="Metadata TSV; needed when the model uses categorical columns."),
    o.option("--output", type=click.Path(dir_okay=False), required=True, section="Output",
             help="TSV: sample_id, prediction (original units; class label and prob_<class> for classifiers)."),
    o.option("--batch-size", type=int, default=o.PREDICT.batch_size, section="Performance", help="Samples per batch."),
    o.option("--asv-sampling", type=click.Choice(["abundance", "first", "random"]), default=o.PREDICT.asv_sampling,
             section="Input", help="ASV selection beyond the token limit (default abundance; random with "
                                   "--prediction-passes > 1)."),
    o.option("--prediction-passes", type=int, default=o.PREDICT.prediction_passes, section="Output",
             help="Average this many passes over random ASV subsets; adds prediction_std."),
    o.option("--q2-metadata", is_flag=True, default=o.PREDICT.q2_metadata, section="Output",
             help="Write --output as QIIME 2 metadata (a sample-id column and a #q2:types row), for qiime "
                  "metadata tabulate and other QIIME 2 tools."),
    o.option("--output-variance", is_flag=True, default=o.PREDICT.output_variance, section="Output",
             help="Add a prediction_std column (standard deviation over passes and ensemble members)."),
    o.option("--no-sequence-cache", is_flag=True, default=o.PREDICT.no_sequence_cache, section="Input",
             help="Accepted for compatibility; sequences are always tokenised once."),
    o.option("--forest", type=click.Path(dir_okay=False), default=o.PREDICT.forest, section="Input",
             help="A classical baseline fitted on the same training samples (aam rf-baseline --save-model, any "
                  "--baseline; or RUN/forest.joblib of aam train --forest-blend / --blend-baselines): its "
                  "prediction is averaged with the model's (adds aam_prediction and forest_prediction)."),
    o.option("--forest-weight", default=o.PREDICT.forest_weight, section="Input",
             help="Weight of --forest in the average (0-1), or auto: the weight chosen by the model's inner "
                  "cross-validation (or equal weights) when it was trained with --forest-blend or "
                  "--blend-baselines, else 0.5."),
    o.option("--group-column", default=o.PREDICT.group_column, section="Output",
             help="Metadata column marking samples of one person (or site, study): also write "
                  "<output>_by_group.tsv, each group's mean prediction (mean class probabilities for classifiers) "
                  "as one call on the group, with its sample count n."),
    o.ATTN_IMPLEMENTATION, o.DEVICE, o.SEED, o.VERBOSE,
])
def command(verbose: bool, **opts) -> None:
    """Predict a trained model's target for every sample of --table, in the target's original units."""
    from aam.training.runtime import configure_logging
    from aam.workflows.predict import run_predict
    from aam.workflows.run_config import PredictRun

    configure_logging(None, verbose)
    run_predict(PredictRun.from_options(opts, verbose=verbose))
