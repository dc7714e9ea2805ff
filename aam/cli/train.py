"""``aam train``: fine-tune a SequencePredictor on a metadata column."""

from __future__ import annotations

import click

from aam.baselines import BOOSTED_REGRESSION_LOSSES
from aam.cli import options as o
from aam.data.normalization import TARGET_TRANSFORMS
from aam.families import MODEL_FAMILIES
from aam.models.config import GMU_GATES, GROUP_READOUTS, MAX_GROUP_KMER, TARGET_POOLINGS
from aam.models.registries import FUSIONS, OUTPUT_CONSTRAINTS
from aam.objectives.metric_names import BEST_METRICS
from aam.objectives.registries import TARGET_LOSSES

BOOSTED_LOSS_CHOICES = tuple(loss.replace("_", "-") for loss in BOOSTED_REGRESSION_LOSSES)  # as typed

CATEGORICAL_GUIDE = """\
Choosing --categorical-fusion (categorical metadata such as site, season, host sex):

  concat           default. The category embedding is joined to every ASV embedding before the target
                   transformer. Cheap, robust; the same shift for every ASV.
  add              like concat but added (no extra projection). Smallest.
  cross-attention  each ASV position attends over one token per categorical column, so different ASVs can
                   weigh different columns (e.g. a taxon that responds to season but not to site).
                   Per-position weights are logged as a heatmap. Best when the metadata effect differs
                   between taxa.
  gmu              a learned gate mixes the pooled sequence vector with the metadata vector. Gate values are
                   logged; --gmu-gate open|closed fixes the gate to test whether gating itself helps.
  perceiver        learned latents read ASV and metadata tokens together; handles many or missing columns.

  --conditional-output-scaling cols: a per-category scale and bias on the output; use it when categories
  shift the target's scale (e.g. different assays). Avoid combining it with gmu or cross-attention on the
  same columns: both model the same effect and fight.

Never pass a column whose accuracy you will report as grouped by it (e.g. study): the model would learn the
group means instead of biology.
"""


