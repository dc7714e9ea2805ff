"""The tree-aware baselines (``clr-linear-clades``, ``boosted-clades``): their clade features are the log shares
of the clades kept on the fitted samples, an ASV the fitted samples lack counts in the clades above it, with no
clade they are the plain baselines, and ``aam rf-baseline`` needs the tree to fit but not to predict."""

from __future__ import annotations

import io

import numpy as np
import pytest
from scipy import sparse
from skbio import TreeNode

from aam.baselines import BASELINES, TREE_BASELINES
from aam.baselines.estimators import CLADE_PSEUDO_SHARE, CladeShares, centred_log_ratio
from aam.unifrac.tree import TreeIncidence


def _toy(seed: int = 0, n: int = 60):
    """A tree of 6 ASVs, counts where ASV f only appears in the last samples, and labels driven by clade x."""
    tree = TreeNode.read(io.StringIO("((a:1,b:1)x:1,(c:1,(d:1,(e:1,f:1)w:1)y:1)z:1)root;"))
    incidence = TreeIncidence.build(tree, list("abcdef")).incidence
    rng = np.random.default_rng(seed)
    counts = rng.poisson(rng.gamma(0.7, 5.0, size=(n, 6))).astype(float)
    counts[:50, 5] = 0  # f: held by the last samples only
    counts[:, 2] += 1  # no empty sample
    share = counts[:, :2].sum(1) / counts.sum(1)
    labels = np.where(share > np.median(share), "x-rich", "x-poor")
    return incidence, counts, labels


def test_clade_features_are_log_shares_of_the_clades_kept_on_the_fitted_rows():
    tree = TreeNode.read(io.StringIO("((a:1,b:1)x:1,(c:1,(d:1,e:1)y:1)z:1)root;"))
    incidence = TreeIncidence.build(tree, ["a", "b", "c", "d", "e"]).incidence
    counts = np.array([[1, 1, 2, 0, 0], [0, 0, 1, 1, 2], [3, 0, 0, 0, 1], [0, 2, 0, 2, 0]], dtype=float)
    step = CladeShares(incidence, "relative").fit(sparse.csr_matrix(counts[:2]))  # x, z and y all held
    features = step.transform(sparse.csr_matrix(counts))
    shares = counts / counts.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(features[:, :5], shares)
    expected = {"x": shares[:, :2].sum(1), "y": shares[:, 3:].sum(1), "z": shares[:, 2:].sum(1)}
    got = sorted(tuple(np.round(col, 9)) for col in np.exp(features[:, 5:].T) - CLADE_PSEUDO_SHARE)
    assert got == sorted(tuple(np.round(v, 9)) for v in expected.values())
    clr = CladeShares(incidence, "clr").fit(sparse.csr_matrix(counts[:2])).transform(sparse.csr_matrix(counts))
    np.testing.assert_allclose(clr[:, :5], centred_log_ratio(counts))
    np.testing.assert_allclose(clr[:, 5:], features[:, 5:])
    # a clade no fitted row holds is not a feature (prevalence over the fitted rows only)
    assert CladeShares(incidence).fit(sparse.csr_matrix(counts[:1])).transform(counts).shape[1] == 5 + 2


def test_an_asv_the_fitted_samples_lack_counts_in_the_clades_above_it():
    incidence, counts, labels = _toy()
    fitted = BASELINES["boosted-clades"].fit(sparse.csr_matrix(counts[:50]), labels[:50], classifier=True, seed=1,
                                             incidence=incidence)
    membership = fitted.named_steps["clades"].membership_.toarray()
    assert membership[5].sum() >= 2 and (membership[5] == membership[4]).all()  # f sits with e in w, y, z
    proba = fitted.predict_proba(sparse.csr_matrix(counts[50:]))
    assert proba.shape == (10, 2) and np.isfinite(proba).all()


@pytest.mark.parametrize(("name", "plain"), [("boosted-clades", "boosted"), ("clr-linear-clades", "clr-linear")])
@pytest.mark.parametrize("classifier", [True, False])
def test_with_no_clade_the_tree_baselines_are_the_plain_ones(name, plain, classifier):
    rng = np.random.default_rng(0)
    counts = sparse.csr_matrix(rng.poisson(rng.gamma(0.5, 4.0, size=(40, 12))).astype(float))
    dense = counts.toarray()
    targets = np.where(dense[:, 0] > dense[:, 1], "up", "down") if classifier else dense[:, 0] - dense[:, 2]
    groups = np.repeat(np.arange(10), 4)
    star = sparse.csr_matrix((12, 0))  # a tree without inner branches: no clade
    ours = BASELINES[name].fit(counts, targets, classifier=classifier, seed=3, groups=groups, n_jobs=1,
                               incidence=star)
    theirs = BASELINES[plain].fit(counts, targets, classifier=classifier, seed=3, groups=groups, n_jobs=1)
    read = (lambda m: m.predict_proba(counts)) if classifier else (lambda m: m.predict(counts))
    np.testing.assert_allclose(read(ours), read(theirs), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", TREE_BASELINES)
def test_tree_baselines_learn_a_clade_signal(name):
    incidence, counts, labels = _toy(1, n=240)
    train = np.arange(240) < 180
    model = BASELINES[name].fit(sparse.csr_matrix(counts[train]), labels[train], classifier=True, seed=0, n_jobs=1,
                                incidence=incidence, groups=None)
    assert (model.predict(sparse.csr_matrix(counts[~train])) == labels[~train]).mean() >= 0.85


def test_rf_baseline_clades_needs_the_tree_and_saves_a_model_that_predicts_alone(synthetic_dir, tmp_path):
    import pandas as pd
    from click.testing import CliRunner

    from aam.baselines.store import load_forest, predict_forest
    from aam.cli import cli

    base = ["rf-baseline", "--table", synthetic_dir["table"], "--metadata", synthetic_dir["metadata"],
            "--metadata-column", "label", "--classifier", "--baseline", "clr-linear-clades", "--quiet"]
    refused = CliRunner().invoke(cli, [*base, "--output", str(tmp_path / "no_tree.tsv")])
    assert refused.exit_code == 2 and "--baseline" in refused.output and "--tree" in refused.output
    assert "Traceback" not in refused.output and not (tmp_path / "no_tree.tsv").exists()
    out = tmp_path / "oof.tsv"
    done = CliRunner().invoke(cli, [*base, "--tree", synthetic_dir["tree"], "--output", str(out),
                                    "--save-model", str(tmp_path / "model.joblib")])
    assert done.exit_code == 0, done.output
    written = pd.read_csv(out, sep="\t", dtype={"sample_id": str})
    again = predict_forest(load_forest(tmp_path / "model.joblib"), synthetic_dir["table"],
                           list(written["sample_id"]))  # no tree needed to predict
    prob = [c for c in written.columns if c.startswith("prob_")]
    np.testing.assert_allclose(again.set_index("sample_id").loc[written["sample_id"], prob].to_numpy(float),
                               written[prob].to_numpy(float), rtol=1e-4, atol=1e-9)  # the TSV keeps 6 digits


def test_the_cli_list_of_tree_baselines_is_the_estimators_own():
    """``TREE_BASELINES`` (read by the option checks without importing scikit-learn) names exactly the
    baselines whose estimator reads the tree."""
    assert {name for name in BASELINES.names() if BASELINES[name].uses_tree} == set(TREE_BASELINES)
