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
