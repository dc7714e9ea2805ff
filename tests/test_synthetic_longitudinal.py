"""The longitudinal benchmark: determinism, per-person labels, private ASVs, disease clades, files, and that a
forest generalises to new people while anything built on people's private ASVs does not."""

from __future__ import annotations

import numpy as np
import pytest
from skbio import TreeNode
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from aam.data.biom_table import load_table, table_to_csr
from aam.data.metadata import read_metadata
from aam.data.synthetic_longitudinal import make_longitudinal_dataset, write_longitudinal_dataset
from aam.errors import AamError

SMALL = {"n_subjects": 6, "samples_per_subject": 4, "n_shared": 60, "n_carried": 30, "n_private": 5}


@pytest.fixture(scope="module")
def data():
    return make_longitudinal_dataset(seed=0)


@pytest.fixture(scope="module")
def labels(data):
    return (data.metadata["disease"] == "CD").to_numpy().astype(int), data.metadata["subject"].to_numpy()


def relative(data) -> np.ndarray:
    return data.counts / data.counts.sum(1, keepdims=True)  # [N_samples, N_asvs]


def top_asvs(data, k: int = 32) -> np.ndarray:
    return np.argsort(-data.counts, axis=1, kind="stable")[:, :k]  # [N_samples, k] column indices


def grouped_aurocs(features: np.ndarray, y: np.ndarray, groups: np.ndarray | None) -> list[float]:
    """Per-fold AUROC of a small forest, folds grouped by ``groups`` (or plain stratified folds if None)."""
    if groups is None:
        splits = StratifiedKFold(5, shuffle=True, random_state=0).split(features, y)
    else:
        splits = StratifiedGroupKFold(5).split(features, y, groups)
    scores = []
    for train, test in splits:
        forest = RandomForestClassifier(100, n_jobs=1, random_state=0).fit(features[train], y[train])
        scores.append(roc_auc_score(y[test], forest.predict_proba(features[test])[:, 1]))
    return scores


def test_same_seed_same_dataset_other_seed_other_dataset():
    first, second = make_longitudinal_dataset(seed=3, **SMALL), make_longitudinal_dataset(seed=3, **SMALL)
    assert first.newick == second.newick and first.sequences == second.sequences
    np.testing.assert_array_equal(first.counts, second.counts)
    np.testing.assert_array_equal(first.private_owner, second.private_owner)
    assert first.metadata.equals(second.metadata) and first.disease_clades == second.disease_clades
    assert make_longitudinal_dataset(seed=4, **SMALL).sequences != first.sequences


def test_shapes_columns_and_per_person_labels(data):
    meta = data.metadata
    assert data.counts.shape == (480, len(data.sequences)) and data.counts.dtype == np.int64
    assert data.clades.shape == data.private_owner.shape == (len(data.sequences),)
    assert list(meta.columns) == ["sample_id", "subject", "time", "disease"]
    assert meta["sample_id"].tolist()[:2] == ["P01_T01", "P01_T02"] and meta["sample_id"].is_unique
    assert meta["time"].dtype == np.int64 and set(meta["time"]) == set(range(1, 21))
    per_subject = meta.groupby("subject")["disease"]
    assert (per_subject.nunique() == 1).all() and (per_subject.size() == 20).all()
    assert per_subject.first().value_counts().to_dict() == {"CD": 12, "control": 12}
    depths = data.counts.sum(1)
    assert depths.min() >= 5000 and depths.max() <= 10000 and (data.counts.sum(0) > 0).all()


def test_sequences_unique_100_nt_acgt(data):
    assert data.asv_ids == data.sequences and len(set(data.sequences)) == len(data.sequences)
    assert all(len(s) == 100 and set(s) <= set("ACGT") for s in data.sequences)


