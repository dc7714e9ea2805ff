"""The sequence-group composition model (``aam train --model-type sequence-groups``): k-mer profiles against a
plain count, the fitted read-out against scikit-learn refitted on the same features, unseen ASVs joining the
group of their clade, grouped inner folds, the CLI round trip through predict and cross-validate, and errors."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from scipy import sparse
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import roc_auc_score

from aam.cli import cli
from aam.data.dataset import AmpliconData, BatchCollator, SampleDataset
from aam.data.sequences import tokenize
from aam.data.synthetic import write_biom
from aam.errors import AamError
from aam.models.sequence_groups import (
    SequenceGroupComposition,
    SequenceGroupsConfig,
    kmer_profiles,
    position_profiles,
    sequence_group_model,
    sequence_profiles,
)
from aam.models.sequence_groups_fit import _inner_splits, _raw_features, fit_sequence_groups, select_anchors
from aam.training.trainer import forward_batch
from aam.workflows.loading import load_predictor

BASES = "ACGT"


def tokens_of(sequences: list[str], max_bp: int = 40) -> np.ndarray:
    return tokenize(sequences, max_bp).tokens


def test_kmer_profiles_count_windows_of_unambiguous_nucleotides():
    sequences = ["ACGTAC", "AANAA", "AC", "TTTT"]
    profiles = kmer_profiles(torch.from_numpy(tokens_of(sequences, 8)), 2).numpy()
    index = {"".join(p): i for i, p in enumerate(itertools.product(BASES, repeat=2))}
    for row, sequence in zip(profiles, sequences):
        expected = np.zeros(16)
        for i in range(len(sequence) - 1):
            if set(sequence[i:i + 2]) <= set(BASES):
                expected[index[sequence[i:i + 2]]] += 1
        expected /= max(expected.sum(), 1)
        np.testing.assert_allclose(row, expected)
    assert profiles[1].sum() == pytest.approx(1.0)  # AA twice: the windows with N are skipped
    assert kmer_profiles(torch.from_numpy(tokens_of(["AC"], 8)), 4).sum() == 0  # shorter than k


def test_position_profiles_are_one_hot_nucleotides_and_distances_count_substitutions():
    sequences = ["ACGTA", "ACGTT", "ANG", "TTTTTTTT"]
    profiles = position_profiles(torch.from_numpy(tokens_of(sequences, 8)), 6).numpy()
    assert profiles.shape == (4, 24)
    for row, sequence in zip(profiles, sequences):
        expected = np.zeros((6, 4))
        for i, base in enumerate(sequence[:6]):
            if base in BASES:
                expected[i, BASES.index(base)] = 1.0
        np.testing.assert_allclose(row, expected.ravel() / np.sqrt(6))  # N, the end and past 6 positions: 0
    squared = ((profiles[0] - profiles[1]) ** 2).sum()
    assert squared == pytest.approx(2 * 1 / 6)  # one substitution in 6 positions
    narrow = position_profiles(torch.from_numpy(tokens_of(["ACG"], 3)), 6).numpy()  # tokens narrower than 6
    np.testing.assert_allclose(narrow, position_profiles(torch.from_numpy(tokens_of(["ACG"], 8)), 6).numpy())

    tokens = torch.from_numpy(tokens_of(sequences[:2] + sequences[3:], 8))
    np.testing.assert_array_equal(sequence_profiles(tokens, 2, 0).numpy(), kmer_profiles(tokens, 2).numpy())
    both = sequence_profiles(tokens, 2, 6).numpy()
    assert both.shape == (3, 16 + 24)
    np.testing.assert_allclose(np.linalg.norm(both[:, :16], axis=1), 1.0)  # the k-mer part at unit length
    np.testing.assert_allclose(both[:, 16:], position_profiles(tokens, 6).numpy())


def test_a_checkpoint_config_without_positions_reads_as_k_mers_only():
    config = SequenceGroupsConfig(group_counts=(2,), clusterings=1, positions=40)
    data = config.to_dict()
    assert data["positions"] == 40 and config.profile_width == 256 + 160
    del data["positions"]  # written before the field existed
    old = SequenceGroupsConfig.from_dict(data)
    assert old.positions == 0 and SequenceGroupComposition(old).centres.shape == (2, 256)
    with pytest.raises(ValueError, match="positions"):
        SequenceGroupsConfig(positions=-1)


def clade_problem(n_subjects: int = 12, per_subject: int = 4, seed: int = 0):
    """Two clades of related 40-nt sequences plus background; cases carry more of clade X. Every subject
    has private variants (one substitution) of both clades, so the shared signal is clade-level."""
    rng = np.random.default_rng(seed)
    roots = ["".join(rng.choice(list(BASES), 40)) for _ in range(4)]  # X, Y and two background clades

    def variant(sequence: str) -> str:
        at = rng.integers(len(sequence))
        return sequence[:at] + rng.choice([b for b in BASES if b != sequence[at]]) + sequence[at + 1:]

    sequences, clade_of, owner = [], [], []

    def add(make, clade: int, subject: int) -> None:
        sequence = make()
        while sequence in sequences:  # distinct ASVs
            sequence = make()
        sequences.append(sequence)
        clade_of.append(clade)
        owner.append(subject)

    for clade, root in enumerate(roots):
        for _ in range(3):  # shared members
            add(lambda: variant(root), clade, -1)  # noqa: B023 (called at once)
        for subject in range(n_subjects):  # private members
            add(lambda: variant(variant(root)), clade, subject)  # noqa: B023
    clade_of, owner = np.array(clade_of), np.array(owner)
    is_case = np.arange(n_subjects) % 2 == 1
    rows, labels, subjects = [], [], []
    for subject in range(n_subjects):
        mine = (owner == -1) | (owner == subject)
        for _ in range(per_subject):
            weights = np.where(mine, 1.0, 0.0) * rng.uniform(0.5, 1.5, len(sequences))
            weights[clade_of == 0] *= 4.0 if is_case[subject] else 0.5
            rows.append(rng.multinomial(2000, weights / weights.sum()))
            labels.append(int(is_case[subject]))
            subjects.append(f"P{subject}")
    return (np.array(rows, dtype=np.float64), sequences, clade_of, np.array(labels), np.array(subjects), rng,
            variant, roots)


def features_and_batch(model, counts: np.ndarray, tokens: np.ndarray):
    """The fitted model's features of every sample (its fit path) and one batch holding every sample."""
    used = np.unique(sparse.csr_matrix(counts).indices)
    with torch.no_grad():
        raw = _raw_features(model, sparse.csr_matrix(counts)[:, used], model.assign(torch.from_numpy(tokens[used])))
    data = AmpliconData(counts, tokens, [f"s{i}" for i in range(len(counts))], [f"a{j}" for j in range(len(tokens))])
    dataset = SampleDataset(data, None, token_limit=10_000)
    batch = BatchCollator(data.tokens, data.sample_ids)([dataset[i] for i in range(len(dataset))])
    return raw - model.feature_mean.numpy(), batch


