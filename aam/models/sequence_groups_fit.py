"""Fitting :class:`~aam.models.sequence_groups.SequenceGroupComposition`: no gradient descent.

1. k-means (scikit-learn) on the profiles (k-mers, and by default positions) of the ASVs present in the
   training samples, ``clusterings`` times per resolution from different starts; the centres become the
   model's groups. The anchors (the training ASVs carried by the most groups, :func:`select_anchors`) add
   their own profiles as centres.
   With a tree, the clades over the training ASVs (:func:`aam.data.clades.select_clades`) add a log share
   each; the training ASVs' profiles describe them.
2. The model's own feature function gives each training sample's centred log group shares; their training
   mean is subtracted. They are not scaled to unit variance: a group whose share barely varies would be
   amplified to weigh like one that does, and the shrinkage would no longer favour broad, stable groups.
3. A shrunk linear model on those features: L2 logistic regression (classifiers) or ridge regression, its
   strength chosen by the pooled score of inner cross-validation over the training samples, grouped by ``groups`` (e.g. subject)
   when given, so the strength chosen is the one that transfers to new people. The chosen model is refitted on
   every training sample and copied into the read-out layer; its inner out-of-fold predictions are the
   honest estimate the run reports. A tree read-out (``boosted``, ``forest``) has nothing to choose: its fixed
   settings are those of the classical baseline of the same name.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import sparse
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.model_selection import (
    GroupKFold,
    KFold,
    StratifiedGroupKFold,
    StratifiedKFold,
    cross_val_predict,
)

from aam.errors import AamError
from aam.models.sequence_groups import ABSENT_CLASS_LOGIT, SequenceGroupComposition, TreeGroupComposition

log = logging.getLogger("aam")

INVERSE_STRENGTHS = (1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0)  # logistic regression's C
RIDGE_STRENGTHS = tuple(float(a) for a in np.logspace(4, -1, 11))  # ridge alpha; both lists strongest first
INNER_FOLDS = 5
ROW_CHUNK = 512  # samples per feature block (the shares are dense [chunk, distinct ASVs])


@dataclass
class SequenceGroupsFit:
    """What the fit chose and how it scored on the inner folds (in model units / class indices)."""

    parameter: str  # "C" or "alpha"
    chosen: float
    grid: list[dict[str, float]]  # one row per strength: its pooled inner out-of-fold score
    scoring: str
    inner_scheme: str
    out_of_fold: np.ndarray | None  # [n, C] class probabilities, or [n] predictions; None: not scored
    n_asvs: int
    group_sizes: dict[int, list[int]] = field(default_factory=dict)  # ASVs per group, per resolution
    splits: list = field(default_factory=list)  # the inner folds: (train, test) index pairs over the samples


def select_anchors(counts: sparse.csr_matrix, groups: np.ndarray | None, limit: int) -> np.ndarray:
    """Indices of up to ``limit`` ASVs of ``counts`` [n, N_asvs] found in at least two groups (samples when
    ``groups`` is None), those in the most groups first (ties: more reads first, then the lower index)."""
    counts = sparse.csr_matrix(counts, dtype=np.float64)
    if groups is None:
        units = counts
    else:
        _, unit_of_row = np.unique(np.asarray(groups).astype(str), return_inverse=True)
        membership = sparse.csr_matrix((np.ones(len(unit_of_row)), (unit_of_row, np.arange(len(unit_of_row)))))
        units = membership @ counts  # [groups, N_asvs] reads per group
    carriers = np.asarray((units > 0).sum(axis=0)).ravel()  # [N_asvs] groups holding each ASV
    reads = np.asarray(counts.sum(axis=0)).ravel()
    order = np.lexsort((np.arange(len(reads)), -reads, -carriers))
    return np.sort(order[carriers[order] >= 2][:max(limit, 0)])


def fit_sequence_groups(model: SequenceGroupComposition, counts: sparse.csr_matrix, tokens: np.ndarray,
                        targets: np.ndarray, groups: np.ndarray | None, seed: int,
                        anchors: np.ndarray | None = None, kmeans_starts: int = 1,
                        inner_score: bool = True, clades: sparse.csr_matrix | None = None) -> SequenceGroupsFit:
    """Fit ``model`` in place on the samples of ``counts`` [n, N_asvs] (``tokens`` [N_asvs, L]) with
    ``targets`` [n] (class indices for a classifier, transformed floats otherwise); ``anchors`` are the ASV
    indices whose profiles head the anchor groups (as many as ``model.config.anchors``); ``kmeans_starts``:
    k-means++ initialisations per clustering (scikit-learn's ``n_init``); ``inner_score`` False: a boosted
    read-out is fitted once, without its inner out-of-fold predictions (the linear read-out needs them to choose
    its shrinkage); ``clades`` [U, C]: the clade membership (:func:`aam.data.clades.select_clades`) of the
    ASVs the training samples hold (``np.unique(counts.indices)``, in that order), as many clades as ``model.config.clades``."""
    config = model.config
    anchors = np.zeros(0, dtype=np.int64) if anchors is None else np.asarray(anchors, dtype=np.int64)
    if len(anchors) != config.anchors:
        raise AamError(f"the model has {config.anchors} anchor groups but {len(anchors)} anchors were given",
                       source="--group-anchors")
    counts = sparse.csr_matrix(counts, dtype=np.float64)
    used = np.unique(counts.indices)  # the ASVs the training samples hold
    if len(used) < max(config.group_counts):
        raise AamError(f"the training samples hold {len(used)} distinct ASVs, fewer than "
                       f"{max(config.group_counts)} groups", source="--sequence-groups",
                       hint="give smaller group counts, e.g. --sequence-groups 4,8")
    profiles = model.profiles(torch.from_numpy(np.ascontiguousarray(tokens[used])))
    _set_clades(model, clades, profiles)
    clusterings = config.kmeans_resolutions
    starts = np.random.SeedSequence(seed).generate_state(len(clusterings))  # one per clustering
    centres = [KMeans(count, n_init=kmeans_starts, random_state=int(start)).fit(profiles.numpy()).cluster_centers_
               for start, count in zip(starts, clusterings)]
    if len(anchors):
        centres.append(model.profiles(torch.from_numpy(np.ascontiguousarray(tokens[anchors]))).numpy())
    with torch.no_grad():
        model.centres.copy_(torch.from_numpy(np.concatenate(centres)))
        assignments = model.nearest_groups(profiles)  # [U, R]
        raw = _raw_features(model, counts[:, used], assignments)
        model.feature_mean.copy_(torch.from_numpy(raw.mean(axis=0)))  # centred, not scaled (see module notes)
    features = raw - model.feature_mean.numpy()
    sizes = {count: np.bincount(assignments[:, r].numpy(), minlength=count).tolist()
             for r, count in enumerate(config.group_counts)}  # of the first clustering
    fit = _fit_readout(model, features, targets, groups, seed, inner_score)
    fit.n_asvs, fit.group_sizes = len(used), sizes
    return fit


def _set_clades(model: SequenceGroupComposition, clades: sparse.csr_matrix | None, profiles: torch.Tensor) -> None:
    """The clade buffers: the training ASVs' ``profiles`` and their membership ``clades`` [U, C]."""
    config = model.config
    shape = (0, 0) if clades is None else clades.shape
    if shape != ((config.clade_tips, config.clades) if config.clades else (0, 0)):
        raise AamError(f"the model has {config.clades} clades over {config.clade_tips} ASVs but a membership of "
                       f"shape {shape} was given", source="--group-clades")
    if config.clades:
        with torch.no_grad():
            model.clade_profiles.copy_(profiles)
            model.clade_membership.copy_(torch.from_numpy(clades.toarray().astype(np.float64)))


def _raw_features(model: SequenceGroupComposition, counts: sparse.csr_matrix, assignments: torch.Tensor) -> np.ndarray:
    """[n, U] counts -> [n, n_features] the model's features before the training mean is taken off (log group
    shares, and diversity when asked for), by the model's own code, in blocks of samples."""
    totals = np.asarray(counts.sum(axis=1)).ravel()
    shares = sparse.diags(1.0 / np.maximum(totals, np.finfo(np.float64).tiny)) @ counts
    return np.concatenate([model.raw_features(assignments, torch.from_numpy(shares[i:i + ROW_CHUNK].toarray())).numpy()
                           for i in range(0, shares.shape[0], ROW_CHUNK)])


def _inner_splits(targets: np.ndarray, groups: np.ndarray | None, classifier: bool, seed: int) -> tuple[list, str]:
    """Inner folds over the training samples: grouped (and stratified for classifiers) when groups are given."""
    n_units = len(np.unique(groups)) if groups is not None else len(targets)
    n_splits = min(INNER_FOLDS, n_units)
    if n_splits < 2:
        raise AamError("the training samples form a single group: no inner cross-validation is possible",
                       source="--group-column", hint="give a column with at least two groups among training samples")
    index = np.zeros(len(targets))
    if groups is not None:
        splitter = (StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed) if classifier
                    else GroupKFold(n_splits, shuffle=True, random_state=seed))
        return list(splitter.split(index, targets, groups)), f"{n_splits}-fold grouped"
    splitter = (StratifiedKFold(n_splits, shuffle=True, random_state=seed) if classifier
                else KFold(n_splits, shuffle=True, random_state=seed))
    return list(splitter.split(index, targets)), f"{n_splits}-fold"


