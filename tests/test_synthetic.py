"""The synthetic dataset: determinism, shapes, tree-related sequences, target structure and written files."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from skbio import TreeNode

from aam.data.biom_table import load_table, table_to_csr
from aam.data.metadata import numeric_target, read_metadata
from aam.data.sequences import is_dna, read_fasta, resolve_sequences
from aam.data.synthetic import make_synthetic_dataset, write_synthetic_dataset
from aam.errors import AamError


def hamming(a: str, b: str) -> float:
    """Fraction of differing positions over the shorter length (ASVs differ in length only by truncation)."""
    n = min(len(a), len(b))
    return float(np.mean([x != y for x, y in zip(a[:n], b[:n])]))


def test_same_seed_same_dataset_other_seed_other_dataset():
    first, second = make_synthetic_dataset(40, 20, seed=3), make_synthetic_dataset(40, 20, seed=3)
    assert first.newick == second.newick and first.sequences == second.sequences
    np.testing.assert_array_equal(first.counts, second.counts)
    assert first.metadata.equals(second.metadata)
    assert make_synthetic_dataset(40, 20, seed=4).sequences != first.sequences


def test_sizes_lengths_and_columns():
    data = make_synthetic_dataset(40, 20, seq_len_range=(100, 150), seed=3)
    assert data.counts.shape == (40, 20) and data.counts.dtype == np.int64
    assert data.asv_ids == data.sequences and len(set(data.sequences)) == 20
    assert all(100 <= len(s) <= 150 and set(s) <= set("ACGT") for s in data.sequences)
    depths = data.counts.sum(1)
    assert depths.min() >= 500 and depths.max() <= 2000
    meta = data.metadata
    assert list(meta.columns) == ["sample_id", "target", "site", "label"]
    assert meta["sample_id"].tolist()[:2] == ["S001", "S002"]
    assert set(meta["site"]) <= {"north", "south", "east"}
    assert set(meta["label"]) <= {"type_a", "type_b", "type_c"} and meta["target"].dtype == np.float64
    assert sorted(set(data.clades.tolist())) == [0, 1, 2]


def test_community_types_favour_their_clade():
    data = make_synthetic_dataset(60, 30, seed=5)
    relative = data.counts / data.counts.sum(1, keepdims=True)
    for clade, label in enumerate(["type_a", "type_b", "type_c"]):
        members = (data.metadata["label"] == label).to_numpy()
        clade_share = relative[:, data.clades == clade].sum(1)
        assert clade_share[members].mean() > 2 * clade_share[~members].mean()


def test_related_asvs_look_alike():
    data = make_synthetic_dataset(20, 40, seed=1)
    tree = TreeNode.read([data.newick])
    sisters = []
    for node in tree.non_tips():
        tips = [c for c in node.children if c.is_tip()]
        if len(tips) == 2:
            sisters.append(hamming(tips[0].name, tips[1].name))
    rng = np.random.default_rng(0)
    pairs = [rng.choice(40, 2, replace=False) for _ in range(200)]
    average = np.mean([hamming(data.sequences[i], data.sequences[j]) for i, j in pairs])
    assert sisters and np.mean(sisters) < 0.7 * average


def test_tree_is_rooted_binary_with_short_branches():
    tree = TreeNode.read([make_synthetic_dataset(10, 12, seed=2).newick])
    assert tree.count(tips=True) == 12
    assert all(len(node.children) == 2 for node in tree.non_tips(include_self=True))
    lengths = [node.length for node in tree.traverse() if not node.is_root()]
    assert min(lengths) >= 0.01 and max(lengths) <= 0.2


def test_site_effect_differs_by_clade():
    data = make_synthetic_dataset(400, 30, seed=2)
    meta = data.metadata
    relative = data.counts / data.counts.sum(1, keepdims=True)
    clade1 = relative[:, data.clades == 1].sum(1)
    residual = meta["target"].to_numpy() - 20 - 40 * relative[:, data.clades == 0].sum(1)
    slopes = {site: np.polyfit(clade1[(meta["site"] == site).to_numpy()],
                               residual[(meta["site"] == site).to_numpy()], 1)[0] for site in ("north", "south")}
    assert slopes["north"] > 15 and slopes["south"] < -15


def test_too_small_sizes_are_user_errors():
    with pytest.raises(AamError, match="--samples"):
        make_synthetic_dataset(n_samples=2)
    with pytest.raises(AamError, match="--asvs"):
        make_synthetic_dataset(n_asvs=5, n_communities=3)


def test_written_files_load(synthetic_dir):
    assert {"table", "tree", "metadata", "table_hashed", "sequences"} <= set(synthetic_dir)
    table = table_to_csr(load_table(synthetic_dir["table"]))
    assert table.counts.shape == (48, 30) and all(is_dna(f) for f in table.feature_ids)
    metadata = read_metadata(synthetic_dir["metadata"])
    assert metadata.shape == (48, 3) and list(metadata.index) == table.sample_ids
    assert numeric_target(metadata, "target").notna().all()
    tips = {t.name for t in TreeNode.read(str(synthetic_dir["tree"])).tips()}
    assert tips == set(table.feature_ids)
    fasta = read_fasta(synthetic_dir["sequences"])
    assert fasta == {hashlib.md5(s.encode()).hexdigest(): s for s in table.feature_ids}
    hashed = table_to_csr(load_table(synthetic_dir["table_hashed"]))
    assert resolve_sequences(hashed.feature_ids, synthetic_dir["sequences"]) == table.feature_ids
    np.testing.assert_array_equal(hashed.counts.toarray(), table.counts.toarray())


def test_writing_is_deterministic_and_leaves_no_temp_files(tmp_path):
    first = write_synthetic_dataset(tmp_path / "a", n_samples=12, n_asvs=8, seed=5)
    second = write_synthetic_dataset(tmp_path / "b", n_samples=12, n_asvs=8, seed=5)
    for role in ("metadata", "tree", "sequences"):
        assert first[role].read_bytes() == second[role].read_bytes()
    assert sorted(p.name for p in (tmp_path / "a" / "data").iterdir()) == [
        "metadata.tsv", "sequences.fasta", "table.biom", "table_hashed.biom", "tree.nwk"]