def predictions_of(model, batch) -> np.ndarray:
    with torch.no_grad():
        prediction = forward_batch(model.eval(), batch)["prediction"].double()
    return prediction[np.argsort(batch.sample_index.numpy())].numpy()


@pytest.mark.parametrize("positions", [0, 40])
def test_fitted_readout_equals_scikit_learn_on_the_same_features_and_forward_agrees(positions):
    counts, sequences, _, labels, subjects, *_ = clade_problem()
    tokens = tokens_of(sequences)
    model = SequenceGroupComposition(SequenceGroupsConfig(group_counts=(2, 4), clusterings=2, classifier=True,
                                                          out_dim=2, positions=positions))
    fit = fit_sequence_groups(model, sparse.csr_matrix(counts), tokens, labels, subjects, seed=0)
    assert fit.parameter == "C" and fit.inner_scheme == "5-fold grouped" and len(fit.grid) == 7
    assert fit.out_of_fold.shape == (len(labels), 2)
    features, batch = features_and_batch(model, counts, tokens)
    assert features.shape == (len(labels), 2 * (2 + 4))
    np.testing.assert_allclose(features.mean(0), 0, atol=1e-9)
    reference = LogisticRegression(C=fit.chosen, max_iter=5000).fit(features, labels).predict_proba(features)
    np.testing.assert_allclose(np.exp(predictions_of(model, batch)), reference, atol=1e-5)
    assert roc_auc_score(labels, fit.out_of_fold[:, 1]) > 0.9  # new people (grouped inner folds) are ranked right


def test_regression_readout_equals_ridge_and_finds_the_clade_share():
    counts, sequences, clade_of, labels, subjects, *_ = clade_problem(seed=1)
    tokens = tokens_of(sequences)
    target = np.log(counts[:, clade_of == 0].sum(1) / counts.sum(1)) * 3.0 + 1.0
    model = SequenceGroupComposition(SequenceGroupsConfig(group_counts=(4,), clusterings=1))
    fit = fit_sequence_groups(model, sparse.csr_matrix(counts), tokens, target, None, seed=2**32 - 5)  # any seed
    assert fit.parameter == "alpha" and fit.inner_scheme == "5-fold"
    assert np.corrcoef(fit.out_of_fold, target)[0, 1] > 0.9  # the clade's log share is a group feature
    features, batch = features_and_batch(model, counts, tokens)
    reference = Ridge(alpha=fit.chosen).fit(features, target).predict(features)
    np.testing.assert_allclose(predictions_of(model, batch)[:, 0], reference, rtol=1e-5, atol=1e-5)


def reference_trees(readout: str, classifier: bool, seed: int):
    """The scikit-learn estimator a tree read-out must equal: the baseline of the same name's settings."""
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )

    from aam.baselines import FOREST_MAX_FEATURES, FOREST_TREES
    from aam.baselines.estimators import BOOSTED_DEFAULTS

    if readout == "forest":
        make = RandomForestClassifier if classifier else RandomForestRegressor
        return make(n_estimators=FOREST_TREES, max_features=FOREST_MAX_FEATURES, random_state=seed)
    make = HistGradientBoostingClassifier if classifier else HistGradientBoostingRegressor
    return make(random_state=seed, **BOOSTED_DEFAULTS)


@pytest.mark.parametrize(("readout", "classifier"), list(itertools.product(["boosted", "forest"], [True, False])))
def test_tree_readout_equals_scikit_learn_and_survives_the_checkpoint(readout, classifier, tmp_path):
    from aam.outputs.checkpoint import save_checkpoint

    counts, sequences, clade_of, labels, subjects, *_ = clade_problem(seed=4)
    tokens = tokens_of(sequences)
    target = labels if classifier else np.log(counts[:, clade_of == 0].sum(1) / counts.sum(1))
    config = SequenceGroupsConfig(group_counts=(2, 4), clusterings=2, classifier=classifier,
                                  out_dim=2 if classifier else 1, readout=readout)
    model = sequence_group_model(config)
    fit = fit_sequence_groups(model, sparse.csr_matrix(counts), tokens, target, subjects, seed=3)
    assert fit.parameter == ("n_estimators" if readout == "forest" else "max_iter")
    features, batch = features_and_batch(model, counts, tokens)
    reference = reference_trees(readout, classifier, seed=3).fit(features, target)
    predicted = predictions_of(model, batch)
    if classifier:
        np.testing.assert_allclose(np.exp(predicted), reference.predict_proba(features), atol=1e-5)
        assert roc_auc_score(labels, fit.out_of_fold[:, 1]) > 0.8  # inner folds by person, honest
    else:
        np.testing.assert_allclose(predicted[:, 0], reference.predict(features), rtol=1e-5, atol=1e-5)
        assert np.corrcoef(fit.out_of_fold, target)[0, 1] > 0.8
    assert model.readout.weight.abs().sum() == 0  # the linear layer is not used
    path = tmp_path / "model.pt"
    save_checkpoint(path, kind="predictor", model_config=config.to_dict(), model=model)
    loaded, _ = load_predictor(path)
    assert type(loaded).__name__ == "TreeGroupComposition" and loaded.config.readout == readout
    np.testing.assert_allclose(predictions_of(loaded, batch), predicted)
    unscored = sequence_group_model(config)  # without the inner folds: the same trees, no out-of-fold table
    fit = fit_sequence_groups(unscored, sparse.csr_matrix(counts), tokens, target, subjects, seed=3, inner_score=False)
    assert fit.out_of_fold is None and fit.grid == []
    np.testing.assert_array_equal(predictions_of(unscored, batch), predicted)
    with pytest.raises(AamError, match="shrinkage"):
        fit_sequence_groups(sequence_group_model(replace(config, readout="linear")), sparse.csr_matrix(counts),
                            tokens, target, subjects, seed=3, inner_score=False)


