"""``aam train``: read the table and the metadata, then train the model family of ``--model-type`` on a metadata
column (regression or classification); the transformer's training (``train_transformer``) lives here."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aam.data.categorical import CategoricalEncoder, CategoryWeights
from aam.data.dataset import asvs_in_groups
from aam.data.metadata import align_samples, read_metadata, require_column
from aam.data.novelty import training_fingerprints
from aam.data.split import write_split
from aam.errors import AamError
from aam.families import MODEL_FAMILIES
from aam.fileio import write_tsv
from aam.models import SequencePredictor
from aam.models.build import build_model
from aam.models.summary import model_summary
from aam.objectives.losses import MultiTaskLoss, build_target_loss
from aam.objectives.metrics import default_best_metric
from aam.outputs.checkpoint import Snapshot, load_checkpoint
from aam.outputs.data_config import DataConfig
from aam.outputs.plots import confusion_matrix_plot, loss_curves, prediction_scatter
from aam.outputs.prediction import PredictionDecoder
from aam.training.asv_cache import encode_all_asvs
from aam.training.diagnostics import Diagnostics
from aam.training.distributed import check_identical
from aam.training.runtime import configure_logging
from aam.training.trainer import EvalResult, FitResult, Trainer
from aam.workflows.config_mapping import predictor_config_from_options, trainer_config_from_options
from aam.workflows.fitted_run import FitInputs, run_record
from aam.workflows.inputs import (
    build_loaders,
    load_amplicon_data,
    load_distance_targets,
    step_validation_loader,
)
from aam.workflows.resume import load_resume_weights, load_weights, open_writer, resume_into
from aam.workflows.run_config import TrainRun, flag
from aam.workflows.run_folder import write_run_config, write_training_report
from aam.workflows.samples import exclude_samples, sample_groups, split_samples
from aam.workflows.session import Session, adopt_batch_size, run_in_session
from aam.workflows.targets import TargetSetup, fit_targets, ids_with_target, row_arrays

log = logging.getLogger("aam")


def run_train(run: TrainRun) -> FitResult:
    """Fine-tune a SequencePredictor as ``run`` (checked when it was built) describes."""
    return run_in_session(run, _run)


def _run(run: TrainRun, output_dir: Path, session: Session) -> FitResult:
    """Read the table and the metadata, then train the family ``--model-type`` names."""
    pretrained = None
    if run.pretrained_encoder:
        pretrained = load_checkpoint(run.pretrained_encoder, expected_kind=("encoder", "predictor"))
        run = adopt_pretrained_architecture(run, pretrained)
    configure_logging(output_dir / "training.log" if session.is_main else None, run.verbose and session.is_main)
    data = load_amplicon_data(run.table, sequences_path=run.sequences, max_bp=run.max_bp,
                              rarefy_depth=run.rarefy_depth, seed=session.seed)
    metadata = read_metadata(run.metadata)
    column = run.target_column
    require_column(metadata, column, source=run.metadata)
    ids = align_samples(data.sample_ids, metadata, source=run.metadata)
    inputs = FitInputs(run, output_dir, session, data, metadata, column, ids, pretrained)
    return MODEL_FAMILIES[run.model_type].fit(inputs)


def train_transformer(inputs: FitInputs) -> FitResult:
    """The attention model, trained by epochs on a train/validation split (grouped by ``--group-column``)."""
    run, output_dir, session, data = inputs.run, inputs.output_dir, inputs.session, inputs.data
    metadata, column, ids, pretrained = inputs.metadata, inputs.column, inputs.ids, inputs.pretrained
    main, seed, device = session.is_main, session.seed, session.device
    categorical_columns = _categorical_columns(run, metadata)
    targets = load_distance_targets(data, unifrac_matrix=run.unifrac_matrix, tree=run.tree,
                                    metric=run.unifrac_metric)
    if targets is not None:
        with_distance = {data.sample_ids[r] for r in targets.rows}
        ids = [s for s in ids if s in with_distance]
    ids = exclude_samples(ids_with_target(metadata, column, ids, run), run.split)
    stratify = metadata.loc[ids, column].astype(str).to_numpy() if run.classifier else None
    groups = sample_groups(metadata, ids, run.split, target=column, inputs=tuple(categorical_columns))
    train_ids, val_ids = split_samples(ids, run.split, seed, stratify=stratify, groups=groups)
    check_identical((train_ids, val_ids), "the train/validation split")
    if main:
        write_split(output_dir, train_ids, val_ids, None if groups is None else dict(zip(ids, groups)))

    setup = fit_targets(run, metadata, column, train_ids, ids)
    encoder = CategoricalEncoder().fit(metadata.loc[train_ids], categorical_columns) if categorical_columns else None
    rows = data.rows_of(ids)
    by_row = row_arrays(data.n_samples, rows, setup, encoder, metadata, ids)
    train_rows, val_rows = data.rows_of(train_ids), data.rows_of(val_ids)
    train_data = _shared_asvs_only(data, train_rows, train_ids, groups, ids, run)
    train_weights = _category_loss_weights(run, metadata, categorical_columns, train_ids)
    loaders = partial(
        build_loaders, data, train_rows, val_rows, token_limit=run.token_limit,
        asv_sampling=run.asv_sampling, seed=seed, num_workers=run.num_workers,
        distance_lookup=targets.lookup if targets is not None else None,
        train_targets=by_row["targets"][train_rows], val_targets=by_row["targets"][val_rows],
        train_categoricals=None if encoder is None else by_row["categoricals"][train_rows],
        val_categoricals=None if encoder is None else by_row["categoricals"][val_rows],
        train_weights=train_weights, pin_memory=device.type == "cuda", distributed=session.distributed,
        read_fraction=run.augment_reads, train_data=train_data, n_size_groups=run.size_groups)
    train_loader, val_loader = loaders(batch_size=run.batch_size)

    config = predictor_config_from_options(
        run, out_dim=len(setup.class_labels) if setup.class_labels else 1,
        cardinalities=tuple(encoder.cardinalities) if encoder else (),
        output_scaling_columns=tuple(categorical_columns.index(c) for c in _csv(run.conditional_output_scaling)))
    if not run.classifier:
        _check_output_constraint(config.output_constraint, setup.transform_name)
    model = build_model(config)
    if pretrained is not None:
        _load_pretrained_encoder(model, pretrained, run.pretrained_encoder)
    if run.freeze_base:
        model.freeze_base(True)
    log.info("model:\n%s", model_summary(model))

    data_info = DataConfig(
        max_bp=run.max_bp, token_limit=run.token_limit, asv_sampling=run.asv_sampling,
        metadata_column=column, classifier=run.classifier, class_labels=setup.class_labels or (),
        target_transform=setup.transform.to_dict() if setup.transform is not None else None,
        normalize_by=setup.normalize_by, categorical_columns=categorical_columns,
        categorical_encoder=encoder.to_dict() if encoder else None, quantiles=config.quantiles, seed=seed)
    best_metric = run.best_metric or default_best_metric(run.classifier)

    checkpoint_data = data_info.replace(
        training_asvs=training_fingerprints(data.counts, data.tokens, train_rows),
        run=run_record(run, seed, len(train_ids), len(val_ids), groups)).to_dict()

    def save(name: str, snapshot: Snapshot) -> Path:  # on every rank
        return snapshot.write(output_dir / "checkpoints" / f"{name}_model", kind="predictor",
                              model_config=config.to_dict(), data=checkpoint_data)

    def on_best(result: EvalResult, epoch: int) -> None:
        frame = result.predictions.drop(columns=[c for c in ("actual_index", "prediction_index")
                                                 if c in result.predictions.columns])
        frame["epoch"] = epoch + 1
        write_tsv(output_dir / "val_predictions.tsv", frame)

    decoder = PredictionDecoder(transform=setup.transform, groups=by_row["groups"], classifier=run.classifier,
                                class_labels=setup.class_labels or (), quantiles=config.quantiles,
                                actual=by_row["actual"])
    loss_fn = _build_loss(run, config, setup, targets is not None)
    writer = open_writer(output_dir) if main else None
    trainer_config = trainer_config_from_options(run, best_metric=best_metric)
    resumed = load_resume_weights(model, run.resume_from, "predictor") if run.resume_from else None
    if run.freeze_base:  # a frozen encoder's ASV embeddings are fixed: encode each ASV once, skip it in steps
        model.asv_cache = encode_all_asvs(model.to(device), data.tokens, device)
        log.info("cached embeddings of %d ASVs (frozen encoder)", len(model.asv_cache))
    trainer = Trainer(model, loss_fn, trainer_config, device=device, decoder=decoder,
                      save_checkpoint=save, on_best=on_best if main else None,
                      diagnostics=Diagnostics(writer, categorical_columns, trainer_config.epochs),
                      distributed=session.distributed,
                      distance_lookup=targets.lookup if targets is not None else None,
                      data_parallel=session.data_parallel, sharded_checkpoint=run.fsdp_sharded_checkpoint)
    if resumed is not None:
        resume_into(trainer, resumed, run.resume_from)
    run, train_loader, val_loader = adopt_batch_size(run, session, trainer, loaders, (train_loader, val_loader),
                                                      resumed=resumed is not None)
    if main:
        write_run_config(output_dir, "train", {**run.options(), "seed": seed, "best_metric": best_metric},
                         {"model_config": config.to_dict(), "data": _without_fingerprints(data_info), "n_train": len(train_ids),
                          "n_val": len(val_ids)})
    if run.find_lr:
        return _report_lr_range(trainer, train_loader, output_dir, main)
    try:
        step_val = (step_validation_loader(val_loader, run.val_subsample, seed, session.distributed)
                    if run.val_every_steps else None)
        result = trainer.fit(train_loader, val_loader, step_val)
    finally:
        if writer is not None:
            writer.close()
    if main:
        _write_plots(output_dir, result, run.classifier, setup.class_labels, column)
        if run.report and (output_dir / "val_predictions.tsv").is_file():
            write_training_report(output_dir, run, result.history, result.best_epoch + 1)
    _log_summary(result, best_metric, output_dir)
    return result


def _without_fingerprints(data_info: DataConfig) -> dict[str, Any]:
    """The data config for config.json: everything but the (long) training-ASV fingerprints and the run."""
    return {k: v for k, v in data_info.to_dict().items() if k not in ("training_asvs", "run")}


def _shared_asvs_only(data, train_rows: np.ndarray, train_ids: list[str], groups: np.ndarray | None,
                      ids: list[str], run: TrainRun):
    """``--min-asv-groups K``: the data whose training samples keep only ASVs carried by at least K training
    groups (None without the option)."""
    minimum = run.min_asv_groups
    if not minimum or minimum <= 1:
        return None
    if groups is None:
        raise AamError("needs --group-column (the groups whose ASVs count)", source="--min-asv-groups")
    group_of = dict(zip(ids, groups))
    keep = asvs_in_groups(data, train_rows, [group_of[s] for s in train_ids], minimum)
    in_training = np.asarray((data.counts[train_rows] > 0).sum(axis=0)).ravel() > 0
    log.info("--min-asv-groups %d: training reads only %d of the %d ASVs of the training samples (validation "
             "and prediction read every ASV)", minimum, int((keep & in_training).sum()), int(in_training.sum()))
    return data.keep_asvs(keep)


def _report_lr_range(trainer: Trainer, loader, output_dir: Path, main: bool) -> FitResult:
    """``--find-lr``: sweep the learning rate, write the curve and print the suggestion; no training."""
    sweep = trainer.find_lr(loader)
    if main:
        write_tsv(output_dir / "lr_range_test.tsv", pd.DataFrame({"lr": sweep.lrs, "smoothed_loss": sweep.losses}))
        suggestion = "none (the loss never fell)" if sweep.suggested_lr is None else f"{sweep.suggested_lr:.3g}"
        log.info("learning-rate range test over %d steps: suggested --lr %s (curve in %s)", len(sweep.lrs),
                 suggestion, output_dir / "lr_range_test.tsv")
    return FitResult(sweep.suggested_lr or float("nan"), -1, [], None)


# where an output constraint, applied to the model's (transformed) output, means what it says in original units
CONSTRAINT_TRANSFORMS = {"bounded": ("minmax", "log-minmax"),
                         "nonnegative": ("none", "minmax", "log-minmax"),
                         "nonnegative-learnable": ("none", "minmax", "log-minmax")}
CONSTRAINT_MEANING = {"zscore": ("the training mean", "the mean plus one standard deviation"),
                      "log-zscore": ("the mean log target", "one standard deviation above it"),
                      "zscore-category": ("each category's mean", "one standard deviation above it")}


def _check_output_constraint(constraint: str, transform: str) -> None:
    """Output constraints act on the transformed target: refuse the pairs where that silently means something
    else in original units (e.g. bounded with zscore: predictions between the mean and one SD above it)."""
    allowed = CONSTRAINT_TRANSFORMS.get(constraint)
    if allowed is None or transform in allowed:
        return
    low, high = CONSTRAINT_MEANING.get(transform, ("the transformed 0", "1"))
    meaning = f"between {low} and {high}" if constraint == "bounded" else f"at least {low}"
    raise AamError(f"output constraint {constraint!r} acts on the transformed target; with --target-transform "
                   f"{transform} it would keep predictions {meaning}", source="--output-constraint",
                   hint=f"add --target-transform {allowed[0]} (then {constraint} means "
                        f"{'within the training range' if constraint == 'bounded' else 'non-negative'}), or drop it")


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def _categorical_columns(run: TrainRun, metadata: pd.DataFrame) -> list[str]:
    columns = _csv(run.categorical_columns)
    for name in columns:
        require_column(metadata, name, source=run.metadata, flag="--categorical-columns")
    if run.target_column in columns:
        raise AamError("the target column cannot also be a categorical input", source="--categorical-columns")
    for name in _csv(run.conditional_output_scaling):
        if name not in columns:
            raise AamError(f"column {name!r} is not in --categorical-columns", source="--conditional-output-scaling")
    return columns


def _category_loss_weights(run: TrainRun, metadata: pd.DataFrame, categorical_columns: list[str],
                           train_ids: list[str]) -> np.ndarray | None:
    """Per-sample weights [N_train] from ``--categorical-loss-weights`` (fitted on the training split)."""
    if not run.categorical_loss_weights:
        return None
    column = (run.categorical_loss_weight_column or categorical_columns[0]).strip()
    if column not in categorical_columns:
        raise AamError(f"column {column!r} is not in --categorical-columns", source="--categorical-loss-weight-column")
    weights = CategoryWeights.from_option(run.categorical_loss_weights, metadata.loc[train_ids], column)
    return weights.sample_weights(metadata, train_ids)


def _build_loss(run: TrainRun, config, setup: TargetSetup, has_distances: bool) -> MultiTaskLoss:
    class_weights = None
    if run.class_weights:
        class_weights = [float(w) for w in _csv(run.class_weights)]
        if len(class_weights) != len(setup.class_labels):
            raise AamError(f"{len(class_weights)} weights for {len(setup.class_labels)} classes",
                           source="--class-weights")
    target_loss = build_target_loss(run.loss_type, classifier=run.classifier, quantiles=config.quantiles,
                                    over_penalty=run.over_penalty, under_penalty=run.under_penalty,
                                    class_weights=class_weights)
    nuc_penalty = 0.0 if run.freeze_base else run.nuc_penalty
    penalty = run.penalty if has_distances and not run.freeze_base else 0.0
    count_penalty = run.count_penalty if run.count_prediction else 0.0
    return MultiTaskLoss(target_penalty=run.target_penalty, penalty=penalty, nuc_penalty=nuc_penalty,
                         count_penalty=count_penalty, target_loss=target_loss)


# encoder fields that define the pretrained weights' shapes (option name = field name)
ARCHITECTURE_FIELDS = ("max_bp", "embedding_dim", "attention_heads", "attention_layers", "ffn_ratio", "kmer_size")
OPTIONAL_BASE_MODULES = ("sample_encoder.count_embedding.", "faith_head.")  # may be added when fine-tuning


def adopt_pretrained_architecture(run: TrainRun, checkpoint: dict[str, Any]) -> TrainRun:
    """Take the encoder's shape options from a pretrained checkpoint, saying so where the flags differ."""
    config = checkpoint["model_config"]
    encoder = config.get("encoder", config)
    adopted = {}
    for name in ARCHITECTURE_FIELDS:
        value = encoder.get(name)
        if value is not None and getattr(run, name) != value:
            log.warning("using the pretrained encoder's %s %s (not %s)", flag(name), value,
                        getattr(run, name))
            adopted[name] = value
    return run.replace(**adopted)


