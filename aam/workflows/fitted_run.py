"""What every model family's training starts from (``FitInputs``), and the run folder of a family fitted in
one go on every usable sample (no epochs: its own inner cross-validation gives the out-of-fold predictions that
stand for validation): the targets it fits (``every_sample_targets``) and the folder ``aam predict``,
``aam inspect`` and ``aam cross-validate`` read (``write_fitted_run``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from aam.data.novelty import training_fingerprints
from aam.fileio import write_tsv
from aam.objectives.scoring import score_predictions
from aam.outputs.checkpoint import save_checkpoint
from aam.outputs.data_config import DataConfig
from aam.outputs.prediction import PredictionDecoder
from aam.training.trainer import FitResult
from aam.workflows.run_config import TrainRun
from aam.workflows.run_folder import write_run_config, write_training_report
from aam.workflows.samples import exclude_samples, sample_groups
from aam.workflows.targets import TargetSetup, fit_targets, ids_with_target, row_arrays

log = logging.getLogger("aam")

ALL_ASVS = 2**31 - 1  # the model reads a sample's whole composition: prediction keeps every ASV


@dataclass
class FitInputs:
    """A checked ``aam train`` run, its folder and session, the table (``AmpliconData``), the metadata, the
    target column, the table's samples found in the metadata, and a pretrained encoder's checkpoint if given."""

    run: TrainRun
    output_dir: Path
    session: Any  # aam.workflows.session.Session
    data: Any  # aam.data.dataset.AmpliconData
    metadata: pd.DataFrame
    column: str
    ids: list[str]
    pretrained: dict[str, Any] | None = None


@dataclass
class FittedTargets:
    """The usable samples (``ids``, their table ``rows``), their groups, the fitted target set-up and the
    per-row arrays; ``decode`` turns model outputs into the prediction table of ``val_predictions.tsv``."""

    ids: list[str]
    rows: np.ndarray
    groups: np.ndarray | None
    setup: TargetSetup
    by_row: dict[str, Any]
    classifier: bool

    def decode(self, outputs: np.ndarray) -> pd.DataFrame:
        """[N] predictions in model units (regression) or [N, C] class probabilities -> sample_id, prediction,
        actual (original units or labels), and ``prob_<class>``."""
        decoder = PredictionDecoder(transform=self.setup.transform, groups=self.by_row["groups"],
                                    classifier=self.classifier, class_labels=self.setup.class_labels or (),
                                    quantiles=None, actual=self.by_row["actual"])
        logits = np.log(np.clip(outputs, 1e-12, None)) if self.classifier else np.reshape(outputs, (-1, 1))
        frame = decoder.decode(torch.from_numpy(np.asarray(logits, dtype=np.float64)), self.rows)
        frame = frame.drop(columns=[c for c in ("prediction_index",) if c in frame.columns])
        frame.insert(0, "sample_id", self.ids)
        frame.insert(2, "actual", self.setup.actual)
        return frame


def every_sample_targets(inputs: FitInputs) -> FittedTargets:
    """Every sample with a usable target (less ``--exclude-samples``) trains: its groups, targets (the transform
    fitted on all of them) and per-row arrays."""
    run, metadata, column = inputs.run, inputs.metadata, inputs.column
    ids = exclude_samples(ids_with_target(metadata, column, inputs.ids, run), run.split)
    groups = sample_groups(metadata, ids, run.split, target=column, inputs=())
    setup = fit_targets(run, metadata, column, ids, ids)
    rows = inputs.data.rows_of(ids)
    by_row = row_arrays(inputs.data.n_samples, rows, setup, None, metadata, ids)
    return FittedTargets(ids, rows, groups, setup, by_row, run.classifier)


def run_record(run: TrainRun, seed: int, n_train: int, n_val: int, groups: np.ndarray | None) -> dict[str, Any]:
    """What a checkpoint keeps about the run that made it (``aam inspect``): the resolved options and the split."""
    return {"command": "train", "options": run.options(), "seed": seed,
            "n_train": n_train, "n_val": n_val, "group_column": run.group_column,
            "n_groups": None if groups is None else int(len(np.unique(groups)))}


def fitted_data_config(inputs: FitInputs, targets: FittedTargets) -> DataConfig:
    """The data side of the checkpoint of a model that reads each sample's whole composition."""
    setup = targets.setup
    return DataConfig(max_bp=inputs.run.max_bp, token_limit=ALL_ASVS, asv_sampling="abundance",
                      metadata_column=inputs.run.target_column, classifier=inputs.run.classifier,
                      class_labels=setup.class_labels or (),
                      target_transform=setup.transform.to_dict() if setup.transform is not None else None,
                      normalize_by=setup.normalize_by, seed=inputs.session.seed)


def write_fitted_run(inputs: FitInputs, targets: FittedTargets, *, family: str, model: torch.nn.Module,
                     model_config: dict[str, Any], predictions: pd.DataFrame | None, data_info: DataConfig,
                     chosen: dict[str, Any] | None = None) -> FitResult:
    """Write the run folder of a model fitted on every sample: ``val_predictions.tsv`` (its out-of-fold
    predictions; none when ``predictions`` is None: fitted without an inner score), ``checkpoints/best_model.pt``
    (recording ``family``), ``config.json`` and the report; return the result with the out-of-fold score (NaN
    when not scored)."""
    run, session, out = inputs.run, inputs.session, inputs.output_dir
    scores = {} if predictions is None else score_predictions(predictions, run.classifier)
    if session.is_main:
        if predictions is not None:
            write_tsv(out / "val_predictions.tsv", predictions)
        record = {**run_record(run, session.seed, len(targets.ids), 0, targets.groups),
                  **({"inner_scores": scores} if scores else {}), "chosen": chosen or {}}
        save_checkpoint(out / "checkpoints" / "best_model.pt", kind="predictor", family=family,
                        model_config=model_config, model=model,
                        data=data_info.replace(training_asvs=training_fingerprints(
                            inputs.data.counts, inputs.data.tokens, targets.rows), run=record).to_dict())
        write_run_config(out, "train", {**run.options(), "seed": session.seed},
                         {"model_config": model_config,
                          "data": {k: v for k, v in data_info.to_dict().items() if k not in ("training_asvs", "run")},
                          "n_train": len(targets.ids), "n_val": 0})
        log.info("saved %s%s", out / "checkpoints" / "best_model.pt",
                 "" if predictions is None else " (inner out-of-fold predictions in val_predictions.tsv)")
        if run.report:
            write_training_report(out, run, [], None)
    key = "auroc" if run.classifier else "mae"
    return FitResult(best_metric=float(scores.get(key, float("nan"))), best_epoch=0, history=[], best_eval=None)