def test_absolute_error_readout_equals_scikit_learn_predicts_medians_and_survives_the_checkpoint(tmp_path):
    from sklearn.ensemble import HistGradientBoostingRegressor

    from aam.baselines.estimators import BOOSTED_DEFAULTS
    from aam.outputs.checkpoint import save_checkpoint

    counts, sequences, clade_of, labels, subjects, *_ = clade_problem(seed=4)
    tokens = tokens_of(sequences)
    rng = np.random.default_rng(0)
    # a skewed target: most samples near their clade share, a few far above (where mean and median part)
    target = np.log(counts[:, clade_of == 0].sum(1) / counts.sum(1)) + np.where(rng.random(len(labels)) < 0.15, 8.0, 0.0)
    config = SequenceGroupsConfig(group_counts=(2, 4), clusterings=2, readout="boosted", boosted_loss="absolute_error")
    model = sequence_group_model(config)
    fit_sequence_groups(model, sparse.csr_matrix(counts), tokens, target, subjects, seed=3, inner_score=False)
    features, batch = features_and_batch(model, counts, tokens)
    reference = HistGradientBoostingRegressor(random_state=3, loss="absolute_error", **BOOSTED_DEFAULTS)
    predicted = predictions_of(model, batch)[:, 0]
    np.testing.assert_allclose(predicted, reference.fit(features, target).predict(features), rtol=1e-5, atol=1e-5)
    squared = sequence_group_model(replace(config, boosted_loss="squared_error"))
    fit_sequence_groups(squared, sparse.csr_matrix(counts), tokens, target, subjects, seed=3, inner_score=False)
    by_mean = predictions_of(squared, batch)[:, 0]
    usual = target < 4  # the outliers pull the squared error's predictions up, not the absolute error's
    assert np.abs(predicted - target)[usual].mean() < np.abs(by_mean - target)[usual].mean()
    assert predicted[~usual].mean() < by_mean[~usual].mean()  # nor does it chase them
    path = tmp_path / "model.pt"
    save_checkpoint(path, kind="predictor", model_config=config.to_dict(), model=model)
    loaded, _ = load_predictor(path)
    assert loaded.config.boosted_loss == "absolute_error"
    np.testing.assert_allclose(predictions_of(loaded, batch)[:, 0], predicted)
    with pytest.raises(ValueError, match="boosted_loss"):
        SequenceGroupsConfig(boosted_loss="huber")
    assert SequenceGroupsConfig.from_dict({k: v for k, v in config.to_dict().items()
                                           if k != "boosted_loss"}).boosted_loss == "squared_error"  # older models


def test_uncentred_log_shares_are_the_plain_logs_and_trees_read_them_as_shares():
    counts, sequences, clade_of, labels, subjects, *_ = clade_problem(seed=5)
    tokens = tokens_of(sequences)
    config = SequenceGroupsConfig(group_counts=(2, 4), clusterings=1, readout="boosted", classifier=True, out_dim=2,
                                  centred=False)
    model = sequence_group_model(config)
    fit_sequence_groups(model, sparse.csr_matrix(counts), tokens, labels, subjects, seed=3, inner_score=False)
    assignments = model.assign(torch.from_numpy(tokens))
    shares = torch.from_numpy(counts / counts.sum(1, keepdims=True))
    plain = model.log_shares(assignments, shares).numpy()
    start = 0
    for r, count in enumerate(config.resolutions):  # each block: log(group share + pseudo), nothing subtracted
        onehot = np.eye(count)[assignments[:, r].numpy()]
        np.testing.assert_allclose(plain[:, start:start + count], np.log(shares.numpy() @ onehot + 1e-4))
        start += count
    centred = SequenceGroupComposition(replace(config, centred=True))
    centred.load_state_dict({k: v for k, v in model.state_dict().items() if k != "_extra_state"}, strict=False)
    blocks = np.split(plain, np.cumsum(config.resolutions)[:-1], axis=1)
    np.testing.assert_allclose(centred.log_shares(assignments, shares).numpy(),
                               np.concatenate([b - b.mean(1, keepdims=True) for b in blocks], axis=1))
    # trees on the plain logs are trees on the group shares: HistGradientBoosting bins each feature by rank
    group_shares = np.exp(plain) - 1e-4
    reference = reference_trees("boosted", True, seed=3).fit(group_shares, labels)
    _, batch = features_and_batch(model, counts, tokens)
    np.testing.assert_allclose(np.exp(predictions_of(model, batch)), reference.predict_proba(group_shares), atol=1e-5)
    data = config.to_dict()
    del data["centred"]  # a checkpoint written before the field existed was centred
    assert SequenceGroupsConfig.from_dict(data).centred is True


def test_diversity_features_are_shannon_entropy_and_log_richness_and_reach_the_readout():
    from scipy.stats import entropy

    from aam.models.sequence_groups import diversity_features

    counts, sequences, clade_of, labels, subjects, *_ = clade_problem(seed=6)
    counts[:, :5] = 0  # some ASVs absent from every sample, some samples poorer than others
    counts[::3, 5:20] = 0
    shares = counts / counts.sum(1, keepdims=True)
    got = diversity_features(torch.from_numpy(shares)).numpy()
    np.testing.assert_allclose(got[:, 0], entropy(shares, axis=1), rtol=1e-12)
    np.testing.assert_allclose(got[:, 1], np.log1p((counts > 0).sum(1)))
    tokens = tokens_of(sequences)
    config = SequenceGroupsConfig(group_counts=(2, 4), clusterings=1, classifier=True, out_dim=2, diversity=True)
    assert config.n_features == 6 + 2
    model = sequence_group_model(config)
    fit_sequence_groups(model, sparse.csr_matrix(counts), tokens, labels, subjects, seed=3)
    features, batch = features_and_batch(model, counts, tokens)
    assert features.shape == (len(counts), 8)
    np.testing.assert_allclose(features[:, 6:] + model.feature_mean[6:].numpy(), got, rtol=1e-10)
    logits = predictions_of(model, batch)  # the forward pass reads the same features as the fit
    np.testing.assert_allclose(logits, torch.log_softmax(model.readout(torch.from_numpy(features)), -1).detach().numpy(),
                               atol=1e-6)