def _fit_readout(model: SequenceGroupComposition, features: np.ndarray, targets: np.ndarray,
                 groups: np.ndarray | None, seed: int, inner_score: bool = True) -> SequenceGroupsFit:
    """Choose the shrinkage by the pooled score of the inner out-of-fold predictions (pooled, not averaged
    per fold: an inner fold of one or two people may hold one class only), refit it on every sample. A boosted
    read-out has nothing to choose: the inner folds give its out-of-fold predictions, then it is refitted."""
    config = model.config
    if config.classifier:
        if len(np.unique(targets)) < 2:
            raise AamError("the training samples hold one class only", source="--metadata-column")
        parameter, strengths = "C", INVERSE_STRENGTHS
        scoring = "auroc" if config.out_dim == 2 else "log_loss"
    else:
        parameter, strengths, scoring = "alpha", RIDGE_STRENGTHS, "mae"
    splits, scheme = _inner_splits(targets, groups, config.classifier, seed % 2**32)
    if isinstance(model, TreeGroupComposition):
        return _fit_trees(model, features, targets, splits, scheme, scoring, seed, inner_score)
    if not inner_score:
        raise AamError("the linear read-out chooses its shrinkage by inner cross-validation",
                       source="--no-group-inner-score")
    grid, predictions = [], []
    for strength in strengths:
        out_of_fold = _out_of_fold(_estimator(config.classifier, strength), features, targets, splits, config)
        predictions.append(out_of_fold)
        grid.append({parameter: float(strength), scoring: _score(scoring, targets, out_of_fold)})
    higher_is_better = scoring == "auroc"
    scores = np.array([row[scoring] for row in grid])
    best = int(np.argmax(scores) if higher_is_better else np.argmin(scores))  # ties: the strongest shrinkage
    chosen = float(strengths[best])
    _copy_readout(model, _estimator(config.classifier, chosen).fit(features, targets))
    log.info("sequence groups: %s=%g chosen by %s inner cross-validation (pooled %s %.4g%s)", parameter, chosen,
             scheme, scoring, scores[best], _UNITS[config.classifier])
    return SequenceGroupsFit(parameter, chosen, grid, scoring, scheme, predictions[best], n_asvs=0, splits=splits)