def _print_guide(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(CATEGORICAL_GUIDE)
        ctx.exit(0)


TRAIN_OPTIONS = [
    o.option("--report/--no-report", default=o.TRAIN.report, section="Output",
             help="Write report.html in --output-dir: one page that opens offline with the run's figures "
                  "(cross-validate: curves, per-fold scores and per-group calls of AAM and every baseline; train: "
                  "learning curves, validation predictions and the model card)."),
    o.option("--metadata", type=click.Path(dir_okay=False), required=True, section="Input",
             help="Tab-separated metadata with a sample id column (sample_id, #SampleID, ...)."),
    o.option("--metadata-column", required=True, section="Target", help="Column to predict."),
    o.option("--classifier", is_flag=True, default=o.TRAIN.classifier, section="Target",
             help="Predict classes (labels may be strings); outputs class probabilities."),
    o.option("--out-dim", type=int, default=o.TRAIN.out_dim, section="Target",
             help="Output width: 1 for regression; the number of classes with --classifier (inferred)."),
    o.option("--class-weights", default=o.TRAIN.class_weights, section="Target", help="Per-class loss weights 'w1,w2,...' "
                                                                      "in sorted label order."),
    o.option("--target-transform", type=click.Choice(list(TARGET_TRANSFORMS)), default=o.TRAIN.target_transform,
             section="Target", help="Target scaling fitted on the training split (changed: default zscore, was "
                                    "minmax: min-max scaling on the training split squeezes targets outside its "
                                    "range and, with the legacy bounded outputs, clips them)."),
    o.option("--normalize-by", default=o.TRAIN.normalize_by, section="Target",
             help="Columns for zscore-category and log-zscore-category."),
    o.option("--normalize-targets/--no-normalize-targets", default=o.TRAIN.normalize_targets, section="Target",
             help="Deprecated: use --target-transform minmax|none."),
    o.option("--normalize-targets-by", default=o.TRAIN.normalize_targets_by, section="Target",
             help="Deprecated: use --target-transform zscore-category --normalize-by."),
    o.option("--log-transform-targets", is_flag=True, default=o.TRAIN.log_transform_targets, section="Target",
             help="Deprecated: use --target-transform log-minmax or log-zscore."),
    o.option("--output-constraint", type=o.RegistryChoice(OUTPUT_CONSTRAINTS),
             default=o.TRAIN.output_constraint, section="Target",
             help="Constrain regression outputs (default none). Applied to the transformed target: bounded needs "
                  "--target-transform minmax (the training range), nonnegative minmax or none; other pairs are "
                  "refused."),
    o.option("--bounded-targets", is_flag=True, default=o.TRAIN.bounded_targets, section="Target",
             help="Deprecated: use --output-constraint bounded."),
    o.option("--output-activation", type=click.Choice(["none", "relu", "softplus", "exp"]), default=o.TRAIN.output_activation,
             section="Target", help="Deprecated: use --output-constraint nonnegative."),
    o.option("--learnable-output-scale", is_flag=True, default=o.TRAIN.learnable_output_scale, section="Target",
             help="Deprecated: use --output-constraint nonnegative-learnable."),
    o.option("--model-type", type=o.RegistryChoice(MODEL_FAMILIES), default=o.TRAIN.model_type,
             section="Model",
             help="transformer: the attention model (every other Model option). sequence-groups: a linear model of "
                  "the centred log shares of ASV groups found by clustering each ASV's sequence profile (k-mers and, "
                  "by default, the nucleotide at each position) at several resolutions; its shrinkage is chosen by "
                  "inner cross-validation grouped by --group-column; no "
                  "gradient training, seconds on a CPU; an unseen ASV joins the group of the nearest sequence. "
                  "On the real-data suite (README) neither model beats the classical baselines alone; averaged "
                  "with them (aam cross-validate's blend column) sequence groups ranked first."),
    o.option("--sequence-groups", default=o.TRAIN.sequence_groups, section="Model",
             help="sequence-groups: groups per resolution, a comma list."),
    o.option("--group-clusterings", type=click.IntRange(1, 64), default=o.TRAIN.group_clusterings, section="Model",
             help="sequence-groups: k-means runs per resolution from different starts, used side by side."),
    o.option("--group-kmeans-starts", type=click.IntRange(1, 16), default=o.TRAIN.group_kmeans_starts, section="Model",
             help="sequence-groups: k-means++ initialisations tried per clustering (the one of least inertia is "
                  "kept); the k-means dominate the fit's time, which grows with this. Default 1 since session 15 "
                  "(4 before): the same mean rank on the real-data suite at seed 0 in a quarter of the k-means "
                  "time, the --group-clusterings runs already giving the starts' variety (BENCHMARKS.md)."),
    o.option("--group-readout", type=click.Choice(GROUP_READOUTS), default=o.TRAIN.group_readout, section="Model",
             help="sequence-groups: what reads the prediction off the group shares: linear (a shrunk linear "
                  "model, strength by inner cross-validation), boosted (gradient-boosted trees, scikit-learn's "
                  "HistGradientBoosting with the boosted baseline's settings) or forest (a random forest with the "
                  "forest baseline's settings; on the real-data suite it read the groups worse than the forest reads "
                  "single ASVs and added nothing to the recommended recipes, BENCHMARKS.md); for trees, inner "
                  "cross-validation gives their honest score, see --group-inner-score."),
    o.option("--group-kmer-size", type=click.IntRange(1, MAX_GROUP_KMER), default=o.TRAIN.group_kmer_size, section="Model",
             help="sequence-groups: k of the k-mer profile describing each ASV (4^k columns)."),
    o.option("--group-positions/--no-group-positions", default=o.TRAIN.group_positions, section="Model",
             help="sequence-groups: also describe each ASV by its nucleotide at each of its first --max-bp "
                  "positions (one-hot), beside the k-mer profile, the two scaled to equal weight, so the groups "
                  "follow substitutions as well as k-mer content. On by default: on the real-data suite (seed 0, "
                  "11 tasks) the recommended recipes ranked 1.14 against the baselines with it, 1.32 with the "
                  "k-mer profile alone (--no-group-positions; BENCHMARKS.md)."),
    o.option("--group-anchors", type=click.IntRange(0, 4096), default=o.TRAIN.group_anchors, section="Model",
             help="sequence-groups: up to N training ASVs carried by the most groups (--group-column values, else "
                  "samples; at least two) each head one more group, which every ASV joins when its profile is "
                  "nearest to theirs: a new variant of a widespread ASV counts towards it. 0: none (on the "
                  "real-data suite, seed 0, the recommended recipes ranked 1.68 against the baselines without "
                  "anchors, 1.14 with 512; BENCHMARKS.md)."),
    o.option("--group-centred/--no-group-centred", default=o.TRAIN.group_centred, section="Model",
             help="sequence-groups: centre each sample's log group shares over its groups (the centred log-ratio); "
                  "--no-group-centred gives the read-out the log shares as they are, which trees read as the "
                  "shares themselves, as the tree baselines read relative abundances."),
    o.option("--group-diversity/--no-group-diversity", default=o.TRAIN.group_diversity, section="Model",
             help="sequence-groups: two more features per sample beside the group shares: the Shannon entropy of "
                  "its ASV shares and the log of its count of ASVs (richness follows sequencing depth). On by "
                  "default since session 20 (before: off), by a rule fixed before its runs: on the real-data "
                  "suite the recommended recipes ranked 1.14 / 1.23 / 1.32 against the baselines at seeds 0-2 "
                  "with it, 1.14 / 1.23 / 1.50 without, ahead of the best on the same 9 / 8 / 7 tasks "
                  "(BENCHMARKS.md)."),
    o.option("--group-clades/--no-group-clades", default=o.TRAIN.group_clades, section="Model",
             help="sequence-groups: with --tree (a rooted tree of the table's ASVs, e.g. QIIME 2's), one more "
                  "feature per clade of the tree: the sample's log share of the clade (clades of two or more "
                  "training ASVs held by at least 5% of the training samples). A new ASV joins the clades of the "
                  "training ASV nearest to its sequence profile, so aam predict needs no tree. On the real-data "
                  "suite the classification blend with clades beat the best of the three baselines on 5 / 5 / 5 "
                  "of 7 tasks at seeds 0-2 (4-5 without), but baselines given the same clades (--baselines "
                  "clr-linear-clades,boosted-clades) are as strong: average with them (session 24, BENCHMARKS.md). "
                  "Roughly doubles the read-outs' fitting time."),
    o.option("--group-boosted-loss", type=click.Choice(BOOSTED_LOSS_CHOICES), default=o.TRAIN.group_boosted_loss,
             section="Model",
             help="sequence-groups, boosted read-out, regression: the trees' loss, squared-error (they predict "
                  "the conditional mean) or absolute-error (the median, what the mean absolute error rewards). "
                  "The recommended regression recipe (real-data suite, since session 22) is this read-out with "
                  "absolute-error averaged with the boosted baseline: --group-boosted-loss absolute-error "
                  "--blend-baselines boosted --blend-weights equal (ahead of the best baseline on 4 / 3 / 3 of the "
                  "4 regression tasks at seeds 0-2). The read-out's own default stays squared-error: with the "
                  "3 baselines averaged in it was not better at every seed (BENCHMARKS.md)."),
    o.option("--group-inner-score/--no-group-inner-score", default=o.TRAIN.group_inner_score, section="Model",
             help="sequence-groups, tree read-out (boosted, forest): score the trees by an inner "
                  "cross-validation (5 more fits; val_predictions.tsv and the inner score). --no-group-inner-score "
                  "fits them once, without a score; aam cross-validate's folds skip it when nothing reads it (the "
                  "outer folds score the model), which makes a tree read-out about 5 times cheaper there."),
    o.option("--forest-blend", is_flag=True, default=o.TRAIN.forest_blend, section="Model",
             help="sequence-groups: also fit a random forest on relative abundances and choose the weight of "
                  "their average by the same inner cross-validation (training samples only); saves RUN/forest.joblib "
                  "and the weight, which aam predict --forest RUN/forest.joblib then uses. On 24-person cohorts the "
                  "weight was noisy and scored below a fixed 0.5 (BENCHMARKS.md): there, pass --forest-weight 0.5."),
    o.option("--blend-baselines", default=o.TRAIN.blend_baselines, section="Model",
             help="sequence-groups: a comma list of classical baselines (forest, clr-linear, boosted; "
                  "clr-linear-clades and boosted-clades read the clades of --tree) fitted beside "
                  "the model on the same samples and averaged with it; their weights come from --blend-weights. "
                  "Saves RUN/forest.joblib (their weighted average) and the weights, which aam predict --forest "
                  "RUN/forest.joblib then uses. --forest-blend is --blend-baselines forest."),
    o.option("--blend-weights", type=click.Choice(["inner-cv", "equal"]), default=o.TRAIN.blend_weights,
             section="Model",
             help="How --blend-baselines weighs the model and each baseline: inner-cv (the weighting, on a grid of "
                  "0.1, that scores best on the inner cross-validation of the training samples) or equal."),
    o.option("--target-layer-norm/--no-target-layer-norm", default=o.TRAIN.target_layer_norm, section="Model",
             help="LayerNorm on the pooled target vector."),
    o.option("--target-pooling", type=click.Choice(TARGET_POOLINGS), default=o.TRAIN.target_pooling,
             section="Model",
             help="How the target branch pools ASVs: learned attention, the relative-abundance-weighted mean, "
                  "both mixed, the plain mean over the sample's ASVs, or composition: the centred log shares of "
                  "learned groups of related ASVs (a rare clade's rise weighs like a dominant one's)."),
    o.option("--regressor-hidden-dims", default=o.TRAIN.regressor_hidden_dims, section="Model", help="MLP head widths, e.g. '64,32'."),
    o.option("--regressor-dropout", type=float, default=o.TRAIN.regressor_dropout, section="Model", help="Dropout in the MLP head."),
    o.option("--residual-regression-head", is_flag=True, default=o.TRAIN.residual_regression_head, section="Model",
             help="Head = Linear(x) + MLP(x); needs --regressor-hidden-dims."),
    o.option("--pretrained-encoder", type=click.Path(), default=o.TRAIN.pretrained_encoder, section="Model",
             help="pretrained_encoder.pt from aam pretrain (a pretrained_encoder/ directory with "
                  "--fsdp-sharded-checkpoint)."),
    o.option("--freeze-base", is_flag=True, default=o.TRAIN.freeze_base, section="Model",
             help="Freeze the pretrained encoder (kept in eval mode; its losses are off)."),
    o.option("--count-prediction/--no-count-prediction", default=o.TRAIN.count_prediction, section="Model",
             help="Auxiliary head predicting each ASV's relative abundance."),
    o.option("--target-penalty", type=float, default=o.TRAIN.target_penalty, section="Loss", help="Weight of the target loss."),
    o.option("--count-penalty", type=float, default=o.TRAIN.count_penalty, section="Loss", help="Weight of the count loss."),
    o.option("--loss-type", type=o.RegistryChoice(TARGET_LOSSES), default=o.TRAIN.loss_type,
             section="Loss", help="Regression loss (classifiers use NLL)."),
    o.option("--loss-config", default=o.TRAIN.loss_config, section="Loss",
             help="The reference tool's per-output loss as JSON, e.g. '{\"0\": \"mae\"}': AAM regression predicts "
                  "one column, so one entry (0 or the --metadata-column name) sets --loss-type (mse, mae or huber)."),
    o.option("--quantiles", default=o.TRAIN.quantiles, section="Loss", help="Quantile levels for --loss-type quantile "
                                                               "(default 0.1,0.5,0.9)."),
    o.option("--over-penalty", type=float, default=o.TRAIN.over_penalty, section="Loss", help="asymmetric: weight of over-prediction."),
    o.option("--under-penalty", type=float, default=o.TRAIN.under_penalty, section="Loss",
             help="asymmetric: weight of under-prediction."),
    o.option("--categorical-loss-weights", default=o.TRAIN.categorical_loss_weights, section="Loss",
             help="'auto' (balanced) or a JSON object {value: weight} for --categorical-loss-weight-column."),
    o.option("--categorical-loss-weight-column", default=o.TRAIN.categorical_loss_weight_column, section="Loss",
             help="Column for --categorical-loss-weights (default: the first categorical column)."),
    o.option("--categorical-columns", default=o.TRAIN.categorical_columns, section="Categorical",
             help="Categorical metadata columns to condition on, 'a,b'."),
    o.option("--categorical-embed-dim", type=int, default=o.TRAIN.categorical_embed_dim, section="Categorical",
             help="Embedding width per categorical column."),
    o.option("--categorical-fusion", type=o.RegistryChoice(FUSIONS), default=o.TRAIN.categorical_fusion,
             section="Categorical", help="How metadata enters the model (see --categorical-help)."),
    o.option("--gmu-gate", type=click.Choice(GMU_GATES), default=o.TRAIN.gmu_gate,
             section="Categorical", help="gmu ablation: learned gate, or fixed open (sequence only) / closed."),
    o.option("--cross-attn-heads", type=click.IntRange(1, 64), default=o.TRAIN.cross_attn_heads, section="Categorical",
             help="Heads of cross-attention and perceiver fusion; must divide D."),
    o.option("--perceiver-num-latents", type=click.IntRange(1, 1024), default=o.TRAIN.perceiver_num_latents, section="Categorical",
             help="Perceiver latents."),
    o.option("--perceiver-num-layers", type=click.IntRange(1, 16), default=o.TRAIN.perceiver_num_layers, section="Categorical",
             help="Perceiver self-attention layers."),
    o.option("--conditional-output-scaling", default=o.TRAIN.conditional_output_scaling, section="Categorical",
             help="Columns with a per-category output scale and bias."),
    o.option("--categorical-lr", type=float, default=o.TRAIN.categorical_lr, section="Categorical",
             help="Separate learning rate for the categorical modules."),
    o.option("--categorical-help", is_flag=True, expose_value=False, is_eager=True, callback=_print_guide,
             section="Categorical", help="Print a guide to choosing a fusion and exit."),
    o.option("--best-metric", type=click.Choice(BEST_METRICS), default=o.TRAIN.best_metric,
             section="Training", help="Checkpoint selection (changed: default mae for regression, f1 for "
                                      "classification, not the mixed loss)."),
    o.option("--augment-reads", type=click.FloatRange(0.0, 1.0, min_open=True), default=o.TRAIN.augment_reads, section="Training",
             help="Augmentation: each epoch, keep each training read with this probability (a new "
                  "rarefaction-like draw per epoch: rare ASVs drop out at random, abundances jitter); "
                  "validation and prediction read every ASV. Off by default."),
    o.option("--min-asv-groups", type=click.IntRange(1, None), default=o.TRAIN.min_asv_groups, section="Training",
             help="With --group-column: train only on the reads of ASVs found in at least this many training "
                  "groups (e.g. 2: no subject's private ASVs), so the model learns what recurs across subjects "
                  "instead of recognising them; validation and prediction read every ASV. Off by default."),
    o.option("--val-prediction-passes", type=click.IntRange(1, 100), default=o.TRAIN.val_prediction_passes, section="Training",
             help="Accepted for compatibility with 1 only (an error above): validation reads each sample's most "
                  "abundant ASVs once; aam predict --prediction-passes averages random draws."),
    o.option("--find-lr", is_flag=True, default=o.TRAIN.find_lr, section="Training",
             help="Run a learning-rate range test, print the suggestion and exit."),
]


@click.command("train", cls=o.SectionedCommand)
@o.CONFIG
@o.PRESET
@o.apply(o.data_options(pretrain=False) + o.MODEL_OPTIONS + TRAIN_OPTIONS + o.LOSS_WEIGHT_OPTIONS
         + o.TRAINING_OPTIONS + o.PERFORMANCE_OPTIONS + o.DISTRIBUTED_OPTIONS + [o.SEED, o.VERBOSE])
def command(**opts) -> None:
    """Fine-tune a SequencePredictor on --metadata-column (regression, or classes with --classifier),
    optionally from a pretrained encoder and conditioned on categorical metadata. Writes checkpoints,
    val_predictions.tsv (original units), plots and TensorBoard logs to --output-dir."""
    from aam.workflows.run_config import TrainRun
    from aam.workflows.train import run_train

    run_train(TrainRun.from_options(opts))