def test_more_kmeans_starts_never_give_a_worse_clustering():
    """Starts are scikit-learn's n_init drawn from one seeded generator: the first start is the single-start run,
    so the best of three has at most its inertia, clustering by clustering."""
    counts, sequences, *_ = clade_problem(seed=3)
    labels = np.arange(len(counts)) % 2
    tokens = tokens_of(sequences)
    config = SequenceGroupsConfig(group_counts=(3, 5), clusterings=3, classifier=True, out_dim=2)

    def inertias(starts: int) -> np.ndarray:
        model = SequenceGroupComposition(config)
        fit_sequence_groups(model, sparse.csr_matrix(counts), tokens, labels, None, seed=4, kmeans_starts=starts)
        profiles = model.profiles(torch.from_numpy(tokens[np.unique(sparse.csr_matrix(counts).indices)]))
        nearest = model.nearest_groups(profiles)
        spans = np.cumsum((0,) + config.resolutions)
        return np.array([((profiles - model.centres[spans[r]:spans[r + 1]][nearest[:, r]]) ** 2).sum().item()
                         for r in range(len(config.resolutions))])

    one, three = inertias(1), inertias(3)
    assert np.all(three <= one + 1e-9) and np.any(three < one - 1e-9)


@pytest.mark.parametrize("positions", [0, 40])
def test_an_unseen_private_variant_counts_towards_its_clade(positions):
    counts, sequences, clade_of, labels, subjects, rng, variant, roots = clade_problem(seed=2)
    tokens = tokens_of(sequences)
    model = SequenceGroupComposition(SequenceGroupsConfig(group_counts=(4,), clusterings=1, classifier=True,
                                                          out_dim=2, positions=positions))
    # one clustering of 4 groups: the best of 4 starts finds the 4 clades (a single start may merge two)
    fit_sequence_groups(model, sparse.csr_matrix(counts), tokens, labels, subjects, seed=0, kmeans_starts=4)
    with torch.no_grad():
        known = model.assign(torch.from_numpy(tokens))[:, 0].numpy()
        assert all(len(set(known[clade_of == c])) == 1 for c in range(4))  # one group per clade
        new = [variant(variant(roots[c])) for c in range(4)]  # never in the table
        assigned = model.assign(torch.from_numpy(tokens_of(new)))[:, 0].numpy()
    np.testing.assert_array_equal(assigned, [known[clade_of == c][0] for c in range(4)])


def test_select_anchors_ranks_asvs_by_the_groups_that_carry_them():
    counts = sparse.csr_matrix(np.array([  # rows are samples of people a, a, b, c; ASV 4 is never read
        [5, 1, 3, 0, 0],
        [5, 0, 3, 0, 0],
        [5, 1, 0, 9, 0],
        [5, 0, 0, 9, 0],
    ], dtype=float))
    people = np.array(["a", "a", "b", "c"])
    np.testing.assert_array_equal(select_anchors(counts, people, 10), [0, 1, 3])  # 2: person a only
    np.testing.assert_array_equal(select_anchors(counts, people, 2), [0, 3])  # 1 and 3 in two people: reads
    np.testing.assert_array_equal(select_anchors(counts, np.array(["a", "a", "a", "b"]), 10), [0, 3])
    np.testing.assert_array_equal(select_anchors(counts, None, 10), [0, 1, 2, 3])  # samples as the units
    assert select_anchors(counts, people, 0).size == 0


def test_anchor_groups_take_a_new_variant_of_a_widespread_asv_and_match_scikit_learn():
    counts, sequences, clade_of, labels, subjects, rng, variant, roots = clade_problem(seed=3)
    tokens = tokens_of(sequences)
    anchors = select_anchors(sparse.csr_matrix(counts), subjects, 64)
    np.testing.assert_array_equal(anchors, np.flatnonzero(np.array([o == -1 for o in
                                                                     _owners(sequences, counts, subjects)])))
    config = SequenceGroupsConfig(group_counts=(4,), clusterings=1, anchors=len(anchors), classifier=True, out_dim=2)
    model = SequenceGroupComposition(config)
    assert config.resolutions == (4, len(anchors)) and config.n_features == 4 + len(anchors)
    fit = fit_sequence_groups(model, sparse.csr_matrix(counts), tokens, labels, subjects, seed=0, anchors=anchors)
    features, batch = features_and_batch(model, counts, tokens)
    assert features.shape == (len(labels), 4 + len(anchors))
    reference = LogisticRegression(C=fit.chosen, max_iter=5000).fit(features, labels).predict_proba(features)
    np.testing.assert_allclose(np.exp(predictions_of(model, batch)), reference, atol=1e-5)
    with torch.no_grad():
        assert (model.assign(torch.from_numpy(tokens[anchors]))[:, 1].numpy() == np.arange(len(anchors))).all()
        new = [variant(sequences[a]) for a in anchors]  # one substitution away, never in the table
        assigned = model.assign(torch.from_numpy(tokens_of(new)))[:, 1].numpy()
    assert (assigned == np.arange(len(anchors))).mean() >= 0.9  # nearly all join the ASV they vary
    with pytest.raises(AamError, match="anchor"):
        fit_sequence_groups(SequenceGroupComposition(config), sparse.csr_matrix(counts), tokens, labels, subjects,
                            seed=0)


def _owners(sequences: list[str], counts: np.ndarray, subjects: np.ndarray) -> list[int]:
    """-1 for an ASV read in two or more subjects, else 0 (private or unread)."""
    return [-1 if len(set(subjects[counts[:, j] > 0])) >= 2 else 0 for j in range(len(sequences))]


def test_inner_folds_keep_groups_together_and_stratify():
    targets = np.array([0, 1] * 20)
    groups = np.repeat([f"g{i}" for i in range(10)], 4)
    splits, scheme = _inner_splits(targets, groups, classifier=True, seed=0)
    assert scheme == "5-fold grouped" and len(splits) == 5
    for train, test in splits:
        assert not set(groups[train]) & set(groups[test])
        assert set(targets[test]) == {0, 1}
    assert sorted(np.concatenate([test for _, test in splits]).tolist()) == list(range(40))


