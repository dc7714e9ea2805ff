"""Classical baselines: the models a microbiome paper would put beside AAM, fitted on the same samples.

Each baseline is a scikit-learn estimator that reads a raw count matrix [samples, ASVs] (sparse or dense) and
turns it into its own features in its first step, so a fitted baseline predicts any table aligned to its ASV
columns. The names are those of ``aam rf-baseline --baseline`` and ``aam cross-validate --baselines``
(``aam.training.registries.BASELINES``):

- ``forest``: a random forest on relative abundances (``FOREST_TREES`` trees, ``FOREST_MAX_FEATURES`` features
  per split: 500 and sqrt, the reference's baseline).
- ``clr-linear``: L2-penalised logistic regression (classification) or ridge regression on centred log-ratio
  abundances (pseudo-count 0.5 reads), features optionally standardised; the penalty and the standardisation
  are chosen by inner cross-validation over the training samples, grouped like the outer folds when groups are
  given (SIAMCAT's recipe, with an L2 instead of a LASSO penalty).
- ``boosted``: scikit-learn's histogram gradient-boosted trees on relative abundances, with settings for small
  cohorts (shallow trees, a slow learning rate, feature subsampling per split); regression fits the absolute
  error (the conditional median) since session 21.
- ``clr-linear-clades`` and ``boosted-clades`` (session 24): the same two models reading, beside the ASVs, the
  log shares of the clades of a phylogeny of the ASVs (:class:`CladeShares`; ``--tree``), the classical
  counterpart of the sequence-groups model's ``--group-clades``.

Their settings were fixed by the rule in ``_design_plan/real_suite.md``, on the real tasks of
``benchmarks/real_suite.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator, TransformerMixin

from aam.baselines import BOOSTED_BASELINE_LOSS, BOOSTED_REGRESSION_LOSSES, FOREST_MAX_FEATURES, FOREST_TREES
from aam.errors import AamError

CLR_PSEUDO_COUNT = 0.5
LOGISTIC_C = tuple(float(c) for c in np.logspace(-4, 2, 13))
RIDGE_ALPHA = tuple(float(a) for a in np.logspace(-1, 5, 13))
INNER_FOLDS = 5
BOOSTED_DEFAULTS = {"learning_rate": 0.05, "max_iter": 300, "max_leaf_nodes": 8, "min_samples_leaf": 5,
                    "l2_regularization": 1.0, "max_features": 0.3, "early_stopping": False}


def relative_abundance(counts) -> sparse.csr_matrix:
    """Rows of ``counts`` [N, F] divided by their sums (empty rows stay zero)."""
    counts = sparse.csr_matrix(counts, dtype=np.float64)
    totals = np.asarray(counts.sum(axis=1)).ravel()
    scale = np.divide(1.0, totals, out=np.zeros_like(totals), where=totals > 0)
    return sparse.csr_matrix(sparse.diags(scale) @ counts)


def centred_log_ratio(counts) -> np.ndarray:
    """[N, F] counts -> dense centred log-ratios of ``counts + 0.5``: each row's logs minus their mean."""
    dense = counts.toarray() if sparse.issparse(counts) else np.asarray(counts, dtype=np.float64)
    logs = np.log(dense.astype(np.float64) + CLR_PSEUDO_COUNT)
    return logs - logs.mean(axis=1, keepdims=True)


def dense_relative_abundance(counts) -> np.ndarray:
    return relative_abundance(counts).toarray()


def inner_splitter(classifier: bool, groups: np.ndarray | None, seed: int, targets: np.ndarray):
    """The inner folds of a penalty search: stratified for classifiers, grouped when ``groups`` are given (and
    hold at least two groups); fewer than five when the rarest class or the groups are fewer."""
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

    n_splits = INNER_FOLDS
    grouped = groups is not None and len(np.unique(groups)) >= 2
    if grouped:
        n_splits = min(n_splits, len(np.unique(groups)))
    if classifier:
        n_splits = max(2, min(n_splits, int(np.unique(targets, return_counts=True)[1].min())))
        return (StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed) if grouped
                else StratifiedKFold(n_splits, shuffle=True, random_state=seed))
    return GroupKFold(n_splits, shuffle=True, random_state=seed) if grouped else KFold(n_splits, shuffle=True,
                                                                                      random_state=seed)


