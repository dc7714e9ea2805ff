"""``aam pretrain``: self-supervised training of a SequenceEncoder (UniFrac distances + masked nucleotides)."""

from __future__ import annotations

import logging
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np

from aam.data.dataset import AmpliconData
from aam.data.metadata import align_samples, read_metadata
from aam.data.split import write_split
from aam.data.table_union import TableSource, is_manifest, load_union, read_manifest
from aam.errors import AamError
from aam.models import SequenceEncoder
from aam.models.summary import model_summary
from aam.objectives.losses import MultiTaskLoss
from aam.outputs.checkpoint import Snapshot
from aam.outputs.data_config import DataConfig
from aam.outputs.plots import loss_curves, prediction_scatter
from aam.training.calibration import calibrate_distance_head
from aam.training.distributed import check_identical
from aam.training.runtime import configure_logging
from aam.training.trainer import FitResult, Trainer
from aam.workflows.config_mapping import encoder_config_from_options, trainer_config_from_options
from aam.workflows.inputs import (
    build_loaders,
    load_amplicon_data,
    load_distance_targets,
    step_validation_loader,
)
from aam.workflows.resume import load_resume_weights, open_writer, resume_into
from aam.workflows.run_config import PretrainRun
from aam.workflows.run_folder import write_run_config
from aam.workflows.samples import exclude_samples, sample_groups, split_samples
from aam.workflows.session import Session, adopt_batch_size, run_in_session

log = logging.getLogger("aam")


def run_pretrain(run: PretrainRun) -> FitResult:
    """Pretrain a SequenceEncoder as ``run`` (checked when it was built) describes."""
    return run_in_session(run, _run)


def _run(run: PretrainRun, output_dir: Path, session: Session) -> FitResult:
    main, seed, device = session.is_main, session.seed, session.device
    configure_logging(output_dir / "training.log" if main else None, run.verbose and main)

    data, held_out, draw_weights = _load_corpus(run, seed, session)
    targets = load_distance_targets(data, unifrac_matrix=run.unifrac_matrix, tree=run.tree,
                                    metric=run.unifrac_metric)
    rows = targets.rows if targets is not None else np.arange(data.n_samples)
    ids = exclude_samples([data.sample_ids[r] for r in rows], run.split)
    metadata = read_metadata(run.metadata) if run.metadata else None
    if metadata is not None:
        ids = align_samples(ids, metadata, source=run.metadata)
    if held_out is not None:  # --val-tables: whole tables validate
        groups = None
        train_ids, val_ids = [i for i in ids if i not in held_out], [i for i in ids if i in held_out]
        if not train_ids or not val_ids:
            raise AamError(f"{len(train_ids)} training and {len(val_ids)} validation samples remain",
                           source="--val-tables", hint="both the training and the validation tables need samples")
    else:
        groups = sample_groups(metadata, ids, run.split)
        train_ids, val_ids = split_samples(ids, run.split, seed, groups=groups)
    check_identical((train_ids, val_ids), "the train/validation split")
    if main:
        write_split(output_dir, train_ids, val_ids, None if groups is None else dict(zip(ids, groups)))
    loaders = partial(
        build_loaders, data, data.rows_of(train_ids), data.rows_of(val_ids),
        token_limit=run.token_limit, asv_sampling=run.asv_sampling, seed=seed,
        num_workers=run.num_workers, distance_lookup=targets.lookup if targets is not None else None,
        pin_memory=device.type == "cuda", distributed=session.distributed, n_size_groups=run.size_groups,
        train_draw_weights=None if draw_weights is None else draw_weights[data.rows_of(train_ids)],
        drop_last_train=True)  # full batches only: pairs in every batch, one shape less to compile
    train_loader, val_loader = loaders(batch_size=run.batch_size)

    config = encoder_config_from_options(run)
    model = SequenceEncoder(config)
    log.info("model:\n%s", model_summary(model))
    data_info = DataConfig(max_bp=run.max_bp, token_limit=run.token_limit, asv_sampling=run.asv_sampling,
                           unifrac_metric=run.unifrac_metric, seed=seed).to_dict()

    encoder_stem = output_dir / "pretrained_encoder"

    def save(name: str, snapshot: Snapshot) -> Path:  # on every rank
        path = snapshot.write(output_dir / "checkpoints" / f"{name}_model", kind="encoder",
                              model_config=config.to_dict(), data=data_info)
        if name == "best":
            snapshot.write(encoder_stem, kind="encoder", model_config=config.to_dict(), data=data_info,
                           with_training_state=False)
        return path

    loss_fn = MultiTaskLoss(target_penalty=0.0, penalty=run.penalty if targets is not None else 0.0,
                            nuc_penalty=run.nuc_penalty, count_penalty=0.0)
    resumed = load_resume_weights(model, run.resume_from, "encoder") if run.resume_from else None
    if targets is not None and resumed is None:
        calibrate_distance_head(model.to(device), train_loader, device)  # before the Trainer copies rank 0's weights
    writer = open_writer(output_dir) if main else None
    trainer = Trainer(model, loss_fn, trainer_config_from_options(run, best_metric="val_loss"), device=device,
                      save_checkpoint=save, writer=writer, distributed=session.distributed,
                      distance_lookup=targets.lookup if targets is not None else None,
                      data_parallel=session.data_parallel, sharded_checkpoint=run.fsdp_sharded_checkpoint)
    if resumed is not None:
        resume_into(trainer, resumed, run.resume_from)
    run, train_loader, val_loader = adopt_batch_size(run, session, trainer, loaders, (train_loader, val_loader),
                                                      resumed=resumed is not None)
    if main:
        write_run_config(output_dir, "pretrain", {**run.options(), "seed": seed},
                         {"model_config": config.to_dict(), "n_train": len(train_ids), "n_val": len(val_ids)})
    try:
        step_val = (step_validation_loader(val_loader, run.val_subsample, seed, session.distributed)
                    if run.val_every_steps else None)
        result = trainer.fit(train_loader, val_loader, step_val)
    finally:
        if writer is not None:
            writer.close()
    if main:
        _write_plots(output_dir, result)
    log.info("pretraining finished: best %s %.4g at epoch %d; encoder at %s", "val_loss", result.best_metric,
             result.best_epoch + 1, encoder_stem if trainer.strategy.sharded_checkpoint else encoder_stem.with_suffix(".pt"))
    return result