def _classification_data(tmp_path, seed: int = 0):
    counts, sequences, _, labels, subjects, *_ = clade_problem(seed=seed)
    ids = [f"S{i:03d}" for i in range(len(labels))]
    table = tmp_path / "table.biom"
    write_biom(table, counts, sequences, ids)
    metadata = tmp_path / "metadata.tsv"
    pd.DataFrame({"sample_id": ids, "disease": np.where(labels == 1, "CD", "control"),
                  "subject": subjects, "site": "gut"}).to_csv(metadata, sep="\t", index=False)
    return table, metadata


def _regression_data(tmp_path):
    """The clade problem with a regression target: each sample's share of clade 0."""
    counts, sequences, clade_of, labels, subjects, *_ = clade_problem(seed=2)
    ids = [f"S{i:03d}" for i in range(len(labels))]
    table, metadata = tmp_path / "table.biom", tmp_path / "metadata.tsv"
    write_biom(table, counts, sequences, ids)
    pd.DataFrame({"sample_id": ids, "share": counts[:, clade_of == 0].sum(1) / counts.sum(1),
                  "subject": subjects}).to_csv(metadata, sep="\t", index=False)
    return table, metadata


def _predicts_its_training_labels(run, table, metadata, output, batch_size: int) -> pd.DataFrame:
    """``aam predict`` with the run's checkpoint on the table it was fitted on: it exits cleanly and gets more
    than 80% of the samples' ``disease`` labels right; its predictions."""
    result = CliRunner().invoke(cli, ["predict", "--model", str(run / "checkpoints" / "best_model.pt"),
                                      "--table", str(table), "--output", str(output), "--batch-size", str(batch_size)])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(output, sep="\t")
    truth = pd.read_csv(metadata, sep="\t").set_index("sample_id").loc[frame["sample_id"], "disease"].to_numpy()
    assert (frame["prediction"].to_numpy() == truth).mean() > 0.8  # fitted on these samples
    return frame


def test_cli_train_predict_and_cross_validate(tmp_path):
    table, metadata = _classification_data(tmp_path)
    common = ["--table", table, "--metadata", metadata, "--metadata-column", "disease", "--classifier",
              "--group-column", "subject", "--model-type", "sequence-groups", "--sequence-groups", "2,4",
              "--group-clusterings", "2", "--group-anchors", "64", "--max-bp", "40", "--seed", "1", "--quiet"]
    out = tmp_path / "train"
    common += ["--group-kmeans-starts", "2"]
    result = CliRunner().invoke(cli, [str(a) for a in ["train", *common, "--output-dir", out]])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "sequence_groups.json").read_text())
    assert report["inner_scheme"] == "5-fold grouped" and report["out_of_fold_scores"]["auroc"] > 0.8
    config = json.loads((out / "config.json").read_text())
    assert config["model_config"]["model_type"] == "sequence-groups"
    assert config["model_config"]["anchors"] == 12  # the 12 ASVs shared between people; private ones are not
    assert config["model_config"]["positions"] == 40  # --max-bp positions beside the k-mers, by default
    assert config["options"]["group_kmeans_starts"] == 2
    val = pd.read_csv(out / "val_predictions.tsv", sep="\t")
    assert len(val) == 48 and {"prob_CD", "prob_control", "actual"} <= set(val.columns)

    model, info = load_predictor(out / "checkpoints" / "best_model.pt")
    assert isinstance(model, SequenceGroupComposition) and info.classifier
    predictions = tmp_path / "predictions.tsv"
    frame = _predicts_its_training_labels(out, table, metadata, predictions, batch_size=5)
    assert len(frame) == 48
    np.testing.assert_allclose(frame[["prob_CD", "prob_control"]].sum(axis=1), 1.0, atol=1e-6)

    forest = tmp_path / "forest.joblib"  # the documented blend with a forest
    result = CliRunner().invoke(cli, [str(a) for a in [
        "rf-baseline", "--table", table, "--metadata", metadata, "--metadata-column", "disease", "--classifier",
        "--group-column", "subject", "--n-estimators", 20, "--n-jobs", 1, "--output", tmp_path / "rf.tsv",
        "--save-model", forest, "--quiet"]])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, ["predict", "--model", str(out / "checkpoints" / "best_model.pt"),
                                      "--table", str(table), "--forest", str(forest), "--output",
                                      str(tmp_path / "blend.tsv"), "--metadata", str(metadata),
                                      "--group-column", "subject"])
    assert result.exit_code == 0, result.output
    blend = pd.read_csv(tmp_path / "blend.tsv", sep="\t")
    forest_part = blend[["prob_CD", "prob_control"]].to_numpy() - 0.5 * frame[["prob_CD", "prob_control"]].to_numpy()
    np.testing.assert_allclose(forest_part.sum(1), 0.5, atol=1e-5)  # half the model, half the forest
    calls = pd.read_csv(tmp_path / "blend_by_group.tsv", sep="\t", dtype={"group": str})  # one call per subject
    subject_of = pd.read_csv(metadata, sep="\t", dtype=str).set_index("sample_id")["subject"]
    per_subject = blend.assign(group=blend["sample_id"].map(subject_of)).groupby("group")
    assert list(calls.columns) == ["group", "n", "prediction", "prob_CD", "prob_control"]
    assert calls["group"].tolist() == sorted(subject_of.unique()) and calls["n"].sum() == 48
    np.testing.assert_allclose(calls["prob_CD"], per_subject["prob_CD"].mean().to_numpy(), atol=1e-5)
    assert (calls["prediction"] == np.where(calls["prob_CD"] > calls["prob_control"], "CD", "control")).all()
    result = CliRunner().invoke(cli, ["predict", "--model", str(out / "checkpoints" / "best_model.pt"),
                                      "--table", str(table), "--output", str(tmp_path / "no.tsv"),
                                      "--group-column", "subject"])
    assert result.exit_code == 2 and "--group-column: needs --metadata" in result.output
    result = CliRunner().invoke(cli, ["predict", "--model", str(out / "checkpoints" / "best_model.pt"),
                                      "--table", str(table), "--output", str(tmp_path / "typo.tsv"),
                                      "--metadata", str(metadata), "--group-column", "subjct"])
    assert result.exit_code == 2 and "subjct" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "typo.tsv").exists()  # refused before predicting: nothing half-written

    cv = tmp_path / "cv"  # the recipe and a boosted read-out beside it: the blend counts each recipe once
    result = CliRunner().invoke(cli, [str(a) for a in ["cross-validate", *common, "--n-folds", "3",
                                                       "--rf-n-estimators", "20", "--output-dir", cv,
                                                       "--variant", "--group-readout boosted"]])
    assert result.exit_code == 0, result.output
    comparison = pd.read_csv(cv / "comparison.tsv", sep="\t").set_index("fold")
    assert comparison.loc["pooled", "aam_auroc"] > 0.7
    boosted = json.loads((cv / "folds" / "fold0" / "model_v1_s0" / "config.json").read_text())
    assert boosted["model_config"]["readout"] == "boosted"
    assert boosted["options"]["group_inner_score"] is False  # the outer fold scores it: no inner folds
    assert not (cv / "folds" / "fold0" / "model_v1_s0" / "val_predictions.tsv").exists()
    assert (cv / "folds" / "fold0" / "model_s0" / "val_predictions.tsv").is_file()  # linear: its choice needs them
    oof = pd.read_csv(cv / "oof_predictions.tsv", sep="\t")
    parts = {m: oof[f"{m}_prob_CD"] for m in ("aam", "forest", "clr-linear", "boosted")}
    expected = (2 * parts["aam"] + parts["forest"] + parts["clr-linear"] + parts["boosted"]) / 5
    np.testing.assert_allclose(oof["blend_prob_CD"], expected, atol=1e-6)