def _load_pretrained_encoder(model: SequencePredictor, checkpoint: dict[str, Any], path: str) -> None:
    """Load the base's weights; a count embedding new in fine-tuning starts fresh (logged)."""
    state = checkpoint["model_state"]
    if checkpoint["kind"] == "predictor":  # take the base of a fine-tuned model
        state = {k[len("base."):]: v for k, v in state.items() if k.startswith("base.")}
    expected = model.base.state_dict()
    fresh = [k for k in expected if k not in state and k.startswith(OPTIONAL_BASE_MODULES)]
    if fresh:
        log.info("modules new in fine-tuning start from their initial weights: %s",
                 ", ".join(sorted({k.rsplit(".", 1)[0] for k in fresh})))
        state = {**state, **{k: expected[k] for k in fresh}}
    faith_head = [k for k in state if k not in expected and k.startswith("faith_head.")]
    state = {k: v for k, v in state.items() if k not in faith_head}
    load_weights(model.base, state, path)
    log.info("loaded pretrained encoder from %s (%d tensors)", path, len(state))


def _write_plots(output_dir: Path, result: FitResult, classifier: bool, class_labels: list[str] | None,
                 column: str) -> None:
    plots = output_dir / "plots"
    if result.history:
        keys = ["loss"] + [k[4:] for k in result.history[-1]
                           if k.startswith("val_") and k.endswith("_loss")]
        loss_curves(result.history, plots / "loss_curves.png", keys=keys)
    best = result.best_eval
    if best is None or best.predictions is None:
        return
    m = best.metrics
    if classifier:
        if best.confusion is not None:
            confusion_matrix_plot(best.confusion, class_labels or [], plots / "confusion_matrix.png",
                                  title=f"accuracy {m.get('val_accuracy', float('nan')):.3f}")
    else:
        frame = best.predictions
        prediction_scatter(frame["actual"].to_numpy(float), frame["prediction"].to_numpy(float),
                           plots / "predictions.png", unit=column,
                           title=f"MAE {m.get('val_mae', float('nan')):.3g}  R² {m.get('val_r2', float('nan')):.3f}")
    if best.distance_pairs is not None:
        predicted, true = best.distance_pairs
        prediction_scatter(true, predicted, plots / "unifrac_predicted_vs_true.png", unit="distance")


def _log_summary(result: FitResult, best_metric: str, output_dir: Path) -> None:
    if result.best_eval is None and result.best_epoch >= 0:  # resumed after it had finished or stopped early
        log.info("training had already finished: best epoch %d (%s %.4g); %s is unchanged", result.best_epoch + 1,
                 best_metric, result.best_metric, output_dir / "checkpoints" / "best_model.pt")
        return
    if result.best_eval is None:
        log.warning("no epoch produced a finite %s; no best checkpoint was written", best_metric)
        return
    shown = {k: v for k, v in result.best_eval.metrics.items()
             if k in ("val_mae", "val_rmse", "val_r2", "val_accuracy", "val_f1", "val_auroc")}
    log.info("training finished: best epoch %d  %s", result.best_epoch + 1,
             "  ".join(f"{k[4:]}={v:.4g}" for k, v in shown.items()))
    log.info("outputs: %s (checkpoints/best_model.pt, val_predictions.tsv, plots/, tensorboard/)", output_dir)

