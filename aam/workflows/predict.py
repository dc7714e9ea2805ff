"""``aam predict``: rebuild a trained model from its checkpoint alone and predict new samples."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from aam.data.categorical import CategoricalEncoder, category_keys
from aam.data.dataset import BatchCollator, SampleDataset, make_loader
from aam.data.metadata import read_metadata, require_column
from aam.data.normalization import transform_from_dict
from aam.data.novelty import unseen_read_share
from aam.data.qiime2 import write_q2_metadata
from aam.errors import AamError
from aam.fileio import write_tsv
from aam.models import SequencePredictor
from aam.models.layers import attention_backend
from aam.objectives.scoring import group_means
from aam.outputs.data_config import DataConfig
from aam.outputs.prediction import PredictionDecoder
from aam.training.forward import forward_batch
from aam.training.runtime import configure_threads, resolve_device
from aam.workflows.inputs import load_amplicon_data
from aam.workflows.loading import load_predictor
from aam.workflows.run_config import PredictRun

log = logging.getLogger("aam")


def run_predict(run: PredictRun) -> pd.DataFrame:
    """Predict every usable sample of ``run.table`` (or those of ``run.sample_ids``); writes ``run.output`` (TSV)
    and returns the frame.

    Several ``model_paths`` (an ensemble, e.g. the same recipe trained with different seeds) are averaged
    (class probabilities for classifiers) and ``prediction_std`` is the spread over members and passes. A
    ``forest`` (``aam rf-baseline --save-model``) is averaged in with ``forest_weight`` ("auto": the weight the
    first model's inner cross-validation chose with ``--forest-blend``, else 0.5); ``aam_prediction`` and
    ``forest_prediction`` keep the two parts.
    """
    bundle = None
    forest_weight = run.forest_weight_value
    if run.forest is not None:
        from aam.baselines.store import load_forest

        bundle = load_forest(run.forest)
    paths = list(run.model_paths)
    torch_device = resolve_device(run.device)
    configure_threads(torch_device)
    prediction_passes = run.prediction_passes
    sampling = run.asv_sampling or ("random" if prediction_passes > 1 else "abundance")
    if prediction_passes > 1 and sampling != "random":
        log.warning("--prediction-passes > 1 only varies with --asv-sampling random; using one pass")
        prediction_passes = 1
    if len(paths) > 1:
        log.info("ensemble of %d models", len(paths))
    table, metadata, sample_ids = run.table, run.metadata, run.sample_ids
    tables: dict[int, Any] = {}  # the tokenised table per max_bp (members usually share one)
    frame = read_metadata(metadata) if metadata is not None else None
    if run.group_column:  # checked before any model runs, so a misspelt column writes nothing
        require_column(frame, run.group_column, source=metadata, flag="--group-column")
    passes: list[pd.DataFrame] = []
    first_info = DataConfig()
    for i, path in enumerate(paths):  # one member in memory at a time
        model, info = load_predictor(path, torch_device)
        if i == 0:
            first_info = info
        else:
            check_compatible(first_info, info, paths[0], path)
        max_bp = info.max_bp
        if max_bp not in tables:
            tables[max_bp] = load_amplicon_data(table, sequences_path=run.sequences, max_bp=max_bp)
        data = tables[max_bp]
        dataset, decoder = member_inputs(info, data, frame, metadata, sample_ids, sampling, run.seed)
        if dataset.skipped_ids and not passes:
            log.warning("skipped %d sample(s) with no usable ASV", len(dataset.skipped_ids))
        loader = make_loader(dataset, BatchCollator(data.tokens, data.sample_ids), run.batch_size, shuffle=False)
        with attention_backend(run.attn_implementation, torch_device):
            passes += [_one_pass(model, loader, decoder, dataset, epoch) for epoch in range(prediction_passes)]
        del model
    result = _combine_passes(_align(passes, paths), decoder, run.output_variance or len(passes) > 1)
    if first_info.training_asvs is not None:
        result["unseen_read_share"] = _unseen_shares(tables[first_info.max_bp], first_info,
                                                     result["sample_id"])
    if bundle is not None:
        if forest_weight is None:
            recorded = first_info.forest_weight
            forest_weight = 0.5 if recorded is None else float(recorded)
            log.info("forest weight %.2f (%s)", forest_weight, "the default; the model records no --forest-blend"
                     if recorded is None else "chosen by the model's inner cross-validation")
        result = _with_forest(result, bundle, first_info, table, run.forest, forest_weight, decoder)
    if run.q2_metadata:
        write_q2_metadata(run.output, result)
    else:
        write_tsv(run.output, result)
    log.info("wrote %d predictions to %s", len(result), run.output)
    if run.group_column:
        _write_group_calls(run, result, frame, decoder.classifier)
    return result


def group_output_path(output: str | Path) -> Path:
    """``predictions.tsv`` -> ``predictions_by_group.tsv`` (beside it)."""
    path = Path(output)
    return path.with_name(f"{path.stem}_by_group{path.suffix or '.tsv'}")


def _write_group_calls(run: PredictRun, result: pd.DataFrame, metadata: pd.DataFrame, classifier: bool) -> None:
    """Each group's mean prediction (its samples' mean class probabilities for a classifier) as one call."""
    ids = result["sample_id"].astype(str)
    groups = metadata[run.group_column].reindex(ids.tolist()).to_numpy()
    missing = pd.isna(groups)
    if missing.any():
        log.warning("--group-column %s: %d sample(s) have no value in %s; each is called on its own",
                    run.group_column, int(missing.sum()), run.metadata)
        groups = np.where(missing, ids.to_numpy(), groups)
    calls = group_means(result.assign(group=groups), classifier)
    path = group_output_path(run.output)
    write_tsv(path, calls)
    log.info("wrote %d group calls (mean of each %s's predictions) to %s", len(calls), run.group_column, path)


def member_inputs(info: DataConfig, data, frame: pd.DataFrame | None, metadata: str | None,
                  sample_ids: Sequence[str] | None, sampling: str = "abundance",
                  seed: int | None = None) -> tuple[SampleDataset, PredictionDecoder]:
    """One checkpoint's view of the table (its token limit, categoricals and per-category scaling; only
    ``sample_ids`` when given) and the decoder of its answers into original units."""
    member_frame = frame if frame is not None else _no_metadata(info, data.sample_ids)
    categoricals = _categoricals(member_frame, info, data.sample_ids, metadata)
    groups = (category_keys(member_frame, data.sample_ids, list(info.normalize_by))
              if info.normalize_by else None)
    rows = None
    if sample_ids is not None:
        rows = data.rows_of([str(i) for i in sample_ids])
        categoricals = None if categoricals is None else categoricals[rows]
    dataset = SampleDataset(data, rows, None, categoricals, info.token_limit, sampling, seed)
    decoder = PredictionDecoder(
        transform=transform_from_dict(dict(info.target_transform)) if info.target_transform else None,
        groups=groups, classifier=info.classifier, class_labels=info.class_labels, quantiles=info.quantiles)
    return dataset, decoder


HIGH_UNSEEN_SHARE = 0.5  # a sample with more of its reads in unseen ASVs than this is flagged in the log


def _unseen_shares(data, info: DataConfig, sample_ids: pd.Series) -> np.ndarray:
    """Each predicted sample's share of reads in ASVs the (first) model never saw in training; logged, and a
    warning once when many samples are mostly unseen."""
    shares = unseen_read_share(data.counts, data.tokens, info.training_asvs)
    index = {s: i for i, s in enumerate(data.sample_ids)}
    values = shares[[index[s] for s in sample_ids]]
    high = int((values > HIGH_UNSEEN_SHARE).sum())
    log.info("reads in ASVs unseen in training: median %.1f%% per sample (max %.1f%%)",
             100 * float(np.median(values)), 100 * float(values.max()))
    if high:
        log.warning("%d of %d sample(s) have more than %.0f%% of their reads in ASVs the model never saw in "
                    "training (column unseen_read_share): their predictions extrapolate", high, len(values),
                    100 * HIGH_UNSEEN_SHARE)
    return values


def _with_forest(result: pd.DataFrame, bundle: dict[str, Any], info: DataConfig, table: str, path: str,
                 weight: float, decoder: PredictionDecoder) -> pd.DataFrame:
    """AAM's prediction averaged with the forest's: ``(1 - weight) * AAM + weight * forest`` (class
    probabilities for classifiers, then their argmax)."""
    from aam.baselines.store import predict_forest

    if bool(bundle["classifier"]) != info.classifier or (
            bundle["metadata_column"] != (info.metadata_column or bundle["metadata_column"])):
        raise AamError(f"the forest predicts {bundle['metadata_column']!r} "
                       f"({'classes' if bundle['classifier'] else 'a number'}), not the model's target",
                       source=path, hint="fit the forest on the same --metadata-column and task")
    trees = predict_forest(bundle, table, result["sample_id"].tolist())
    if not decoder.classifier:
        aam = result["prediction"].to_numpy(float)
        result["aam_prediction"], result["forest_prediction"] = aam, trees["prediction"].to_numpy(float)
        result["prediction"] = (1 - weight) * aam + weight * result["forest_prediction"]
        return result
    columns = decoder.probability_columns
    extra = [c for c in trees.columns if c.startswith("prob_") and c not in columns]
    if extra:
        raise AamError(f"the forest knows classes the model does not ({', '.join(extra)})", source=path)
    aam = result[columns].to_numpy(float)
    forest_probabilities = trees.reindex(columns=columns).fillna(0.0).to_numpy(float)
    blended = (1 - weight) * aam + weight * forest_probabilities  # [N, C]
    result[columns] = blended
    result["aam_prediction"] = result["prediction"]
    result["forest_prediction"] = trees["prediction"].astype(str).to_numpy()
    result["prediction"] = [decoder.class_labels[k] for k in blended.argmax(1)]
    return result


def check_compatible(first: DataConfig, info: DataConfig, first_path: str, path: str) -> None:
    """Ensemble members must answer the same question in the same units."""
    for key, what in (("classifier", "task (regression or classification)"), ("class_labels", "classes"),
                      ("quantiles", "quantile levels")):
        if (getattr(info, key) or None) != (getattr(first, key) or None):
            raise AamError(f"ensemble member differs in {what} from {first_path}", source=path,
                           hint="pass checkpoints trained on the same --metadata-column and task")


def _align(passes: list[pd.DataFrame], paths: list[str]) -> list[pd.DataFrame]:
    """Every pass in the first pass's sample order."""
    order = passes[0]["sample_id"]
    aligned = [passes[0]]
    for frame in passes[1:]:
        if not frame["sample_id"].equals(order):
            if set(frame["sample_id"]) != set(order):
                raise AamError("ensemble members kept different samples of the table", source=",".join(paths),
                               hint="use members trained with the same --max-bp")
            frame = frame.set_index("sample_id").loc[order].reset_index()
        aligned.append(frame)
    return aligned