@pytest.mark.parametrize("flags, message", [
    (["--categorical-columns", "site"], "--categorical-columns: categorical metadata is not available with --model-type sequence-groups"),
    (["--sequence-groups", "1,x"], "comma list of group counts"),
    (["--sequence-groups", "64"], "fewer than 64 groups"),
    (["--val-samples", "VAL"], "--exclude-samples"),  # it would train on them: refused, not ignored
    (["--no-group-inner-score"], "--no-group-inner-score: only a tree read-out"),  # linear: it chooses by it
    (["--no-group-inner-score", "--group-readout", "boosted", "--blend-baselines", "forest"],
     "--no-group-inner-score: --blend-weights inner-cv"),
])
def test_cli_errors_name_the_flag(tmp_path, flags, message):
    table, metadata = _classification_data(tmp_path)
    (tmp_path / "val.txt").write_text("S000\nS001\n")
    flags = [str(tmp_path / "val.txt") if f == "VAL" else f for f in flags]
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, [str(a) for a in [
        "train", "--table", table, "--metadata", metadata, "--metadata-column", "disease", "--classifier",
        "--model-type", "sequence-groups", "--max-bp", "40", "--output-dir", out, "--quiet", *flags]])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (out / "checkpoints" / "best_model.pt").exists()


def test_a_boosted_readout_fitted_without_an_inner_score_writes_a_run_without_one(tmp_path):
    table, metadata = _classification_data(tmp_path)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, [str(a) for a in [
        "train", "--table", table, "--metadata", metadata, "--metadata-column", "disease", "--classifier",
        "--model-type", "sequence-groups", "--group-readout", "boosted", "--no-group-inner-score",
        "--sequence-groups", "4,8", "--group-clusterings", "2", "--max-bp", "40", "--output-dir", out, "--quiet"]])
    assert result.exit_code == 0, result.output
    assert (out / "checkpoints" / "best_model.pt").is_file() and not (out / "val_predictions.tsv").exists()
    assert json.loads((out / "sequence_groups.json").read_text())["out_of_fold_scores"] == {}
    page = (out / "report.html").read_text()
    assert "without an inner score" in page and "Validation predictions" not in page
    predicted = tmp_path / "p.tsv"
    result = CliRunner().invoke(cli, ["predict", "--model", str(out / "checkpoints" / "best_model.pt"),
                                      "--table", str(table), "--output", str(predicted)])
    assert result.exit_code == 0, result.output
    assert set(pd.read_csv(predicted, sep="\t")["prediction"]) <= {"CD", "control"}


def test_default_resolutions_shrink_to_a_small_table(caplog):
    from scipy import sparse

    from aam.workflows.sequence_groups import _fitting_group_counts

    table = sparse.csr_matrix(np.eye(40))  # 40 distinct ASVs
    with caplog.at_level("WARNING", logger="aam"):
        assert _fitting_group_counts((8, 16, 32, 64), table) == (8, 16, 32)
    assert "40 distinct ASVs" in caplog.text
    assert _fitting_group_counts((8, 64), table) == (8, 64)  # given counts are kept (the fit names the flag)
    assert _fitting_group_counts((8, 16, 32, 64), sparse.csr_matrix(np.eye(100))) == (8, 16, 32, 64)


def test_choose_weight_follows_the_better_part_and_ties_go_to_half():
    from aam.workflows.forest_blend import BLEND_WEIGHTS, choose_weight

    rng = np.random.default_rng(0)
    y = rng.normal(size=50)
    frame = lambda values: pd.DataFrame({"sample_id": [f"s{i}" for i in range(50)], "prediction": values,  # noqa: E731
                                         "actual": y})
    assert choose_weight(frame(y + rng.normal(size=50)), frame(y), False).weight == 1.0
    assert choose_weight(frame(y), frame(y + rng.normal(size=50)), False).weight == 0.0
    assert choose_weight(frame(y + 1), frame(y - 1), False).weight == 0.5  # the average is exact
    choice = choose_weight(frame(y + 1), frame(y + 1), False)  # every weight ties
    assert choice.weight == 0.5 and [r["forest_weight"] for r in choice.grid] == list(BLEND_WEIGHTS)


