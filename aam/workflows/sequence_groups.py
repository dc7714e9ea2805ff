"""``aam train --model-type sequence-groups``: fit the sequence-group composition model and write a run folder
that ``aam predict`` and ``aam cross-validate`` use like any other (checkpoints/best_model.pt, config.json,
val_predictions.tsv, training.log), plus ``sequence_groups.json`` (the inner cross-validation)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aam.data.novelty import training_fingerprints
from aam.errors import AamError
from aam.fileio import write_json, write_tsv
from aam.models.sequence_groups import SequenceGroupsConfig, sequence_group_model
from aam.training.checkpoint import save_checkpoint
from aam.training.data_config import DataConfig
from aam.training.prediction import PredictionDecoder
from aam.training.scoring import score_predictions
from aam.training.sequence_groups_fit import fit_sequence_groups, select_anchors
from aam.training.trainer import FitResult
from aam.workflows.forest_blend import fit_baseline_blend
from aam.workflows.run_config import TrainRun
from aam.workflows.run_folder import write_run_config, write_training_report

log = logging.getLogger("aam")

ALL_ASVS = 2**31 - 1  # the model reads a sample's whole composition: prediction keeps every ASV

def parse_group_counts(value: str | None) -> tuple[int, ...]:
    """'8,16,32,64' -> (8, 16, 32, 64); one line naming the flag when it is not a list of integers >= 2."""
    try:
        counts = tuple(int(part) for part in (value or "").split(",") if part.strip())
    except ValueError:
        counts = ()
    if not counts or min(counts) < 2:
        raise AamError(f"expected a comma list of group counts of at least 2, e.g. 8,16,32,64; got {value!r}",
                       source="--sequence-groups")
    return counts


def _fitting_group_counts(counts: tuple[int, ...], table) -> tuple[int, ...]:
    """The default resolutions less those with more groups than the training samples have distinct ASVs (a
    small table), with a warning; given counts are kept as they are (the fit names the flag if one is too
    large)."""
    if counts != SequenceGroupsConfig.group_counts:
        return counts
    distinct = len(np.unique(table.indices))
    fitting = tuple(c for c in counts if c <= distinct)
    if fitting and fitting != counts:
        log.warning("the training samples hold %d distinct ASVs: using %s groups per resolution instead of %s "
                    "(--sequence-groups)", distinct, ",".join(map(str, fitting)), ",".join(map(str, counts)))
        return fitting
    return counts


def train_sequence_groups(run: TrainRun, output_dir: Path, main: bool, data, ids: list[str],
                          groups: np.ndarray | None, setup, by_row: dict[str, Any], seed: int,
                          record: dict[str, Any]) -> FitResult:
    """Fit on every sample of ``ids`` (the inner cross-validation chooses the shrinkage) and write the run."""
    classifier = run.classifier
    rows = data.rows_of(ids)
    counts = _fitting_group_counts(parse_group_counts(run.sequence_groups), data.counts[rows])
    anchors = select_anchors(data.counts[rows], groups, run.group_anchors)
    config = SequenceGroupsConfig(group_counts=counts,
                                  clusterings=run.group_clusterings,
                                  kmer_size=run.group_kmer_size,
                                  positions=run.max_bp if run.group_positions else 0,
                                  anchors=len(anchors), classifier=classifier, readout=run.group_readout,
                                  out_dim=len(setup.class_labels) if classifier else 1)
    model = sequence_group_model(config)
    log.info("sequence groups: %d samples%s, resolutions %s, %d anchor ASVs, %d-mer profiles%s", len(ids),
             "" if groups is None else f" of {len(np.unique(groups))} groups",
             ",".join(map(str, config.group_counts)), config.anchors, config.kmer_size,
             f" and {config.positions} positions" if config.positions else "")
    fit = fit_sequence_groups(model, data.counts[rows], data.tokens, setup.model_targets, groups, seed, anchors,
                              kmeans_starts=run.group_kmeans_starts)

    decoder = PredictionDecoder(transform=setup.transform, groups=by_row["groups"], classifier=classifier,
                                class_labels=setup.class_labels or (), quantiles=None, actual=by_row["actual"])
    oof = fit.out_of_fold
    logits = (np.log(np.clip(oof, 1e-12, None)) if classifier else oof.reshape(-1, 1))
    frame = decoder.decode(torch.from_numpy(logits), rows)
    frame = frame.drop(columns=[c for c in ("prediction_index",) if c in frame.columns])
    frame.insert(0, "sample_id", ids)
    frame.insert(2, "actual", setup.actual)
    scores = score_predictions(frame, classifier)
    log.info("inner out-of-fold scores (%s, %d ASVs in %s groups): %s", fit.inner_scheme, fit.n_asvs,
             "+".join(map(str, config.group_counts)), "  ".join(f"{k}={v:.4g}" for k, v in scores.items()))

    data_info = DataConfig(
        max_bp=run.max_bp, token_limit=ALL_ASVS, asv_sampling="abundance",
        metadata_column=run.target_column, classifier=classifier,
        class_labels=setup.class_labels or (),
        target_transform=setup.transform.to_dict() if setup.transform is not None else None,
        normalize_by=setup.normalize_by, seed=seed)
    report = {"model_type": config.model_type, "parameter": fit.parameter, "chosen": fit.chosen,
              "scoring": fit.scoring, "inner_scheme": fit.inner_scheme, "grid": fit.grid, "n_samples": len(ids),
              "n_asvs": fit.n_asvs, "group_sizes": {str(k): v for k, v in fit.group_sizes.items()},
              "out_of_fold_scores": scores}
    if run.blend_names:
        choice = fit_baseline_blend(data.counts[rows], data.asv_ids, ids, setup.actual, fit.splits, frame,
                                    classifier, run.target_column, seed, output_dir if main else None,
                                    names=run.blend_names, mode=run.blend_weights, groups=groups)
        report["forest_blend"] = choice.to_dict()
        data_info = data_info.replace(forest_weight=choice.weight)
    if main:
        write_tsv(output_dir / "val_predictions.tsv", frame)
        write_json(output_dir / "sequence_groups.json", report)
        save_checkpoint(output_dir / "checkpoints" / "best_model.pt", kind="predictor",
                        model_config=config.to_dict(), model=model,
                        data=data_info.replace(
                            training_asvs=training_fingerprints(data.counts, data.tokens, rows),
                            run={**record, "inner_scores": scores, "chosen": {fit.parameter: fit.chosen}}).to_dict())
        write_run_config(output_dir, "train", {**run.options(), "seed": seed},
                         {"model_config": config.to_dict(),
                          "data": {k: v for k, v in data_info.to_dict().items() if k not in ("training_asvs", "run")},
                          "n_train": len(ids), "n_val": 0})
    log.info("saved %s (inner out-of-fold predictions in val_predictions.tsv)",
             output_dir / "checkpoints" / "best_model.pt")
    if main and run.report:
        write_training_report(output_dir, run, [], None)
    key = "auroc" if classifier else "mae"
    return FitResult(best_metric=float(scores[key]), best_epoch=0, history=[], best_eval=None)