@dataclass(frozen=True)
class ClassicalBaseline:
    """A named baseline: ``build(classifier, seed, n_jobs)`` gives an unfitted scikit-learn estimator on counts;
    ``searched`` baselines choose settings by inner cross-validation (``fit`` passes the groups)."""

    name: str
    summary: str
    build: Callable[..., object]
    searched: bool = False
    uses_tree: bool = False  # ``build`` takes the tree's ``incidence`` over the count columns

    def fit(self, counts, targets: np.ndarray, *, classifier: bool, seed: int, groups: np.ndarray | None = None,
            n_jobs: int = -1, incidence: sparse.spmatrix | None = None, **settings):
        """The estimator fitted on ``counts`` [N, F] and ``targets`` [N] (class labels or floats); ``settings``
        go to ``build`` (the forest's ``n_estimators`` and ``max_features``); ``incidence`` [F, M]: the tree's
        branches over the count columns (:func:`aam.unifrac.tree.tree_incidence`), read by the ``uses_tree``
        baselines only."""
        targets = np.asarray(targets)
        if self.uses_tree:
            if incidence is None:
                raise AamError(f"the {self.name} baseline reads the clades of a phylogeny of the ASVs",
                               source="--tree", hint="give --tree FILE.nwk (e.g. QIIME 2's rooted tree)")
            settings["incidence"] = incidence
        estimator = self.build(classifier=classifier, seed=seed, n_jobs=n_jobs, **settings)
        if self.searched:
            splitter = inner_splitter(classifier, groups, seed, targets)
            estimator.set_params(cv=list(splitter.split(counts, targets, groups)))
        return estimator.fit(counts, targets)


def forest_trees(*, classifier: bool, seed: int, n_jobs: int = -1, n_estimators: int = FOREST_TREES,
                 max_features=FOREST_MAX_FEATURES):
    """The random forest of the ``forest`` baseline (its settings, unfitted), on whatever features it is given:
    the baseline's relative abundances, or the sequence groups' forest read-out."""
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    make = RandomForestClassifier if classifier else RandomForestRegressor
    return make(n_estimators=n_estimators, max_features=max_features, random_state=seed % 2**32, n_jobs=n_jobs)


def _forest(*, classifier: bool, seed: int, n_jobs: int, n_estimators: int = FOREST_TREES,
            max_features=FOREST_MAX_FEATURES):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    return make_pipeline(FunctionTransformer(relative_abundance, accept_sparse=True),
                         forest_trees(classifier=classifier, seed=seed, n_jobs=n_jobs, n_estimators=n_estimators,
                                      max_features=max_features))