def test_private_asvs_belong_to_one_person_and_copy_a_shared_asv_of_their_clade(data, labels):
    _, subjects = labels
    subject_index = np.unique(subjects, return_inverse=True)[1]  # [N_samples]
    private = np.flatnonzero(data.private_owner >= 0)
    assert len(private) > 20 * 24
    for column in private:
        carriers = np.unique(subject_index[data.counts[:, column] > 0])
        assert carriers.tolist() == [data.private_owner[column]]
    letters = np.array([list(s) for s in data.sequences])  # [N_asvs, 100]
    shared = np.flatnonzero(data.private_owner < 0)
    differences = (letters[private, None, :] != letters[None, shared, :]).sum(-1)  # [n_private, n_shared]
    nearest = differences.argmin(1)
    assert set(differences.min(1).tolist()) <= {1, 2, 3}
    np.testing.assert_array_equal(data.clades[shared[nearest]], data.clades[private])


def test_tree_places_private_asvs_beside_their_parent(data):
    tree = TreeNode.read([data.newick])
    assert {tip.name for tip in tree.tips()} == set(data.sequences)
    letters = np.array([list(s) for s in data.sequences])
    shared = np.flatnonzero(data.private_owner < 0)
    for column in np.flatnonzero(data.private_owner >= 0)[::40]:
        parent = shared[(letters[column] != letters[shared]).sum(1).argmin()]
        distance = tree.find(data.sequences[column]).distance(tree.find(data.sequences[parent]))
        assert distance <= 0.03 + 1e-6


def test_observed_asvs_per_sample(data):
    assert 120 <= np.median((data.counts > 0).sum(1)) <= 220


def test_top_asvs_mostly_identify_the_person_disease_clades_mostly_below(data):
    top = top_asvs(data)
    assert (data.private_owner[top] >= 0).mean() > 0.5
    assert np.isin(data.clades[top], data.disease_clades).mean() < 0.1


def test_disease_clades_enriched_in_cases_in_shared_and_private_asvs(data, labels):
    y, _ = labels
    in_clades = np.isin(data.clades, data.disease_clades)
    for part in (data.private_owner < 0, data.private_owner >= 0):
        share = relative(data)[:, in_clades & part].sum(1)  # [N_samples]
        assert share[y == 1].mean() > 2 * share[y == 0].mean()
    assert relative(data)[:, in_clades].sum(1).mean() < 0.15


def test_too_small_sizes_are_user_errors():
    with pytest.raises(AamError, match="n_subjects"):
        make_longitudinal_dataset(n_subjects=3)
    with pytest.raises(AamError, match="samples_per_subject"):
        make_longitudinal_dataset(samples_per_subject=0)
    with pytest.raises(AamError, match="n_carried"):
        make_longitudinal_dataset(n_carried=20, n_private=40)
    with pytest.raises(AamError, match="n_disease_clades"):
        make_longitudinal_dataset(n_clades=2, n_disease_clades=2)


def test_written_files_load(tmp_path):
    paths = write_longitudinal_dataset(tmp_path, seed=2, **SMALL)
    expected = make_longitudinal_dataset(seed=2, **SMALL)
    table = table_to_csr(load_table(paths["table"]))
    assert table.feature_ids == expected.sequences
    np.testing.assert_array_equal(table.counts.toarray(), expected.counts)
    metadata = read_metadata(paths["metadata"])
    assert list(metadata.index) == table.sample_ids == expected.metadata["sample_id"].tolist()
    assert list(metadata.columns) == ["subject", "time", "disease"]
    tips = {tip.name for tip in TreeNode.read(str(paths["tree"])).tips()}
    assert tips == set(table.feature_ids)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["metadata.tsv", "table.biom", "tree.nwk"]


def test_forest_generalises_to_new_people_below_the_clade_oracle(data, labels):
    y, subjects = labels
    aurocs = grouped_aurocs(relative(data), y, subjects)
    assert 0.7 < np.mean(aurocs) < 0.97
    oracle = relative(data)[:, np.isin(data.clades, data.disease_clades)].sum(1)
    assert roc_auc_score(y, oracle) > np.mean(aurocs) + 0.03  # room for a model that reads the tree


def test_private_asvs_memorise_people_but_do_not_transfer(data, labels):
    y, subjects = labels
    private = relative(data)[:, data.private_owner >= 0]
    assert np.mean(grouped_aurocs(private, y, None)) > 0.95
    np.testing.assert_allclose(grouped_aurocs(private, y, subjects), 0.5)
