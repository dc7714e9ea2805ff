"""``aam embed``: the sample vectors of a pretrained encoder or a trained model (the pooled vector its UniFrac
head reads, so distances between them approximate UniFrac after pretraining), optionally every ASV's vector,
and a 2-D ordination of the samples coloured by a metadata column."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from aam.data.dataset import BatchCollator, SampleDataset, make_loader
from aam.data.metadata import read_metadata, require_column
from aam.fileio import atomic_path, write_tsv
from aam.models import SequenceEncoder
from aam.models.layers import attention_backend
from aam.training.forward import forward_batch
from aam.training.runtime import configure_threads, resolve_device
from aam.workflows.inputs import load_amplicon_data
from aam.workflows.loading import load_encoder
from aam.workflows.run_config import EmbedRun

log = logging.getLogger("aam")

ASV_CHUNK = 256  # distinct ASVs encoded per forward pass


def run_embed(run: EmbedRun) -> pd.DataFrame:
    """Write the sample embeddings of every usable sample of ``run.table`` to ``run.output`` and return them."""
    frame = None
    if run.metadata is not None:
        frame = read_metadata(run.metadata)
        if run.color_by is not None:
            require_column(frame, run.color_by, source=run.metadata)
    torch_device = resolve_device(run.device)
    configure_threads(torch_device)
    encoder, info = load_encoder(run.model_path, torch_device)
    data = load_amplicon_data(run.table, sequences_path=run.sequences, max_bp=info.max_bp)
    dataset = SampleDataset(data, None, None, None, info.token_limit, "abundance", 0)
    if dataset.skipped_ids:
        log.warning("skipped %d sample(s) with no usable ASV", len(dataset.skipped_ids))
    loader = make_loader(dataset, BatchCollator(data.tokens, data.sample_ids), run.batch_size, shuffle=False)
    ids, vectors = [], []
    with torch.no_grad(), attention_backend(run.attn_implementation, torch_device):
        for batch in loader:
            batch = batch.to(torch_device)
            outputs = forward_batch(encoder, batch)
            vectors.append(outputs["embeddings"].float().cpu().numpy())
            ids += list(batch.sample_ids)
        embeddings = np.concatenate(vectors)
        _write_vectors(run.output, ids, embeddings, "sample_id")
        log.info("wrote %d sample embeddings (D=%d) to %s", len(ids), embeddings.shape[1], run.output)
        if run.asv_output is not None:
            _write_asv_embeddings(encoder, data, run.asv_output, torch_device)
    result = pd.DataFrame(embeddings, index=pd.Index(ids, name="sample_id"),
                          columns=[f"dim_{i}" for i in range(embeddings.shape[1])])
    if run.plot is not None:
        _ordination_plot(result, run.plot, frame, run.color_by)
    return result


def _write_vectors(path: str, ids: list[str], vectors: np.ndarray, id_column: str) -> None:
    """TSV (id column, dim_0..dim_{D-1}) or .npy [N, D] float32 with the ids, one per line, in PATH.ids.txt."""
    if Path(path).suffix.lower() == ".tsv":
        frame = pd.DataFrame(vectors, columns=[f"dim_{i}" for i in range(vectors.shape[1])])
        frame.insert(0, id_column, ids)
        write_tsv(path, frame)
        return
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, vectors.astype(np.float32))
    with atomic_path(f"{path}.ids.txt") as tmp:
        Path(tmp).write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")


def _write_asv_embeddings(encoder: SequenceEncoder, data, path: str, device: torch.device) -> None:
    """Every ASV held by at least one sample of the table, keyed by its feature id."""
    present = np.unique(data.counts.indices)
    vectors = []
    for start in range(0, len(present), ASV_CHUNK):
        tokens = torch.from_numpy(data.tokens[present[start:start + ASV_CHUNK]]).long().to(device)
        vectors.append(encoder.encode_asvs(tokens).float().cpu().numpy())
    embeddings = np.concatenate(vectors) if vectors else np.zeros((0, encoder.config.embedding_dim), np.float32)
    _write_vectors(path, [data.asv_ids[j] for j in present], embeddings, "feature_id")
    log.info("wrote %d ASV embeddings to %s", len(present), path)


def principal_coordinates(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N, D] -> the first two principal components [N, 2] and their shares of the variance [2]."""
    centred = embeddings - embeddings.mean(axis=0)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    variance = singular ** 2
    share = variance[:2] / max(variance.sum(), np.finfo(float).tiny)
    coordinates = centred @ components[:2].T
    if coordinates.shape[1] < 2:  # D == 1
        coordinates = np.pad(coordinates, ((0, 0), (0, 2 - coordinates.shape[1])))
        share = np.pad(share, (0, 2 - len(share)))
    return coordinates, share


def _ordination_plot(embeddings: pd.DataFrame, path: str, metadata: pd.DataFrame | None,
                     color_by: str | None) -> None:
    from aam.outputs.plots import plt, save_figure

    coordinates, share = principal_coordinates(embeddings.to_numpy(np.float64))
    figure, axis = plt.subplots(figsize=(6, 5), layout="constrained")
    values = None
    if color_by is not None and metadata is not None:
        values = metadata.reindex(embeddings.index)[color_by]
    if values is None:
        axis.scatter(coordinates[:, 0], coordinates[:, 1], s=12)
    elif pd.api.types.is_numeric_dtype(values):
        points = axis.scatter(coordinates[:, 0], coordinates[:, 1], c=values.to_numpy(float), s=12, cmap="viridis")
        figure.colorbar(points, ax=axis, label=color_by)
    else:
        labels = values.astype(str).where(values.notna(), "(missing)")
        for label in sorted(labels.unique()):
            keep = (labels == label).to_numpy()
            axis.scatter(coordinates[keep, 0], coordinates[keep, 1], s=12, label=label)
        axis.legend(title=color_by, fontsize="small", markerscale=1.5)
    axis.set_xlabel(f"PC1 ({share[0]:.0%})")
    axis.set_ylabel(f"PC2 ({share[1]:.0%})")
    axis.set_title("AAM sample embeddings")
    save_figure(figure, path, dpi=120, tight=False)
    log.info("wrote the ordination to %s", path)
