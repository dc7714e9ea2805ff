"""BIOM loading (JSON and HDF5), conversion to samples x ASVs CSR, and rarefaction."""

from __future__ import annotations

import logging

import biom
import h5py
import numpy as np
import pytest

from aam.data.biom_table import load_table, rarefy, table_to_csr
from aam.errors import AamError

COUNTS = np.array([[0, 3, 1, 0], [2, 0, 0, 0], [0, 0, 0, 0], [4, 1, 0, 0]], dtype=float)  # ASVs x samples
ASVS = ["ACGT", "GGCC", "TTTT", "CAGA"]
SAMPLES = ["007", "10317.000001", "s3", "s4"]


def write_json(path, table: biom.Table):
    path.write_text(table.to_json("test"))
    return path


def write_hdf5(path, table: biom.Table):
    with h5py.File(path, "w") as handle:
        table.to_hdf5(handle, "test")
    return path


@pytest.mark.parametrize("writer", [write_json, write_hdf5])
def test_json_and_hdf5_load_the_same_values(tmp_path, writer):
    path = writer(tmp_path / "t.biom", biom.Table(COUNTS, ASVS, SAMPLES))
    loaded = table_to_csr(load_table(path))
    assert loaded.sample_ids == SAMPLES  # numeric-looking ids stay strings
    assert all(isinstance(i, str) for i in loaded.sample_ids + loaded.feature_ids)
    assert loaded.feature_ids == ["ACGT", "GGCC", "CAGA"]  # TTTT is never observed
    assert loaded.counts.dtype == np.float32 and loaded.counts.format == "csr"
    np.testing.assert_array_equal(loaded.counts.toarray(), COUNTS[[0, 1, 3]].T)


def test_zero_read_samples_and_unobserved_asvs_are_reported(caplog):
    with caplog.at_level(logging.INFO, logger="aam.data.biom_table"):
        loaded = table_to_csr(biom.Table(COUNTS, ASVS, SAMPLES))
    assert loaded.counts.shape == (4, 3)
    assert "1 ASV(s) with no count" in caplog.text and "1 of 4 sample(s) have no reads" in caplog.text
    assert np.diff(loaded.counts.indptr).tolist() == [2, 2, 1, 0]


def test_negative_counts_are_an_error():
    with pytest.raises(AamError, match="negative"):
        table_to_csr(biom.Table(np.array([[1.0, -1.0]]), ["ACGT"], ["a", "b"]))


def test_unreadable_missing_and_empty_tables(tmp_path):
    bad = tmp_path / "bad.biom"
    bad.write_text("{not json")
    with pytest.raises(AamError, match=r"bad\.biom: not a readable BIOM table"):
        load_table(bad)
    with pytest.raises(AamError, match="not found"):
        load_table(tmp_path / "nope.biom")
    with pytest.raises(AamError, match="not found"):
        load_table(tmp_path)  # a folder is not a table
    empty = write_json(tmp_path / "empty.biom", biom.Table(np.zeros((0, 0)), [], []))
    with pytest.raises(AamError, match="empty"):
        load_table(empty)


def depth_table() -> biom.Table:
    data = np.array([[5, 50, 100, 30], [5, 50, 100, 30]], dtype=float)  # sample depths 10, 100, 200, 60
    return biom.Table(data, ["AAAA", "CCCC"], ["s1", "s2", "s3", "s4"])


def test_rarefaction_drops_shallow_samples_and_counts_them(caplog):
    with caplog.at_level(logging.INFO, logger="aam.data.biom_table"):
        rarefied, dropped = rarefy(depth_table(), 60, seed=1)
    assert dropped == 1 and list(rarefied.ids()) == ["s2", "s3", "s4"]
    np.testing.assert_array_equal(rarefied.sum(axis="sample"), [60, 60, 60])
    np.testing.assert_array_equal(rarefied.data("s4"), [30, 30])  # exactly at depth: unchanged
    assert "dropped 1 of 4 samples" in caplog.text


def test_rarefaction_is_seeded():
    first, _ = rarefy(depth_table(), 55, seed=3)
    second, _ = rarefy(depth_table(), 55, seed=3)
    np.testing.assert_array_equal(first.matrix_data.toarray(), second.matrix_data.toarray())


def test_rarefaction_errors():
    with pytest.raises(AamError, match=r"deepest has 200.*--rarefy-depth 200 or lower"):
        rarefy(depth_table(), 1000, seed=1)
    with pytest.raises(AamError, match="at least 1"):
        rarefy(depth_table(), 0, seed=1)
    fractional = biom.Table(np.array([[0.5, 0.25]]), ["ACGT"], ["a", "b"])
    with pytest.raises(AamError, match="integer read counts"):
        rarefy(fractional, 1, seed=1)
