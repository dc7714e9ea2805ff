"""``aam embed``: sample embeddings equal the encoder's pooled vectors whatever the batch size, from a pretrained
encoder and from a trained model's base; .npy with ids; ASV embeddings; the ordination plot; errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from aam.cli import cli
from aam.data.dataset import BatchCollator, SampleDataset
from aam.workflows.embed import principal_coordinates
from aam.workflows.inputs import load_amplicon_data
from aam.workflows.loading import load_encoder

TINY = ["--embedding-dim", "16", "--attention-heads", "2", "--attention-layers", "1", "--token-limit", "24",
        "--max-bp", "150", "--batch-size", "8", "--seed", "3", "--device", "cpu", "--quiet"]


def run_ok(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def runs(synthetic_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("embed_runs")
    run_ok("pretrain", "--table", synthetic_dir["table"], "--tree", synthetic_dir["tree"], "--output-dir",
           root / "pre", "--epochs", 1, *TINY)
    run_ok("train", "--table", synthetic_dir["table"], "--metadata", synthetic_dir["metadata"], "--metadata-column",
           "target", "--output-dir", root / "train", "--epochs", 1, *TINY)
    return {"encoder": root / "pre" / "pretrained_encoder.pt", "model": root / "train" / "checkpoints" / "best_model.pt"}


def reference_embeddings(model_path: Path, table: str) -> pd.DataFrame:
    """The encoder's pooled vectors of all samples in one batch."""
    encoder, info = load_encoder(model_path, torch.device("cpu"))
    data = load_amplicon_data(table, max_bp=info.max_bp)
    dataset = SampleDataset(data, None, token_limit=info.token_limit)
    batch = BatchCollator(data.tokens, data.sample_ids)([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        vectors = encoder(batch.tokens, batch.asv_index, batch.asv_mask, batch.counts)["embeddings"].numpy()
    return pd.DataFrame(vectors, index=list(batch.sample_ids))


@pytest.mark.parametrize("which", ["encoder", "model"])
def test_sample_embeddings_equal_the_encoders_pooled_vectors_at_any_batch_size(runs, synthetic_dir, tmp_path, which):
    out = tmp_path / "samples.tsv"
    run_ok("embed", "--model", runs[which], "--table", synthetic_dir["table"], "--output", out, "--batch-size", 5,
           "--device", "cpu", "--quiet")
    frame = pd.read_csv(out, sep="\t", dtype={"sample_id": str}).set_index("sample_id")
    assert frame.shape == (48, 16) and list(frame.columns) == [f"dim_{i}" for i in range(16)]
    reference = reference_embeddings(runs[which], synthetic_dir["table"]).loc[frame.index]
    np.testing.assert_allclose(frame.to_numpy(), reference.to_numpy(), rtol=1e-4, atol=1e-5)


def test_npy_output_with_ids_and_asv_embeddings(runs, synthetic_dir, tmp_path):
    run_ok("embed", "--model", runs["model"], "--table", synthetic_dir["table"], "--output", tmp_path / "s.npy",
           "--asv-output", tmp_path / "asvs.tsv", "--device", "cpu", "--quiet")
    vectors = np.load(tmp_path / "s.npy")
    ids = (tmp_path / "s.npy.ids.txt").read_text().split()
    assert vectors.shape == (48, 16) and vectors.dtype == np.float32 and len(ids) == 48
    reference = reference_embeddings(runs["model"], synthetic_dir["table"]).loc[ids]
    np.testing.assert_allclose(vectors, reference.to_numpy(), rtol=1e-4, atol=1e-5)

    asvs = pd.read_csv(tmp_path / "asvs.tsv", sep="\t").set_index("feature_id")
    encoder, _ = load_encoder(runs["model"], torch.device("cpu"))
    data = load_amplicon_data(synthetic_dir["table"], max_bp=150)
    assert set(asvs.index) == {data.asv_ids[j] for j in np.unique(data.counts.indices)}
    rows = [data.asv_ids.index(a) for a in asvs.index]
    with torch.no_grad():
        expected = encoder.encode_asvs(torch.from_numpy(data.tokens[rows]).long()).numpy()
    np.testing.assert_allclose(asvs.to_numpy(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("column", ["target", "site"])  # a number and a category
def test_ordination_plot(runs, synthetic_dir, tmp_path, column):
    plot = tmp_path / "pcs.png"
    run_ok("embed", "--model", runs["encoder"], "--table", synthetic_dir["table"], "--output", tmp_path / "s.tsv",
           "--plot", plot, "--metadata", synthetic_dir["metadata"], "--color-by", column, "--device", "cpu",
           "--quiet")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_principal_coordinates_follow_the_largest_variance():
    rng = np.random.default_rng(0)
    points = np.column_stack([rng.normal(0, 10, 200), rng.normal(0, 1, 200), np.zeros(200)])
    coordinates, share = principal_coordinates(points)
    assert abs(np.corrcoef(coordinates[:, 0], points[:, 0])[0, 1]) > 0.99
    assert share[0] > 0.95 and share.sum() == pytest.approx(1.0)


def test_errors_name_the_flag_and_write_nothing(runs, synthetic_dir, tmp_path):
    groups = tmp_path / "groups"
    run_ok("train", "--table", synthetic_dir["table"], "--metadata", synthetic_dir["metadata"], "--metadata-column",
           "label", "--classifier", "--model-type", "sequence-groups", "--sequence-groups", "2,4", "--max-bp", 150,
           "--output-dir", groups, "--quiet")
    base = ["embed", "--table", synthetic_dir["table"], "--device", "cpu", "--quiet"]
    cases = [
        (["--model", groups / "checkpoints" / "best_model.pt", "--output", tmp_path / "a.tsv"], "no learned embeddings"),
        (["--model", runs["encoder"], "--output", tmp_path / "a.csv"], "--output"),
        (["--model", runs["encoder"], "--output", tmp_path / "a.tsv", "--color-by", "site"], "--color-by"),
        (["--model", runs["encoder"], "--output", tmp_path / "a.tsv", "--metadata", synthetic_dir["metadata"],
          "--color-by", "nope"], "nope"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(cli, [str(a) for a in base + args])
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "a.tsv").exists() and not (tmp_path / "a.csv").exists()
