"""Reads in ASVs a model never saw: fingerprints, per-sample shares, what checkpoints store and what
``aam predict`` reports."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from click.testing import CliRunner
from scipy import sparse

from aam.cli import cli
from aam.data.novelty import (
    asv_fingerprints,
    asv_fingerprints_per_row,
    training_fingerprints,
    unseen_read_share,
)
from aam.data.sequences import tokenize
from aam.data.synthetic import write_biom
from aam.outputs.checkpoint import load_checkpoint
from aam.workflows.inputs import load_amplicon_data


def test_fingerprints_follow_the_sequence_not_its_position():
    tokens = tokenize(["ACGT", "ACGTT", "ACGT", "GGGA"], 8).tokens
    prints = asv_fingerprints(tokens)
    assert len(prints) == 3 and all(a < b for a, b in zip(prints[:-1], prints[1:]))  # sorted, distinct
    assert np.array_equal(asv_fingerprints(tokens[::-1]), prints)
    assert not np.array_equal(asv_fingerprints(tokenize(["ACGA"], 8).tokens), asv_fingerprints(tokens[:1]))


def test_unseen_share_per_sample():
    tokens = tokenize(["AAAA", "CCCC", "GGGG"], 8).tokens
    counts = sparse.csr_matrix(np.array([[2, 2, 4], [5, 0, 0], [0, 0, 0], [0, 1, 3]], dtype=np.float32))
    known = training_fingerprints(counts, tokens, np.array([0, 1]))  # rows 0 and 1 hold all three ASVs
    np.testing.assert_allclose(unseen_read_share(counts, tokens, known), [0, 0, 0, 0])
    known = training_fingerprints(counts, tokens, np.array([1]))  # only AAAA
    np.testing.assert_allclose(unseen_read_share(counts, tokens, known), [0.75, 0.0, 0.0, 1.0])


def test_checkpoint_stores_the_training_asvs_and_predict_reports_unseen_reads(synthetic_dir, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, [str(a) for a in [
        "train", "--table", synthetic_dir["table"], "--metadata", synthetic_dir["metadata"], "--metadata-column",
        "target", "--embedding-dim", 16, "--attention-heads", 2, "--attention-layers", 1, "--token-limit", 24,
        "--max-bp", 150, "--epochs", 1, "--batch-size", 8, "--seed", 3, "--device", "cpu", "--output-dir", out,
        "--quiet"]])
    assert result.exit_code == 0, result.output
    data = load_amplicon_data(synthetic_dir["table"], max_bp=150)
    train_ids = (out / "train_samples.txt").read_text().split()
    checkpoint = load_checkpoint(out / "checkpoints" / "best_model.pt")
    expected = training_fingerprints(data.counts, data.tokens, data.rows_of(train_ids))
    np.testing.assert_array_equal(checkpoint["data"]["training_asvs"], expected)

    # a new table: the first sample's reads doubled into a never-seen ASV, the second's tripled (3/4 unseen)
    counts = data.counts.toarray()
    novel = np.zeros((counts.shape[0], 1), dtype=np.float32)
    novel[0, 0] = counts[0].sum()
    novel[1, 0] = 3 * counts[1].sum()
    sequences = [*data.asv_ids, "ACGT" * 30]
    table = tmp_path / "new.biom"
    write_biom(table, np.hstack([counts, novel]), sequences, data.sample_ids)
    known = set(expected.tolist())
    seen = np.array([int(f) in known for f in asv_fingerprints_per_row(data.tokens)], dtype=float)
    reference = (counts @ (1 - seen) + novel[:, 0]) / (counts.sum(1) + novel[:, 0])

    result = CliRunner().invoke(cli, ["predict", "--model", str(out / "checkpoints" / "best_model.pt"),
                                      "--table", str(table), "--output", str(tmp_path / "p.tsv"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(tmp_path / "p.tsv", sep="\t", dtype={"sample_id": str}).set_index("sample_id")
    np.testing.assert_allclose(frame.loc[data.sample_ids, "unseen_read_share"], reference, atol=1e-6)
    assert frame.loc[data.sample_ids[1], "unseen_read_share"] >= 0.75
    high = int((reference > 0.5).sum())
    assert f"{high} of 48 sample(s) have more than 50% of their reads in ASVs" in result.output


def test_old_checkpoints_without_the_list_predict_without_the_column(synthetic_dir, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, [str(a) for a in [
        "train", "--table", synthetic_dir["table"], "--metadata", synthetic_dir["metadata"], "--metadata-column",
        "label", "--classifier", "--model-type", "sequence-groups", "--sequence-groups", "2,4", "--max-bp", 150,
        "--output-dir", out, "--quiet"]])
    assert result.exit_code == 0, result.output
    path = out / "checkpoints" / "best_model.pt"
    checkpoint = load_checkpoint(path)
    assert len(checkpoint["data"]["training_asvs"]) == len(np.unique(load_amplicon_data(
        synthetic_dir["table"], max_bp=150).counts.indices))  # every sample trains this model
    del checkpoint["data"]["training_asvs"]
    torch.save(checkpoint, path)
    result = CliRunner().invoke(cli, ["predict", "--model", str(path), "--table", str(synthetic_dir["table"]),
                                      "--output", str(tmp_path / "p.tsv")])
    assert result.exit_code == 0, result.output
    assert "unseen_read_share" not in pd.read_csv(tmp_path / "p.tsv", sep="\t").columns