def _no_metadata(info: DataConfig, sample_ids: list[str]) -> pd.DataFrame:
    """The empty metadata frame of a run without --metadata (an error if the model needs columns)."""
    columns = sorted(set(info.categorical_columns) | set(info.normalize_by or ()))
    if columns:
        raise AamError(f"this model uses metadata columns {', '.join(columns)}", source="--metadata",
                       hint="pass --metadata FILE.tsv with those columns")
    return pd.DataFrame(index=pd.Index(sample_ids, name="sample_id"))


def _categoricals(frame: pd.DataFrame, info: DataConfig, sample_ids: list[str],
                  source: str | None) -> np.ndarray | None:
    if not info.categorical_encoder:
        return None
    encoder = CategoricalEncoder.from_dict(dict(info.categorical_encoder))
    missing_columns = [c for c in encoder.columns if c not in frame.columns]
    if missing_columns:
        raise AamError(f"metadata lacks the model's categorical column(s) {', '.join(missing_columns)}",
                       source=source)
    absent = sum(1 for s in sample_ids if s not in frame.index)
    if absent:
        log.warning("%d sample(s) are not in the metadata; their categories are treated as unknown", absent)
    return encoder.transform(frame, sample_ids)


@torch.no_grad()
def _one_pass(model: SequencePredictor, loader, decoder: PredictionDecoder, dataset: SampleDataset,
              epoch: int) -> pd.DataFrame:
    dataset.set_epoch(epoch)
    device = next(model.parameters()).device
    frames = []
    for batch in loader:
        batch = batch.to(device)
        outputs = forward_batch(model, batch)
        frame = decoder.decode(outputs["prediction"].float(), batch.sample_index.cpu().numpy())
        frame.insert(0, "sample_id", batch.sample_ids)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _combine_passes(passes: list[pd.DataFrame], decoder: PredictionDecoder, with_std: bool) -> pd.DataFrame:
    first = passes[0].drop(columns=[c for c in ("prediction_index",) if c in passes[0].columns])
    if len(passes) == 1:
        if with_std and not decoder.classifier:
            first["prediction_std"] = 0.0
        return first
    if decoder.classifier:
        probs = np.mean([p[decoder.probability_columns].to_numpy() for p in passes], axis=0)
        first[decoder.probability_columns] = probs
        first["prediction"] = [decoder.class_labels[i] for i in probs.argmax(1)]
        return first
    values = np.stack([p["prediction"].to_numpy(float) for p in passes])  # [passes, N]
    first["prediction"] = values.mean(0)
    for column in (c for c in first.columns if c.startswith("quantile_")):
        first[column] = np.mean([p[column].to_numpy(float) for p in passes], axis=0)
    first["prediction_std"] = values.std(0, ddof=1)
    return first
