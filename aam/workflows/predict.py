"""``aam predict``: rebuild a trained model from its checkpoint alone and predict new samples."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from aam.data.categorical import CategoricalEncoder, category_keys
from aam.data.dataset import BatchCollator, SampleDataset, make_loader
from aam.data.metadata import read_metadata
from aam.data.normalization import transform_from_dict
from aam.errors import AamError
from aam.fileio import write_tsv
from aam.models import PredictorConfig, SequencePredictor
from aam.training.checkpoint import load_checkpoint
from aam.training.prediction import PredictionDecoder
from aam.training.runtime import configure_threads, resolve_device
from aam.training.trainer import forward_batch
from aam.workflows.common import load_amplicon_data
from aam.workflows.session import load_weights

log = logging.getLogger("aam")


def load_predictor(path: str | Path, device: torch.device | str = "cpu") -> tuple[SequencePredictor, dict]:
    """The exact model of a ``predictor`` checkpoint (weights on ``device``, eval mode) and its data info."""
    checkpoint = load_checkpoint(path, map_location="cpu", expected_kind="predictor")
    try:
        config = PredictorConfig.from_dict(checkpoint["model_config"])
    except (TypeError, ValueError, KeyError) as err:
        raise AamError(f"checkpoint's model configuration is not understood ({err})", source=path,
                       hint="the checkpoint may come from an incompatible aam version") from None
    model = SequencePredictor(config)
    load_weights(model, checkpoint["model_state"], path)
    return model.to(device).eval(), checkpoint.get("data", {})


def run_predict(*, model_path: str, table: str, output: str, metadata: str | None = None,
                sequences: str | None = None, batch_size: int = 8, device: str = "auto",
                prediction_passes: int = 1, asv_sampling: str | None = None, seed: int | None = None,
                output_variance: bool = False) -> pd.DataFrame:
    """Predict every usable sample of ``table``; writes ``output`` (TSV) and returns the frame."""
    if batch_size < 1:
        raise AamError("must be at least 1", source="--batch-size")
    if prediction_passes < 1:
        raise AamError("must be at least 1", source="--prediction-passes")
    torch_device = resolve_device(device)
    configure_threads(torch_device)
    model, info = load_predictor(model_path, torch_device)
    sampling = asv_sampling or ("random" if prediction_passes > 1 else "abundance")
    if prediction_passes > 1 and sampling != "random":
        log.warning("--prediction-passes > 1 only varies with --asv-sampling random; using one pass")
        prediction_passes = 1
    data = load_amplicon_data(table, sequences_path=sequences, max_bp=info.get("max_bp", 150))
    frame = _metadata_frame(metadata, info, data.sample_ids)
    categoricals = _categoricals(frame, info, data.sample_ids, metadata)
    groups = category_keys(frame, data.sample_ids, info["normalize_by"]) if info.get("normalize_by") else None
    dataset = SampleDataset(data, None, None, categoricals, info.get("token_limit", 1024), sampling, seed)
    if dataset.skipped_ids:
        log.warning("skipped %d sample(s) with no usable ASV", len(dataset.skipped_ids))
    loader = make_loader(dataset, BatchCollator(data.tokens, data.sample_ids), batch_size, shuffle=False)
    decoder = PredictionDecoder(
        transform=transform_from_dict(info["target_transform"]) if info.get("target_transform") else None,
        groups=groups, classifier=bool(info.get("classifier")), class_labels=info.get("class_labels") or (),
        quantiles=info.get("quantiles"))
    passes = [_one_pass(model, loader, decoder, dataset, epoch) for epoch in range(prediction_passes)]
    result = _combine_passes(passes, decoder, output_variance or prediction_passes > 1)
    write_tsv(output, result)
    log.info("wrote %d predictions to %s", len(result), output)
    return result


def _metadata_frame(metadata: str | None, info: dict[str, Any], sample_ids: list[str]) -> pd.DataFrame:
    needs = bool(info.get("categorical_columns")) or bool(info.get("normalize_by"))
    if metadata is None:
        if needs:
            columns = sorted(set(info.get("categorical_columns") or []) | set(info.get("normalize_by") or []))
            raise AamError(f"this model uses metadata columns {', '.join(columns)}", source="--metadata",
                           hint="pass --metadata FILE.tsv with those columns")
        return pd.DataFrame(index=pd.Index(sample_ids, name="sample_id"))
    return read_metadata(metadata)


def _categoricals(frame: pd.DataFrame, info: dict[str, Any], sample_ids: list[str],
                  source: str | None) -> np.ndarray | None:
    if not info.get("categorical_encoder"):
        return None
    encoder = CategoricalEncoder.from_dict(info["categorical_encoder"])
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
    first["prediction_std"] = values.std(0, ddof=1)
    return first