_UNITS = {True: "", False: " on the scaled target"}  # the read-out fits the transformed regression target


def _out_of_fold(estimator, features: np.ndarray, targets: np.ndarray, splits: list, config) -> np.ndarray:
    """``estimator``'s predictions of every sample by the inner fold that held it out: [n, out_dim] class
    probabilities (a class missing from a fold's training part gets 0 there), or [n] predictions."""
    method = "predict_proba" if config.classifier else "predict"
    out_of_fold = cross_val_predict(estimator, features, targets, cv=splits, method=method)
    return _all_classes(out_of_fold, np.unique(targets), config.out_dim) if config.classifier else out_of_fold


def _fit_trees(model: TreeGroupComposition, features: np.ndarray, targets: np.ndarray, splits: list,
               scheme: str, scoring: str, seed: int, inner_score: bool = True) -> SequenceGroupsFit:
    """Fixed settings: the inner folds only score the trees (``inner_score``), then they are fitted on every
    sample (the same trees either way: each inner fit is a fresh copy)."""
    from aam.baselines import FOREST_TREES
    from aam.baselines.estimators import BOOSTED_DEFAULTS, boosted_trees, forest_trees

    config = model.config
    name = config.readout
    if name == "forest":
        trees = forest_trees(classifier=config.classifier, seed=seed)
        parameter, size = "n_estimators", float(FOREST_TREES)
    else:
        trees = boosted_trees(classifier=config.classifier, seed=seed, loss=config.boosted_loss)
        parameter, size = "max_iter", float(BOOSTED_DEFAULTS["max_iter"])
    out_of_fold = _out_of_fold(trees, features, targets, splits, config) if inner_score else None
    model.trees = trees.fit(features, targets)
    if out_of_fold is None:
        log.info("sequence groups: %s read-out fitted without an inner score (--no-group-inner-score)", name)
        return SequenceGroupsFit(parameter, size, [], scoring, "none", None, n_asvs=0, splits=splits)
    score = _score(scoring, targets, out_of_fold)
    log.info("sequence groups: %s read-out, %s inner cross-validation (pooled %s %.4g%s)", name, scheme, scoring,
             score, _UNITS[config.classifier])
    return SequenceGroupsFit(parameter, size, [{parameter: size, scoring: score}], scoring, scheme, out_of_fold,
                             n_asvs=0, splits=splits)