def test_forest_blend_weight_is_chosen_on_inner_folds_and_used_by_predict(tmp_path):
    from aam.baselines.store import load_forest, predict_forest
    from aam.workflows.forest_blend import BLEND_WEIGHTS

    table, metadata = _classification_data(tmp_path)
    common = ["--table", table, "--metadata", metadata, "--metadata-column", "disease", "--classifier",
              "--group-column", "subject", "--model-type", "sequence-groups", "--sequence-groups", "2,4",
              "--group-clusterings", "2", "--max-bp", "40", "--seed", "1", "--quiet", "--forest-blend"]
    out = tmp_path / "train"
    result = CliRunner().invoke(cli, [str(a) for a in ["train", *common, "--output-dir", out]])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "sequence_groups.json").read_text())
    blend = report["forest_blend"]
    weight = blend["weight"]
    assert weight in BLEND_WEIGHTS and len(blend["grid"]) == len(BLEND_WEIGHTS)
    assert blend["grid"][0]["auroc"] == pytest.approx(report["out_of_fold_scores"]["auroc"])  # weight 0 = model
    assert max(r["auroc"] for r in blend["grid"]) == pytest.approx(
        next(r["auroc"] for r in blend["grid"] if r["forest_weight"] == weight))
    _, info = load_predictor(out / "checkpoints" / "best_model.pt")
    assert info.forest_weight == weight
    bundle = load_forest(out / "forest.joblib")
    assert bundle["classifier"] and bundle["metadata_column"] == "disease"
    from aam.workflows.inspect import format_card, model_card

    assert f"forest blend   weight {weight:.2f}" in format_card(model_card(out / "checkpoints" / "best_model.pt"))

    columns = ["prob_CD", "prob_control"]
    frames = {}
    for name, extra in {"model": [], "auto": ["--forest", out / "forest.joblib"],
                        "fixed": ["--forest", out / "forest.joblib", "--forest-weight", "0.3"]}.items():
        result = CliRunner().invoke(cli, [str(a) for a in ["predict", "--model", out / "checkpoints" / "best_model.pt",
                                                           "--table", table, "--output", tmp_path / f"{name}.tsv",
                                                           *extra]])
        assert result.exit_code == 0, result.output
        frames[name] = pd.read_csv(tmp_path / f"{name}.tsv", sep="\t")
    trees = predict_forest(bundle, str(table), frames["model"]["sample_id"].tolist())[columns].to_numpy()
    model = frames["model"][columns].to_numpy()
    np.testing.assert_allclose(frames["auto"][columns], (1 - weight) * model + weight * trees, atol=1e-6)
    np.testing.assert_allclose(frames["fixed"][columns], 0.7 * model + 0.3 * trees, atol=1e-6)

    result = CliRunner().invoke(cli, [str(a) for a in ["predict", "--model", out / "checkpoints" / "best_model.pt",
                                                       "--table", table, "--output", tmp_path / "x.tsv", "--forest",
                                                       out / "forest.joblib", "--forest-weight", "2"]])
    assert result.exit_code == 2 and "--forest-weight" in result.output

    cv = tmp_path / "cv"
    result = CliRunner().invoke(cli, [str(a) for a in ["cross-validate", *common, "--n-folds", "3",
                                                       "--rf-n-estimators", "20", "--output-dir", cv]])
    assert result.exit_code == 0, result.output
    fold = pd.read_csv(cv / "folds" / "fold0" / "predictions.tsv", sep="\t")
    assert {"aam_prediction", "forest_prediction"} <= set(fold.columns)  # each fold's own forest and weight


def test_forest_blend_needs_the_sequence_groups_model(tmp_path):
    table, metadata = _classification_data(tmp_path)
    result = CliRunner().invoke(cli, [str(a) for a in [
        "train", "--table", table, "--metadata", metadata, "--metadata-column", "disease", "--classifier",
        "--max-bp", "40", "--forest-blend", "--output-dir", tmp_path / "out", "--quiet"]])
    assert result.exit_code == 2 and "--forest-blend" in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("flag", "field", "option", "value"), [("--no-group-centred", "centred", "group_centred", False),
                                                               ("--no-group-diversity", "diversity", "group_diversity",
                                                                False)])
def test_cli_feature_flags_are_recorded_and_predict_reads_the_same_features(tmp_path, flag, field, option, value):
    table, metadata = _classification_data(tmp_path)
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, [str(a) for a in [
        "train", "--table", table, "--metadata", metadata, "--metadata-column", "disease", "--classifier",
        "--group-column", "subject", "--model-type", "sequence-groups", "--sequence-groups", "2",
        "--group-clusterings", "1", "--group-readout", "boosted", flag, "--max-bp", "40",
        "--seed", "1", "--quiet", "--output-dir", out]])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["model_config"][field] is value and config["options"][option] is value
    model, _ = load_predictor(out / "checkpoints" / "best_model.pt")
    assert getattr(model.config, field) is value
    _predicts_its_training_labels(out, table, metadata, tmp_path / "predictions.tsv", batch_size=7)
    refused = CliRunner().invoke(cli, ["train", "--table", table, "--metadata", metadata, "--metadata-column",
                                       "disease", flag, "--output-dir", str(tmp_path / "x")])
    assert refused.exit_code == 2 and "is an option of --model-type sequence-groups" in refused.output


def test_cli_boosted_readout_loss_on_regression_is_recorded_and_refused_elsewhere(tmp_path):
    table, metadata = _regression_data(tmp_path)
    common = ["train", "--table", table, "--metadata", metadata, "--metadata-column", "share",
              "--group-column", "subject", "--model-type", "sequence-groups", "--sequence-groups", "2,4",
              "--group-clusterings", "1", "--group-readout", "boosted", "--max-bp", "40", "--quiet"]
    for flags, loss in (([], "squared_error"), (["--group-boosted-loss", "absolute-error"], "absolute_error")):
        out = tmp_path / loss
        result = CliRunner().invoke(cli, [str(a) for a in [*common, *flags, "--output-dir", out]])
        assert result.exit_code == 0, result.output
        config = json.loads((out / "config.json").read_text())
        assert config["model_config"]["boosted_loss"] == loss
        model, _ = load_predictor(out / "checkpoints" / "best_model.pt")
        assert model.trees.loss == loss
    for flags in (["--group-readout", "forest"], ["--classifier"]):  # the option only concerns boosted regression
        refused = CliRunner().invoke(cli, [str(a) for a in [*common, "--group-boosted-loss", "absolute-error", *flags,
                                                           "--output-dir", tmp_path / "refused"]])
        assert refused.exit_code == 2 and "--group-boosted-loss: is the loss of the boosted read-out" in refused.output
        assert "Traceback" not in refused.output and not (tmp_path / "refused" / "checkpoints").exists()