class PenaltySearch(BaseEstimator):
    """The ``clr-linear`` baselines' inner search: the penalty (``LOGISTIC_C`` or ``RIDGE_ALPHA``) and whether to
    standardise the features, chosen by the mean loss over the inner folds ``cv`` (log-loss against every class
    of the training targets, or absolute error), then refitted on all samples: the grid and the choice of
    scikit-learn's ``GridSearchCV`` (first of equal means, penalties outer, scaling inner). ``features``: the
    first step on counts (CLR, or CLR beside clade log shares), fitted once per inner fold and scaling (not once
    per penalty, as the grid search refitted it).

    Faster than the grid search it replaced (session 25): the unstandardised branch centres its columns (the same
    optimum, since the intercept is not penalised, and far fewer lbfgs iterations on uncentred clade log shares);
    a logistic model walks its penalties from the strongest
    to the weakest, each fit starting from the last one's weights (lbfgs's warm start; near the chosen penalty
    the inner losses agree with cold fits to about 1e-4, the refit is cold), and the inner folds run on
    ``n_jobs`` processes, one job per inner fold and scaling (the same result for any ``n_jobs``)."""

    def __init__(self, features=None, classifier: bool = True, cv=None, n_jobs: int = 1):
        self.features = features
        self.classifier = classifier
        self.cv = cv
        self.n_jobs = n_jobs

    def _model(self, penalty: float, warm: bool = False):
        from sklearn.linear_model import LogisticRegression, Ridge

        if self.classifier:
            return LogisticRegression(C=penalty, max_iter=5000, warm_start=warm)
        return Ridge(alpha=penalty)

    def _pipeline(self, scale: bool, penalty: float):
        from sklearn.base import clone
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        return Pipeline([("features", clone(self.features)), ("scale", StandardScaler(with_std=scale)),
                         ("model", self._model(penalty))])

    def _fold_losses(self, counts, targets: np.ndarray, train: np.ndarray, test: np.ndarray, scale: bool,
                     labels: np.ndarray | None) -> np.ndarray:
        """[G] inner losses of one fold and scaling along the grid."""
        from sklearn.base import clone
        from sklearn.metrics import log_loss, mean_absolute_error
        from sklearn.preprocessing import StandardScaler

        step = clone(self.features).fit(counts[train], targets[train])
        fitted, held = step.transform(counts[train]), step.transform(counts[test])
        scaler = StandardScaler(with_std=scale).fit(fitted)
        fitted, held = scaler.transform(fitted), scaler.transform(held)
        model, losses = self._model(self.grid[0], warm=True), []
        for penalty in self.grid:  # C rises (weaker penalty) along LOGISTIC_C: each fit starts from the last
            model.set_params(**{"C" if self.classifier else "alpha": penalty}).fit(fitted, targets[train])
            losses.append(log_loss(targets[test], model.predict_proba(held), labels=labels) if self.classifier
                          else mean_absolute_error(targets[test], model.predict(held)))
        return np.asarray(losses)

    @property
    def grid(self) -> tuple[float, ...]:
        return LOGISTIC_C if self.classifier else RIDGE_ALPHA

    def fit(self, counts, targets) -> PenaltySearch:
        import warnings

        from joblib import Parallel, delayed
        from sklearn.exceptions import ConvergenceWarning

        targets = np.asarray(targets)
        labels = np.unique(targets) if self.classifier else None
        jobs = [(train, test, scale) for train, test in self.cv for scale in (False, True)]
        with warnings.catch_warnings():  # the weakest penalties stop at max_iter on separable folds
            warnings.simplefilter("ignore", ConvergenceWarning)
            losses = Parallel(n_jobs=self.n_jobs)(delayed(self._fold_losses)(counts, targets, train, test, scale,
                                                                             labels) for train, test, scale in jobs)
        self.inner_losses_ = np.stack(losses).reshape(len(self.cv), 2, -1).mean(axis=0)  # [scaled?, G]
        best = int(np.argmin(self.inner_losses_.T.ravel()))  # GridSearchCV's order: penalty outer, scaling inner
        penalty, scale = self.grid[best // 2], bool(best % 2)
        self.best_params_ = {"penalty": penalty, "scale": scale}
        self.best_estimator_ = self._pipeline(scale, penalty).fit(counts, targets)
        if self.classifier:
            self.classes_ = self.best_estimator_.classes_
        return self

    def predict(self, counts) -> np.ndarray:
        return self.best_estimator_.predict(counts)

    def predict_proba(self, counts) -> np.ndarray:
        return self.best_estimator_.predict_proba(counts)


def _clr_linear(*, classifier: bool, seed: int, n_jobs: int):
    from sklearn.preprocessing import FunctionTransformer

    return PenaltySearch(FunctionTransformer(centred_log_ratio, accept_sparse=True), classifier, n_jobs=n_jobs)


def boosted_trees(*, classifier: bool, seed: int, loss: str = "squared_error"):
    """The gradient-boosted trees of the ``boosted`` baseline (its settings, unfitted), on whatever features
    they are given: the baseline's relative abundances, or the sequence groups' boosted read-out. ``loss``: the
    regression loss (one of ``BOOSTED_REGRESSION_LOSSES``); classifiers fit the log-loss."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    if classifier:
        return HistGradientBoostingClassifier(random_state=seed % 2**32, **BOOSTED_DEFAULTS)
    if loss not in BOOSTED_REGRESSION_LOSSES:
        raise AamError(f"unknown regression loss {loss!r} for boosted trees",
                       hint=f"use one of {', '.join(BOOSTED_REGRESSION_LOSSES)}")
    return HistGradientBoostingRegressor(random_state=seed % 2**32, loss=loss, **BOOSTED_DEFAULTS)


def _boosted(*, classifier: bool, seed: int, n_jobs: int):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    return make_pipeline(FunctionTransformer(dense_relative_abundance, accept_sparse=True),
                         boosted_trees(classifier=classifier, seed=seed, loss=BOOSTED_BASELINE_LOSS))


CLADE_PSEUDO_SHARE = 1e-4  # added to a clade's share before the log (the sequence-groups model's pseudo_share)


class CladeShares(TransformerMixin, BaseEstimator):
    """The first step of a clade-aware baseline: [N, F] counts -> the ASV abundances the baseline reads
    (``abundance``: relative or CLR) beside the log shares of the tree's clades. ``fit`` keeps the clades as
    ``--group-clades`` keeps them (two or more ASVs, held by 5% of the fitted samples, each set of ASVs once:
    :func:`aam.data.clades.select_clades`), so an inner cross-validation chooses them on its own
    training folds; an ASV the fitted samples lack still counts in every clade of the tree above it."""

    def __init__(self, incidence: sparse.spmatrix | None = None, abundance: str = "relative"):
        self.incidence = incidence
        self.abundance = abundance

    def fit(self, counts, targets=None) -> CladeShares:
        from aam.data.clades import select_clades

        self.membership_ = sparse.csr_matrix(select_clades(self.incidence, sparse.csr_matrix(counts)))
        return self

    def transform(self, counts) -> np.ndarray:
        shares = relative_abundance(counts)
        logs = np.log((shares @ self.membership_).toarray() + CLADE_PSEUDO_SHARE)
        base = shares.toarray() if self.abundance == "relative" else centred_log_ratio(counts)
        return np.hstack([base, logs])


def _clr_linear_clades(*, classifier: bool, seed: int, n_jobs: int, incidence: sparse.spmatrix):
    return PenaltySearch(CladeShares(incidence, "clr"), classifier, n_jobs=n_jobs)


def _boosted_clades(*, classifier: bool, seed: int, n_jobs: int, incidence: sparse.spmatrix):
    from sklearn.pipeline import Pipeline

    return Pipeline([("clades", CladeShares(incidence, "relative")),
                     ("model", boosted_trees(classifier=classifier, seed=seed, loss=BOOSTED_BASELINE_LOSS))])


FOREST = ClassicalBaseline("forest", "random forest on relative abundances", _forest)
CLR_LINEAR = ClassicalBaseline("clr-linear", "L2 logistic / ridge regression on CLR abundances, penalty by inner CV",
                               _clr_linear, searched=True)
BOOSTED = ClassicalBaseline("boosted", "histogram gradient-boosted trees on relative abundances", _boosted)
CLR_LINEAR_CLADES = ClassicalBaseline("clr-linear-clades", "clr-linear with the log shares of the tree's clades",
                                      _clr_linear_clades, searched=True, uses_tree=True)
BOOSTED_CLADES = ClassicalBaseline("boosted-clades", "boosted trees with the log shares of the tree's clades",
                                   _boosted_clades, uses_tree=True)


class BaselineBlend:
    """Fitted baselines averaged with fixed weights (they sum to 1): an estimator on counts like each of them,
    saved as one file for ``aam predict --forest``. Its members were fitted on the same samples, so they share
    ``classes_``."""

    def __init__(self, members: dict[str, object], weights: dict[str, float], classifier: bool):
        total = sum(weights.values())
        self.members = dict(members)
        self.weights = {name: weights[name] / total for name in members}
        self.classifier = classifier
        if classifier:
            self.classes_ = next(iter(members.values())).classes_

    def predict_proba(self, counts) -> np.ndarray:
        return sum(w * self.members[name].predict_proba(counts) for name, w in self.weights.items())

    def predict(self, counts) -> np.ndarray:
        if self.classifier:
            return self.classes_[self.predict_proba(counts).argmax(1)]
        return sum(w * np.asarray(self.members[name].predict(counts), dtype=np.float64)
                   for name, w in self.weights.items())


def parse_max_features(value: str | float | int | None):
    """sklearn's ``max_features`` from a CLI string: 'sqrt', 'log2', 'none', a fraction or a count."""
    if value is None or isinstance(value, int | float):
        return value
    text = str(value).strip().lower()
    if text in ("sqrt", "log2"):
        return text
    if text in ("none", "all", "1.0"):
        return None
    try:
        number = float(text)
    except ValueError:
        raise AamError(f"cannot parse {value!r}", source="--max-features",
                       hint="use sqrt, log2, none, a fraction in (0, 1] or a feature count") from None
    return int(number) if number.is_integer() and number > 1 else number
