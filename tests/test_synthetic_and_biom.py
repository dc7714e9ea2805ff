"""Synthetic data generator, BIOM loading (JSON and HDF5) and rarefaction."""

from __future__ import annotations

import biom
import numpy as np
import pytest
from skbio import TreeNode

from aam.data.biom_table import load_table, rarefy, table_to_csr
from aam.data.metadata import read_metadata
from aam.data.sequences import read_fasta, resolve_sequences
from aam.data.synthetic import make_synthetic_dataset, write_synthetic_dataset
from aam.errors import AamError


def hamming(a: str, b: str) -> float:
    n = min(len(a), len(b))
    return float(np.mean([x != y for x, y in zip(a[:n], b[:n])]))


def test_synthetic_is_deterministic_and_shaped():
    first, second = make_synthetic_dataset(40, 20, seed=3), make_synthetic_dataset(40, 20, seed=3)
    assert first.newick == second.newick and first.sequences == second.sequences
    np.testing.assert_array_equal(first.counts, second.counts)
    assert first.counts.shape == (40, 20) and len(set(first.sequences)) == 20
    assert all(100 <= len(s) <= 150 for s in first.sequences)
    assert set(first.metadata.columns) == {"sample_id", "target", "site", "label"}
    assert make_synthetic_dataset(40, 20, seed=4).sequences != first.sequences


def test_related_asvs_look_alike():
    data = make_synthetic_dataset(20, 40, seed=1)
    tree = TreeNode.read([data.newick])
    sister_distances, all_distances = [], []
    for node in tree.non_tips():
        tips = [c for c in node.children if c.is_tip()]
        if len(tips) == 2:
            sister_distances.append(hamming(tips[0].name, tips[1].name))
    rng = np.random.default_rng(0)
    for _ in range(200):
        i, j = rng.choice(40, 2, replace=False)
        all_distances.append(hamming(data.sequences[i], data.sequences[j]))
    assert sister_distances and np.mean(sister_distances) < 0.7 * np.mean(all_distances)


def test_site_effect_differs_by_clade():
    data = make_synthetic_dataset(400, 30, seed=2)
    meta = data.metadata
    relative = data.counts / data.counts.sum(1, keepdims=True)
    clade1 = relative[:, data.clades == 1].sum(1)
    residual = meta["target"].to_numpy() - 20 - 40 * relative[:, data.clades == 0].sum(1)
    north, south = (meta["site"] == "north").to_numpy(), (meta["site"] == "south").to_numpy()
    slope_north = np.polyfit(clade1[north], residual[north], 1)[0]
    slope_south = np.polyfit(clade1[south], residual[south], 1)[0]
    assert slope_north > 15 and slope_south < -15


def test_written_files_load(tmp_path):
    paths = write_synthetic_dataset(tmp_path, n_samples=30, n_asvs=16, seed=5)
    table = load_table(paths["table"])
    assert table.shape == (16, 30)
    hashed = load_table(paths["table_hashed"])
    sequences = resolve_sequences(list(hashed.ids(axis="observation")), paths["sequences"])
    assert sequences == [s.upper() for s in table.ids(axis="observation")]
    assert len(read_fasta(paths["sequences"])) == 16
    assert read_metadata(paths["metadata"]).shape == (30, 3)
    tips = {t.name for t in TreeNode.read(str(paths["tree"])).tips()}
    assert tips == set(table.ids(axis="observation"))
    again = write_synthetic_dataset(tmp_path / "again", n_samples=30, n_asvs=16, seed=5)
    assert again["metadata"].read_bytes() == paths["metadata"].read_bytes()
    assert again["tree"].read_bytes() == paths["tree"].read_bytes()


def test_biom_json_and_hdf5_agree(tmp_path):
    data = np.array([[0, 3, 1], [2, 0, 0]], dtype=float)
    table = biom.Table(data, ["ACGT", "GGCC"], ["s1", "s2", "s3"])
    json_path = tmp_path / "t.json.biom"
    json_path.write_text(table.to_json("test"))
    loaded = table_to_csr(load_table(json_path))
    assert loaded.sample_ids == ["s1", "s2", "s3"] and loaded.feature_ids == ["ACGT", "GGCC"]
    np.testing.assert_array_equal(loaded.counts.toarray(), data.T)


def test_unreadable_and_missing_tables(tmp_path):
    bad = tmp_path / "bad.biom"
    bad.write_text("{not json")
    with pytest.raises(AamError, match="bad.biom"):
        load_table(bad)
    with pytest.raises(AamError, match="not found"):
        load_table(tmp_path / "nope.biom")


def test_rarefaction_drops_shallow_samples_and_counts_them():
    data = np.array([[5, 50, 100], [5, 50, 100]], dtype=float)  # sample depths 10, 100, 200
    table = biom.Table(data, ["A", "C"], ["s1", "s2", "s3"])
    rarefied, dropped = rarefy(table, 60, seed=1)
    assert dropped == 1 and list(rarefied.ids()) == ["s2", "s3"]
    np.testing.assert_array_equal(rarefied.sum(axis="sample"), [60, 60])
    with pytest.raises(AamError, match="--rarefy-depth 200"):
        rarefy(table, 1000, seed=1)