def test_cli_no_group_positions_describes_asvs_by_k_mers_only(tmp_path):
    table, metadata = _classification_data(tmp_path)
    out = tmp_path / "kmers"
    result = CliRunner().invoke(cli, [str(a) for a in [
        "train", "--table", table, "--metadata", metadata, "--metadata-column", "disease", "--classifier",
        "--group-column", "subject", "--model-type", "sequence-groups", "--sequence-groups", "2",
        "--group-clusterings", "1", "--no-group-positions", "--max-bp", "40", "--seed", "1", "--quiet",
        "--output-dir", out]])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["model_config"]["positions"] == 0 and config["options"]["group_positions"] is False
    assert config["model_config"]["diversity"] is True  # the default since session 20
    model, _ = load_predictor(out / "checkpoints" / "best_model.pt")
    assert model.centres.shape[1] == 4 ** 4


def test_choose_weights_over_several_baselines_follows_the_best_weighting():
    from aam.workflows.forest_blend import blend_many, choose_weights, weightings

    assert len(weightings(3)) == 66 and all(abs(sum(w) - 1) < 1e-9 for w in weightings(3))
    rng = np.random.default_rng(0)
    y = rng.normal(size=60)
    frame = lambda values: pd.DataFrame({"sample_id": [f"s{i}" for i in range(60)], "prediction": values,  # noqa: E731
                                         "actual": y})
    noisy, exact, other = frame(y + rng.normal(size=60)), frame(y), frame(y + rng.normal(size=60))
    choice = choose_weights(noisy, {"forest": other, "clr-linear": exact}, False)
    assert choice.weight == 1.0 and choice.baseline_weights == {"forest": 0.0, "clr-linear": 1.0}
    assert len(choice.grid) == 66 and choice.mode == "inner-cv"
    equal = choose_weights(noisy, {"forest": other, "clr-linear": exact}, False, mode="equal")
    assert equal.weight == pytest.approx(2 / 3, abs=0.01) and equal.baseline_weights == pytest.approx(
        {"forest": 0.5, "clr-linear": 0.5})
    mixed = blend_many([noisy, other, exact], [0.2, 0.3, 0.5], False)["prediction"]
    np.testing.assert_allclose(mixed, 0.2 * noisy["prediction"] + 0.3 * other["prediction"] + 0.5 * y)


def test_blend_of_several_baselines_is_saved_as_one_model_and_used_by_predict(tmp_path):
    from aam.baselines.estimators import BaselineBlend
    from aam.baselines.store import load_forest, predict_forest

    table, metadata = _classification_data(tmp_path)
    common = ["--table", table, "--metadata", metadata, "--metadata-column", "disease", "--classifier",
              "--group-column", "subject", "--model-type", "sequence-groups", "--sequence-groups", "2,4",
              "--group-clusterings", "2", "--max-bp", "40", "--seed", "1", "--quiet",
              "--blend-baselines", "forest,clr-linear", "--blend-weights", "equal"]
    out = tmp_path / "train"
    result = CliRunner().invoke(cli, [str(a) for a in ["train", *common, "--output-dir", out]])
    assert result.exit_code == 0, result.output
    blend = json.loads((out / "sequence_groups.json").read_text())["forest_blend"]
    assert blend["mode"] == "equal" and blend["weight"] == pytest.approx(0.67, abs=0.01)
    bundle = load_forest(out / "forest.joblib")
    assert bundle["baseline"] == "forest+clr-linear" and isinstance(bundle["model"], BaselineBlend)
    members = bundle["model"].members
    ids = pd.read_csv(metadata, sep="\t", dtype=str)["sample_id"].tolist()
    trees = predict_forest(bundle, str(table), ids)
    parts = [predict_forest({**bundle, "model": members[n]}, str(table), ids) for n in ("forest", "clr-linear")]
    np.testing.assert_allclose(trees["prob_CD"], 0.5 * parts[0]["prob_CD"] + 0.5 * parts[1]["prob_CD"], atol=1e-9)
    for flag in (["--blend-baselines", "forest,lasso"], ["--blend-weights", "best"]):
        result = CliRunner().invoke(cli, [str(a) for a in ["train", *common, *flag, "--output-dir", tmp_path / "x"]])
        assert result.exit_code == 2 and flag[0] in result.output


def test_recommended_regression_recipe_trains_as_one_model_and_predicts_the_equal_average(tmp_path):
    """The README's regression recipe (session 22): the boosted read-out fitting the absolute error, averaged
    with equal weights with the boosted baseline (which fits the absolute error too); `aam predict --forest`
    gives exactly the mean of the model alone and the saved baseline."""
    from aam.baselines.store import load_forest, predict_forest

    table, metadata = _regression_data(tmp_path)
    out = tmp_path / "train"
    result = CliRunner().invoke(cli, [str(a) for a in [
        "train", "--table", table, "--metadata", metadata, "--metadata-column", "share", "--group-column",
        "subject", "--model-type", "sequence-groups", "--sequence-groups", "2,4", "--group-clusterings", "1",
        "--group-readout", "boosted", "--group-boosted-loss", "absolute-error", "--blend-baselines", "boosted",
        "--blend-weights", "equal", "--max-bp", "40", "--seed", "3", "--quiet", "--output-dir", out]])
    assert result.exit_code == 0, result.output
    bundle = load_forest(out / "forest.joblib")
    assert bundle["model"].steps[-1][1].loss == "absolute_error"  # the baseline's regression loss
    model = out / "checkpoints" / "best_model.pt"
    alone, pair = tmp_path / "alone.tsv", tmp_path / "pair.tsv"
    for args, path in (([], alone), (["--forest", out / "forest.joblib"], pair)):
        done = CliRunner().invoke(cli, [str(a) for a in ["predict", "--model", model, "--table", table,
                                                         "--output", path, *args]])
        assert done.exit_code == 0, done.output
    alone, pair = (pd.read_csv(p, sep="\t", dtype={"sample_id": str}).set_index("sample_id") for p in (alone, pair))
    trees = predict_forest(bundle, str(table), list(pair.index)).set_index("sample_id")
    np.testing.assert_allclose(pair["prediction"], 0.5 * alone.loc[pair.index, "prediction"]
                               + 0.5 * trees.loc[pair.index, "prediction"], rtol=1e-5, atol=1e-6)
