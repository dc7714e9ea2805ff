"""The classical baselines (forest, clr-linear, boosted): features against references, the grouped inner
penalty search, learning a planted signal, and saved baselines predicting as fitted."""

from __future__ import annotations

import joblib
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import sparse
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import mean_absolute_error, roc_auc_score

from aam.baselines import BASELINES
from aam.baselines import estimators as baselines
from aam.cli import cli


def planted(n: int = 120, features: int = 40, seed: int = 0):
    """Counts whose ASV 0 share carries the label (classification) and the target (regression); subjects of 4."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n)
    weights = rng.dirichlet(np.ones(features), n)
    weights[:, 0] = np.where(label == 1, 0.3, 0.02) * rng.uniform(0.7, 1.3, n)
    weights /= weights.sum(1, keepdims=True)
    counts = np.stack([rng.multinomial(1000, w) for w in weights])
    target = 10 * weights[:, 0] + rng.normal(0, 0.1, n)
    return sparse.csr_matrix(counts), np.where(label == 1, "sick", "well"), target, np.arange(n) // 4


def test_feature_transforms_match_their_definitions():
    counts = np.array([[0, 3, 7], [5, 5, 0], [0, 0, 0]])
    logs = np.log(counts + 0.5)
    np.testing.assert_allclose(baselines.centred_log_ratio(sparse.csr_matrix(counts)),
                               logs - logs.mean(1, keepdims=True))
    np.testing.assert_allclose(baselines.centred_log_ratio(counts).sum(1), 0.0, atol=1e-12)
    np.testing.assert_allclose(baselines.relative_abundance(counts).toarray(),
                               [[0, 0.3, 0.7], [0.5, 0.5, 0], [0, 0, 0]])


@pytest.mark.parametrize("classifier", [True, False])
def test_inner_folds_keep_each_group_on_one_side(classifier):
    counts, labels, target, groups = planted()
    y = labels if classifier else target
    splitter = baselines.inner_splitter(classifier, groups, 0, y)
    folds = list(splitter.split(counts, y, groups))
    assert len(folds) == baselines.INNER_FOLDS
    for train, test in folds:
        assert set(groups[train]).isdisjoint(groups[test])
    assert baselines.inner_splitter(classifier, groups[:8], 0, y[:8]).get_n_splits() == 2  # two groups only


@pytest.mark.parametrize("classifier", [True, False])
def test_clr_linear_refits_the_penalty_its_inner_search_chose(classifier):
    counts, labels, target, groups = planted()
    y = labels if classifier else target
    fitted = BASELINES["clr-linear"].fit(counts, y, classifier=classifier, seed=1, groups=groups)
    chosen = fitted.best_params_["penalty"]
    assert chosen in (baselines.LOGISTIC_C if classifier else baselines.RIDGE_ALPHA)
    assert fitted.inner_losses_.shape == (2, len(baselines.LOGISTIC_C if classifier else baselines.RIDGE_ALPHA))
    assert np.isfinite(fitted.inner_losses_).all()
    assert fitted.inner_losses_[int(fitted.best_params_["scale"])].min() == fitted.inner_losses_.min()
    for train, test in fitted.cv:  # the search's folds are grouped
        assert set(groups[train]).isdisjoint(groups[test])
    features = baselines.centred_log_ratio(counts)  # the reference: the same model fitted by hand
    features = features - features.mean(0)  # centred columns: the same optimum (the intercept is not penalised)
    if fitted.best_params_["scale"]:
        features = features / np.where(features.std(0) > 0, features.std(0), 1.0)
    reference = (LogisticRegression(C=chosen, max_iter=5000) if classifier else Ridge(alpha=chosen)).fit(features, y)
    ours = fitted.predict_proba(counts)[:, 1] if classifier else fitted.predict(counts)
    theirs = reference.predict_proba(features)[:, 1] if classifier else reference.predict(features)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("classifier", [True, False])
def test_penalty_search_agrees_with_a_grid_search_of_the_same_pipeline(classifier):
    """scikit-learn's GridSearchCV over the uncentred / standardised pipeline and the same inner folds: the same
    inner losses (ridge exactly; the warm-started logistic path to lbfgs's tolerance) and the same choice."""
    from sklearn.metrics import log_loss, make_scorer
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    counts, labels, target, groups = planted(seed=4)
    flip = np.random.default_rng(4).random(len(labels)) < 0.3  # a noisy task: the best penalty is inside the grid
    labels = np.where(flip, np.where(labels == "sick", "well", "sick"), labels)
    y = labels if classifier else target
    ours = BASELINES["clr-linear"].fit(counts, y, classifier=classifier, seed=0, groups=groups, n_jobs=1)
    if classifier:
        model, grid = LogisticRegression(max_iter=5000), {"model__C": baselines.LOGISTIC_C}
        scoring = make_scorer(log_loss, greater_is_better=False, response_method="predict_proba", labels=["sick", "well"])
    else:
        model, grid, scoring = Ridge(), {"model__alpha": baselines.RIDGE_ALPHA}, "neg_mean_absolute_error"
    pipeline = Pipeline([("clr", FunctionTransformer(baselines.centred_log_ratio, accept_sparse=True)),
                         ("scale", "passthrough"), ("model", model)])
    search = GridSearchCV(pipeline, {**grid, "scale": ["passthrough", StandardScaler()]}, scoring=scoring,
                          cv=ours.cv).fit(counts, y)
    theirs = -search.cv_results_["mean_test_score"].reshape(-1, 2).T  # [scaled?, penalty]
    np.testing.assert_allclose(ours.inner_losses_, theirs, rtol=1e-2 if classifier else 1e-10, atol=1e-12)
    best = theirs <= theirs.min() + 0.05  # near the choice the two agree far closer
    np.testing.assert_allclose(ours.inner_losses_[best], theirs[best], rtol=1e-4 if classifier else 1e-10)
    assert ours.best_params_["penalty"] == next(iter(search.best_params_.values()))
    assert ours.best_params_["scale"] == (search.best_params_["scale"] != "passthrough")


def test_penalty_search_gives_the_same_model_on_any_number_of_processes():
    counts, labels, target, groups = planted(seed=2)
    one = BASELINES["clr-linear"].fit(counts, labels, classifier=True, seed=0, groups=groups, n_jobs=1)
    two = BASELINES["clr-linear"].fit(counts, labels, classifier=True, seed=0, groups=groups, n_jobs=2)
    np.testing.assert_array_equal(one.inner_losses_, two.inner_losses_)
    np.testing.assert_array_equal(one.predict_proba(counts), two.predict_proba(counts))


@pytest.mark.parametrize("name", ["forest", "clr-linear", "boosted"])
def test_each_baseline_learns_a_planted_signal(name):
    counts, labels, target, groups = planted(200)
    train, test = np.arange(200) < 140, np.arange(200) >= 140
    settings = {"n_estimators": 50} if name == "forest" else {}
    method = BASELINES[name]
    model = method.fit(counts[train], labels[train], classifier=True, seed=0, groups=groups[train], n_jobs=1,
                       **settings)
    sick = list(model.classes_).index("sick")
    assert roc_auc_score(labels[test] == "sick", model.predict_proba(counts[test])[:, sick]) > 0.9
    model = method.fit(counts[train], target[train], classifier=False, seed=0, groups=groups[train], n_jobs=1,
                       **settings)
    baseline_error = mean_absolute_error(target[test], np.full(test.sum(), target[train].mean()))
    assert mean_absolute_error(target[test], model.predict(counts[test])) < 0.6 * baseline_error


def test_boosted_baseline_fits_the_absolute_error_on_regression():
    """Since session 21 (rule 1 on the real-data suite): the conditional median, what the MAE rewards."""
    counts, labels, target, groups = planted(120)
    regression = BASELINES["boosted"].fit(counts, target, classifier=False, seed=0, n_jobs=1)
    assert regression[-1].loss == "absolute_error" == baselines.BOOSTED_BASELINE_LOSS
    from sklearn.ensemble import HistGradientBoostingRegressor

    reference = HistGradientBoostingRegressor(random_state=0, loss="absolute_error", **baselines.BOOSTED_DEFAULTS)
    reference.fit(baselines.dense_relative_abundance(counts), target)
    np.testing.assert_allclose(regression.predict(counts), reference.predict(baselines.dense_relative_abundance(counts)))
    classifier = BASELINES["boosted"].fit(counts, labels, classifier=True, seed=0, n_jobs=1)
    assert classifier[-1].loss in ("log_loss", "auto")


def _write_task(tmp_path, counts, labels):
    import h5py
    from biom import Table

    ids = [f"S{i:03d}" for i in range(counts.shape[0])]
    asvs = ["".join("ACGT"[(i * 7 + j + i // 4) % 4] for j in range(30)) + "ACGT"[i % 4] * 5
            for i in range(counts.shape[1])]
    with h5py.File(tmp_path / "table.biom", "w") as handle:
        Table(counts.T.toarray(), asvs, ids).to_hdf5(handle, "test")
    pd.DataFrame({"sample_id": ids, "label": labels}).to_csv(tmp_path / "meta.tsv", sep="\t", index=False)
    return ids


@pytest.mark.parametrize("name", ["clr-linear", "boosted"])
def test_saved_baseline_predicts_as_fitted_and_blends(tmp_path, name):
    from aam.baselines.store import load_forest, predict_forest

    counts, labels, _, _ = planted(60, 12)
    ids = _write_task(tmp_path, counts, labels)
    result = CliRunner().invoke(cli, [
        "rf-baseline", "--baseline", name, "--table", str(tmp_path / "table.biom"), "--metadata",
        str(tmp_path / "meta.tsv"), "--metadata-column", "label", "--classifier", "--output",
        str(tmp_path / "rf.tsv"), "--save-model", str(tmp_path / "b.joblib"), "--quiet"])
    assert result.exit_code == 0, result.output
    bundle = load_forest(tmp_path / "b.joblib")
    assert bundle["baseline"] == name and bundle["format"] == "aam-baseline-1"
    again = predict_forest(bundle, str(tmp_path / "table.biom"), ids)
    sick = list(bundle["model"].classes_).index("sick")
    np.testing.assert_allclose(again["prob_sick"], bundle["model"].predict_proba(counts)[:, sick], rtol=1e-6)
    written = pd.read_csv(tmp_path / "rf.tsv", sep="\t", dtype={"sample_id": str}).set_index("sample_id")
    np.testing.assert_allclose(written["prob_sick"], again.set_index("sample_id").loc[written.index, "prob_sick"],
                               rtol=1e-4, atol=1e-7)  # the TSV keeps 6 digits


def test_forests_saved_before_baselines_read_counts_still_predict(tmp_path):
    """A bundle of format aam-forest-1 holds a bare forest on relative abundances of the whole table."""
    from sklearn.ensemble import RandomForestClassifier

    from aam.baselines.store import load_forest, predict_forest

    counts, labels, _, _ = planted(60, 12)
    ids = _write_task(tmp_path, counts, labels)
    shares = baselines.relative_abundance(counts)
    forest = RandomForestClassifier(20, random_state=0).fit(shares, labels)
    from aam.data.biom_table import load_table, table_to_csr

    asvs = table_to_csr(load_table(str(tmp_path / "table.biom"))).feature_ids
    joblib.dump({"format": "aam-forest-1", "model": forest, "feature_ids": list(asvs), "classifier": True,
                 "metadata_column": "label"}, tmp_path / "old.joblib")
    frame = predict_forest(load_forest(tmp_path / "old.joblib"), str(tmp_path / "table.biom"), ids)
    np.testing.assert_allclose(frame["prob_sick"], forest.predict_proba(shares)[:, list(forest.classes_).index("sick")])


def test_unknown_baseline_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(cli, ["rf-baseline", "--baseline", "lasso", "--table", "t.biom", "--metadata",
                                      "m.tsv", "--metadata-column", "x", "--output", str(tmp_path / "o.tsv")])
    assert result.exit_code == 2 and "--baseline" in result.output and "Traceback" not in result.output


def _prior(*, classifier: bool, seed: int, n_jobs: int):
    """A toy baseline: the training prior (class shares or the mean), whatever the counts say."""
    from sklearn.dummy import DummyClassifier, DummyRegressor

    return DummyClassifier(strategy="prior") if classifier else DummyRegressor()


def test_a_registered_baseline_runs_in_rf_baseline_and_cross_validate(tmp_path):
    """Adding a baseline is its estimator and one registration: rf-baseline and cross-validate then fit it on
    the same folds, score it and compare AAM against it."""
    BASELINES.register("prior", baselines.ClassicalBaseline("prior", "the training prior", _prior))
    try:
        counts, labels, _, _ = planted(48, 12)
        _write_task(tmp_path, counts, labels)
        common = ["--table", str(tmp_path / "table.biom"), "--metadata", str(tmp_path / "meta.tsv"),
                  "--metadata-column", "label", "--classifier"]
        result = CliRunner().invoke(cli, ["rf-baseline", *common, "--baseline", "prior", "--output",
                                          str(tmp_path / "prior.tsv"), "--quiet"])
        assert result.exit_code == 0, result.output
        written = pd.read_csv(tmp_path / "prior.tsv", sep="\t")
        assert written["prob_sick"].nunique() == 1  # one answer for every sample: the prior
        out = tmp_path / "cv"
        result = CliRunner().invoke(cli, ["cross-validate", *common, "--model-type", "sequence-groups",
                                          "--sequence-groups", "4", "--n-folds", 3, "--baselines", "prior,forest",
                                          "--rf-n-estimators", 20, "--seed", 0, "--no-report", "--output-dir",
                                          str(out), "--quiet"])
        assert result.exit_code == 0, result.output
        comparison = pd.read_csv(out / "comparison.tsv", sep="\t").set_index("fold")
        assert comparison.loc["mean", "prior_auroc"] == pytest.approx(0.5)
        assert {"winner_vs_prior", "winner_vs_forest"} <= set(comparison.columns)
    finally:
        BASELINES.unregister("prior")
