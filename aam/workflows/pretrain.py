"""``aam pretrain``: self-supervised training of a SequenceEncoder (UniFrac distances + masked nucleotides)."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from aam.data.metadata import align_samples, read_metadata
from aam.data.split import write_split
from aam.errors import AamError
from aam.models import SequenceEncoder
from aam.models.summary import model_summary
from aam.training.calibration import calibrate_distance_head
from aam.training.checkpoint import Snapshot
from aam.training.data_config import DataConfig
from aam.training.distributed import check_identical
from aam.training.losses import MultiTaskLoss
from aam.training.plots import loss_curves, prediction_scatter
from aam.training.runtime import configure_logging
from aam.training.trainer import FitResult, Trainer
from aam.workflows.config_mapping import encoder_config_from_options, trainer_config_from_options
from aam.workflows.inputs import build_loaders, load_amplicon_data, load_distance_targets
from aam.workflows.resume import load_resume_weights, open_writer, resume_into
from aam.workflows.run_folder import write_run_config
from aam.workflows.samples import exclude_samples, sample_groups, split_samples
from aam.workflows.session import Session, adopt_batch_size, check_options, run_in_session

log = logging.getLogger("aam")


def run_pretrain(opts: dict[str, Any]) -> FitResult:
    """Pretrain a SequenceEncoder as described by the resolved ``aam pretrain`` options."""
    check_options(opts)
    if not opts.get("unifrac_matrix") and not opts.get("tree") and opts["penalty"] > 0:
        raise AamError("pretraining needs distance targets", source="--unifrac-matrix",
                       hint="give --unifrac-matrix FILE or --tree FILE.nwk (or --penalty 0 for nucleotides only)")
    return run_in_session(opts, _run)


def _run(opts: dict[str, Any], output_dir: Path, session: Session) -> FitResult:
    main, seed, device = session.is_main, session.seed, session.device
    configure_logging(output_dir / "training.log" if main else None, opts.get("verbose", True) and main)

    data = load_amplicon_data(opts["table"], sequences_path=opts.get("sequences"), max_bp=opts["max_bp"],
                              rarefy_depth=opts.get("rarefy_depth"), seed=seed)
    targets = load_distance_targets(data, unifrac_matrix=opts.get("unifrac_matrix"), tree=opts.get("tree"),
                                    metric=opts["unifrac_metric"])
    rows = targets.rows if targets is not None else np.arange(data.n_samples)
    ids = exclude_samples([data.sample_ids[r] for r in rows], opts)
    metadata = read_metadata(opts["metadata"]) if opts.get("metadata") else None
    if metadata is not None:
        ids = align_samples(ids, metadata, source=opts["metadata"])
    groups = sample_groups(metadata, ids, opts)
    train_ids, val_ids = split_samples(ids, opts, seed, groups=groups)
    check_identical((train_ids, val_ids), "the train/validation split")
    if main:
        write_split(output_dir, train_ids, val_ids, None if groups is None else dict(zip(ids, groups)))
    loaders = partial(
        build_loaders, data, data.rows_of(train_ids), data.rows_of(val_ids),
        token_limit=opts["token_limit"], asv_sampling=opts["asv_sampling"], seed=seed,
        num_workers=opts["num_workers"], distance_lookup=targets.lookup if targets is not None else None,
        pin_memory=device.type == "cuda", distributed=session.distributed)
    train_loader, val_loader = loaders(batch_size=opts["batch_size"])

    config = encoder_config_from_options(opts)
    model = SequenceEncoder(config)
    log.info("model:\n%s", model_summary(model))
    data_info = DataConfig(max_bp=opts["max_bp"], token_limit=opts["token_limit"], asv_sampling=opts["asv_sampling"],
                           unifrac_metric=opts["unifrac_metric"], seed=seed).to_dict()

    encoder_stem = output_dir / "pretrained_encoder"

    def save(name: str, snapshot: Snapshot) -> Path:  # on every rank
        path = snapshot.write(output_dir / "checkpoints" / f"{name}_model", kind="encoder",
                              model_config=config.to_dict(), data=data_info)
        if name == "best":
            snapshot.write(encoder_stem, kind="encoder", model_config=config.to_dict(), data=data_info,
                           with_training_state=False)
        return path

    loss_fn = MultiTaskLoss(target_penalty=0.0, penalty=opts["penalty"] if targets is not None else 0.0,
                            nuc_penalty=opts["nuc_penalty"], count_penalty=0.0)
    resumed = load_resume_weights(model, opts["resume_from"], "encoder") if opts.get("resume_from") else None
    if targets is not None and resumed is None:
        calibrate_distance_head(model.to(device), train_loader, device)  # before the Trainer copies rank 0's weights
    writer = open_writer(output_dir) if main else None
    trainer = Trainer(model, loss_fn, trainer_config_from_options(opts, best_metric="val_loss"), device=device,
                      save_checkpoint=save, writer=writer, distributed=session.distributed,
                      distance_lookup=targets.lookup if targets is not None else None,
                      data_parallel=session.data_parallel, sharded_checkpoint=bool(opts.get("fsdp_sharded_checkpoint")))
    if resumed is not None:
        resume_into(trainer, resumed, opts["resume_from"])
    opts, train_loader, val_loader = adopt_batch_size(opts, session, trainer, loaders, (train_loader, val_loader),
                                                      resumed=resumed is not None)
    if main:
        write_run_config(output_dir, "pretrain", {**opts, "seed": seed},
                         {"model_config": config.to_dict(), "n_train": len(train_ids), "n_val": len(val_ids)})
    try:
        result = trainer.fit(train_loader, val_loader)
    finally:
        if writer is not None:
            writer.close()
    if main:
        _write_plots(output_dir, result)
    log.info("pretraining finished: best %s %.4g at epoch %d; encoder at %s", "val_loss", result.best_metric,
             result.best_epoch + 1, encoder_stem if trainer.strategy.sharded_checkpoint else encoder_stem.with_suffix(".pt"))
    return result


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