def _estimator(classifier: bool, strength: float):
    return LogisticRegression(C=strength, max_iter=5000) if classifier else Ridge(alpha=strength)


def _score(scoring: str, targets: np.ndarray, predictions: np.ndarray) -> float:
    if scoring == "auroc":
        return float(roc_auc_score(targets, predictions[:, 1]))
    if scoring == "log_loss":
        return float(log_loss(targets, np.clip(predictions, 1e-12, 1.0), labels=np.arange(predictions.shape[1])))
    return float(np.mean(np.abs(predictions - targets)))


def _all_classes(probabilities: np.ndarray, classes: np.ndarray, n_classes: int) -> np.ndarray:
    """[n, len(classes)] -> [n, n_classes] (a class absent from training gets probability 0)."""
    full = np.zeros((probabilities.shape[0], n_classes))
    full[:, classes] = probabilities
    return full


def _copy_readout(model: SequenceGroupComposition, estimator) -> None:
    """The fitted linear model as the read-out layer: logits whose softmax is the estimator's probabilities."""
    weight = torch.zeros_like(model.readout.weight)
    bias = torch.zeros_like(model.readout.bias)
    coef = torch.from_numpy(np.atleast_2d(estimator.coef_).astype(np.float64))
    intercept = torch.from_numpy(np.atleast_1d(estimator.intercept_).astype(np.float64))
    if not model.config.classifier:
        weight[0], bias[0] = coef[0], intercept[0]
    else:
        classes = torch.from_numpy(np.asarray(estimator.classes_, dtype=np.int64))
        bias.fill_(ABSENT_CLASS_LOGIT)
        if len(classes) == 2:  # binary: P(second) = sigmoid(z) = softmax([0, z])[1]
            bias[classes[0]] = 0.0
            weight[classes[1]], bias[classes[1]] = coef[0], intercept[0]
        else:
            weight[classes], bias[classes] = coef, intercept
    with torch.no_grad():
        model.readout.weight.copy_(weight)
        model.readout.bias.copy_(bias)