def _load_corpus(run: PretrainRun, seed: int, session: Session
                 ) -> tuple[AmpliconData, set[str] | None, np.ndarray | None]:
    """The data to pretrain on; the ids of the samples of ``--val-tables`` (None without them); each sample's
    draw weight (None for one table; equal weights draw as no weights). One ``--table`` alone is read exactly
    as before corpora."""
    sources = [TableSource(run.table, run.sequences)] if run.table else []
    if run.tables:
        sources += [s if s.sequences or not run.sequences else replace(s, sequences=run.sequences)
                    for s in read_manifest(run.tables, "--tables")]
    held_out = []
    if run.val_tables:
        held_out = (read_manifest(run.val_tables, "--val-tables") if is_manifest(run.val_tables)
                    else [TableSource(run.val_tables, run.sequences)])
    if run.on_disk:
        import torch.distributed as dist

        from aam.data.disk_union import build_disk_union

        build = partial(build_disk_union, sources + held_out, run.on_disk, max_bp=run.max_bp,
                        prefix_sample_ids=run.prefix_sample_ids)
        if session.distributed is not None and not session.is_main:
            dist.barrier()  # the first process writes the folder, the others then open it
        union = build()
        if session.distributed is not None and session.is_main:
            dist.barrier()
    elif len(sources) == 1 and not held_out and sources[0].weight == 1.0 and not run.prefix_sample_ids:
        data = load_amplicon_data(sources[0].table, sequences_path=sources[0].sequences, max_bp=run.max_bp,
                                  rarefy_depth=run.rarefy_depth, seed=seed)
        return data, None, None
    else:
        union = load_union(sources + held_out, max_bp=run.max_bp, rarefy_depth=run.rarefy_depth, seed=seed,
                           prefix_sample_ids=run.prefix_sample_ids)
    val_ids = set(union.sample_ids_of(len(sources), len(sources) + len(held_out))) if held_out else None
    return union.data, val_ids, union.sample_weights()


def _write_plots(output_dir: Path, result: FitResult) -> None:
    if result.history:
        keys = [k[4:] for k in result.history[-1] if k.startswith("val_") and k.endswith("loss")]
        loss_curves(result.history, output_dir / "plots" / "loss_curves.png", keys=keys)
    if result.best_eval is not None and result.best_eval.distance_pairs is not None:
        predicted, true = result.best_eval.distance_pairs
        m = result.best_eval.metrics
        prediction_scatter(true, predicted, output_dir / "plots" / "unifrac_predicted_vs_true.png",
                           title=f"distance MAE {m.get('val_distance_mae', float('nan')):.3f}  "
                                 f"R² {m.get('val_distance_r2', float('nan')):.3f}", unit="distance")
