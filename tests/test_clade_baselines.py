"""benchmarks/clade_baselines.py: the clade-aware baselines are the product's baselines plus clade columns (with
no clade column they predict exactly what the product's baselines predict), and the clade features are the log
clade shares chosen on the training rows only."""

from __future__ import annotations

import io

import numpy as np
import pytest
from scipy import sparse
from skbio import TreeNode

from aam.baselines.estimators import BOOSTED, CLR_LINEAR
from aam.unifrac.tree import TreeIncidence


@pytest.fixture(scope="module")
def clades(load_benchmark):
    return load_benchmark("clade_baselines")


def test_clade_features_are_log_shares_of_the_clades_kept_on_the_training_rows(clades):
    tree = TreeNode.read(io.StringIO("((a:1,b:1)x:1,(c:1,(d:1,e:1)y:1)z:1)root;"))
    incidence = TreeIncidence.build(tree, ["a", "b", "c", "d", "e"]).incidence
    counts = sparse.csr_matrix(np.array([[1, 1, 2, 0, 0], [0, 0, 1, 1, 2], [3, 0, 0, 0, 1], [0, 2, 0, 2, 0]],
                                        dtype=float))
    train = np.array([True, True, False, False])  # x, z and y all present in a training sample
    logs = clades.clade_log_shares(counts, incidence, train)
    shares = counts.toarray() / counts.toarray().sum(axis=1, keepdims=True)
    expected = {"x": shares[:, :2].sum(1), "y": shares[:, 3:].sum(1), "z": shares[:, 2:].sum(1)}
    got = sorted(tuple(np.round(col, 9)) for col in np.exp(logs.T) - 1e-4)
    assert got == sorted(tuple(np.round(v, 9)) for v in expected.values())
    # a clade no training row holds is not a feature (prevalence over the training rows only)
    only_first = np.array([True, False, False, False])  # holds x and c (z), not y
    assert clades.clade_log_shares(counts, incidence, only_first).shape[1] == 2


@pytest.mark.parametrize(("method", "product"), [("boosted-clades", BOOSTED), ("clr-linear-clades", CLR_LINEAR)])
@pytest.mark.parametrize("classifier", [True, False])
def test_without_clade_columns_the_baselines_are_the_products(clades, method, product, classifier):
    rng = np.random.default_rng(0)
    counts = rng.poisson(rng.gamma(0.5, 4.0, size=(40, 12))).astype(float)
    targets = np.where(counts[:, 0] > counts[:, 1], "up", "down") if classifier else counts[:, 0] - counts[:, 2]
    groups = np.repeat(np.arange(10), 4)
    ours = clades.baseline(method, counts.shape[1]).fit(counts, targets, classifier=classifier, seed=3,
                                                        groups=groups, n_jobs=1)
    theirs = product.fit(sparse.csr_matrix(counts), targets, classifier=classifier, seed=3, groups=groups, n_jobs=1)
    read = (lambda m: m.predict_proba(counts)) if classifier else (lambda m: m.predict(counts))
    np.testing.assert_allclose(read(ours), read(theirs), rtol=1e-10, atol=1e-12)
    # and the clade columns do reach the model: a target that is one of them is learnt
    extra = np.hstack([counts, rng.normal(size=(40, 1))])
    wide = clades.baseline(method, counts.shape[1]).fit(extra, extra[:, -1] > 0 if classifier else extra[:, -1],
                                                        classifier=classifier, seed=3, groups=groups, n_jobs=1)
    fitted = wide.predict(extra)
    agreement = (fitted == (extra[:, -1] > 0)).mean() if classifier else np.corrcoef(fitted, extra[:, -1])[0, 1]
    assert agreement > 0.9


def _toy(seed: int = 0):
    """A tree of 6 ASVs, counts where ASV f only appears in the last samples, and labels driven by clade x."""
    tree = TreeNode.read(io.StringIO("((a:1,b:1)x:1,(c:1,(d:1,(e:1,f:1)w:1)y:1)z:1)root;"))
    incidence = TreeIncidence.build(tree, list("abcdef")).incidence
    rng = np.random.default_rng(seed)
    counts = rng.poisson(rng.gamma(0.7, 5.0, size=(60, 6))).astype(float)
    counts[:50, 5] = 0  # f: held by test samples only
    counts[:, 2] += 1  # no empty sample
    labels = np.where(counts[:, :2].sum(1) > np.median(counts[:, :2].sum(1)), "x-rich", "x-poor")
    return incidence, counts, labels


@pytest.mark.parametrize("classifier", [True, False])
def test_the_product_boosted_clades_is_the_benchmarks_reading_of_the_clades(clades, classifier):
    from aam.baselines import BASELINES

    incidence, counts, labels = _toy()
    targets = labels if classifier else counts[:, :2].sum(1)
    train = np.arange(60) < 50
    product = BASELINES["boosted-clades"].fit(sparse.csr_matrix(counts[train]), targets[train],
                                              classifier=classifier, seed=1, incidence=incidence)
    features = np.hstack([counts, clades.clade_log_shares(sparse.csr_matrix(counts), incidence, train)])
    script = clades.baseline("boosted-clades", 6).fit(features[train], targets[train], classifier=classifier, seed=1)
    read = (lambda m, x: m.predict_proba(x)) if classifier else (lambda m, x: m.predict(x))
    np.testing.assert_allclose(read(product, sparse.csr_matrix(counts[~train])), read(script, features[~train]),
                               rtol=1e-12, atol=1e-12)
    # the test samples' ASV f (absent from training) counts in the clades above it (w, y, z)
    step = product.named_steps["clades"]
    assert step.membership_.shape == (6, clades.clade_log_shares(sparse.csr_matrix(counts), incidence,
                                                                  train).shape[1])
    assert step.membership_[5].sum() >= 2


def test_rf_baseline_clades_needs_the_tree_and_saves_a_model_that_predicts_alone(synthetic_dir, tmp_path):
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
    written = __import__("pandas").read_csv(out, sep="\t", dtype={"sample_id": str})
    again = predict_forest(load_forest(tmp_path / "model.joblib"), synthetic_dir["table"],
                           list(written["sample_id"]))  # no tree needed to predict
    prob = [c for c in written.columns if c.startswith("prob_")]
    np.testing.assert_allclose(again.set_index("sample_id").loc[written["sample_id"], prob].to_numpy(float),
                               written[prob].to_numpy(float), rtol=1e-4, atol=1e-9)  # the TSV keeps 6 digits


def test_the_cli_list_of_tree_baselines_is_the_estimators_own():
    """``TREE_BASELINES`` (read by the option checks without importing scikit-learn) names exactly the
    baselines whose estimator reads the tree."""
    from aam.baselines import BASELINES, TREE_BASELINES

    assert {name for name in BASELINES.names() if BASELINES[name].uses_tree} == set(TREE_BASELINES)
