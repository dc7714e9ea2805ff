"""``aam rf-baseline``: a classical baseline (by default the random forest on relative abundances; see
``aam.baselines.estimators``), on the same split or folds as ``aam train``."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

from aam.baselines import BASELINES
from aam.baselines.estimators import parse_max_features
from aam.baselines.store import baseline_frame, save_forest
from aam.data.biom_table import load_table, table_to_csr
from aam.data.metadata import numeric_target, read_metadata, require_column
from aam.data.split import groups_on_both_sides, read_folds, read_ids, write_split
from aam.errors import AamError
from aam.fileio import write_tsv
from aam.objectives.scoring import probability_columns, score_predictions, scores_by
from aam.outputs.plots import prediction_scatter
from aam.workflows.run_config import RfBaselineRun, SampleSplit

log = logging.getLogger("aam")


def run_rf_baseline(run: RfBaselineRun) -> dict[str, float]:
    """Fit on ``train_samples`` and predict ``val_samples``, cross-validate over ``folds``, or, given neither,
    split the samples itself (``test_size``, grouped by ``group_column``, stratified for classifiers).

    ``folds``: a TSV with a sample id column and ``fold_column``; each fold is predicted by a forest fitted on
    the other folds' samples. ``output`` gets the predictions (out-of-fold, with their ``fold``, for
    ``folds``); regression also writes a scatter plot with the same stem, ``folds`` a per-fold metrics table
    ``<stem>_metrics.tsv`` (with a ``pooled`` row), ``group_column`` per-group metrics ``<stem>_groups.tsv``
    and a split made here ``<stem>_train_samples.txt``/``_val_samples.txt`` (+ ``_split.tsv`` with groups).
    ``baseline`` names the model (``aam.baselines.BASELINES``); ``n_estimators`` and ``max_features`` apply to
    the forest. Returns the metrics (pooled over folds).
    """
    table, metadata, output, folds = run.table, run.metadata, run.output, run.folds
    baseline, classifier, group_column, save_model = run.baseline, run.classifier, run.group_column, run.save_model
    method = BASELINES[baseline]
    counts = table_to_csr(load_table(table))
    frame = read_metadata(metadata)
    column = run.metadata_column.strip()
    require_column(frame, column, source=metadata)
    if group_column:
        require_column(frame, group_column, source=metadata, flag="--group-column")
    if folds is not None:
        splits = read_folds(folds, run.fold_column)
    elif run.train_samples:  # and --val-samples (the run checks they come together)
        splits = {None: (read_ids(run.train_samples), read_ids(run.val_samples))}
    else:
        splits = {None: _own_split(counts.sample_ids, frame, column, classifier, metadata, group_column,
                                   run.test_size, run.random_seed, output)}
    group_of = None if not group_column else frame[group_column].to_dict()
    row = {s: i for i, s in enumerate(counts.sample_ids)}
    features = sparse.csr_matrix(counts.counts)
    settings = ({"n_estimators": run.n_estimators, "max_features": parse_max_features(run.max_features)}
                if baseline == "forest" else {})
    if method.uses_tree:
        from aam.unifrac.tree import tree_incidence

        settings["incidence"] = tree_incidence(run.tree, counts.feature_ids)
    frames, per_fold = [], []
    for fold, (train_ids, val_ids) in splits.items():
        where = "" if fold is None else f" (fold {fold})"
        train_ids = _usable(train_ids, counts.sample_ids, frame, column, classifier, metadata,
                            "--train-samples" if fold is None else f"--folds{where}")
        val_ids = _usable(val_ids, counts.sample_ids, frame, column, classifier, metadata,
                          "--val-samples" if fold is None else f"--folds{where}")
        if group_of is not None:
            _warn_shared_groups(train_ids, val_ids, group_of, where)
        groups = None if group_of is None else np.asarray([str(group_of[s]) for s in train_ids])
        result, metrics, model = _fit_and_score(features, row, frame, column, train_ids, val_ids, classifier,
                                                method, metadata, groups, run.random_seed, run.n_jobs, settings)
        if save_model:
            save_forest(save_model, model, counts.feature_ids, classifier, column, baseline=baseline)
            log.info("saved the %s baseline to %s (aam predict --forest)", baseline, save_model)
        described = method.summary + (f" ({run.n_estimators} trees)" if baseline == "forest" else "")
        log.info("%s%s on %d training samples, %d validation samples: %s", described, where, len(train_ids),
                 len(val_ids), "  ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        if fold is not None:
            result["fold"] = fold
            per_fold.append({"fold": fold, "n": len(val_ids), **metrics})
        frames.append(result)
    result = pd.concat(frames, ignore_index=True)
    result[probability_columns(result)] = result[probability_columns(result)].fillna(0.0)
    metrics = metrics if folds is None else score_predictions(result, classifier)
    stem = Path(output).with_suffix("")
    if per_fold:
        table_rows = pd.DataFrame(per_fold + [{"fold": "pooled", "n": len(result), **metrics}])
        write_tsv(f"{stem}_metrics.tsv", table_rows)
        means = pd.DataFrame(per_fold).drop(columns=["fold", "n"])
        log.info("%d folds: %s (pooled: %s)", len(per_fold), "  ".join(
            f"{k}={means[k].mean():.4g} +/- {means[k].std(ddof=1):.2g}" for k in means.columns),
            "  ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    if group_of is not None:
        grouped = result.assign(group=result["sample_id"].map(group_of))
        write_tsv(f"{stem}_groups.tsv", scores_by(grouped, "group", classifier))
    write_tsv(output, result)
    if not classifier:
        title = baseline + (" (out-of-fold)" if per_fold else "")
        prediction_scatter(result["actual"].to_numpy(float), result["prediction"].to_numpy(float),
                           Path(output).with_suffix(".png"), unit=column,
                           title=f"{title}  MAE {metrics['mae']:.3g}  R² {metrics['r2']:.3f}")
    return metrics


def _own_split(table_ids: list[str], frame: pd.DataFrame, column: str, classifier: bool, metadata: str,
               group_column: str | None, test_size: float, seed: int, output: str) -> tuple[list[str], list[str]]:
    """A split made here (no lists, no folds) as ``aam train`` makes it, written beside ``output`` so
    ``aam train --val-samples`` can reuse it."""
    from aam.workflows.samples import sample_groups, split_samples

    ids = _usable([s for s in table_ids if s in frame.index], table_ids, frame, column, classifier, metadata,
                  "--metadata")
    stratify = frame.loc[ids, column].astype(str).to_numpy() if classifier else None
    split = SampleSplit(test_size=test_size, group_column=group_column, metadata=metadata)
    groups = sample_groups(frame, ids, split, target=column)  # or suggests a subject-like column
    train_ids, val_ids = split_samples(ids, split, seed, stratify=stratify, groups=groups)
    stem = Path(output).with_suffix("")
    write_split(stem.parent, train_ids, val_ids, None if groups is None else dict(zip(ids, groups)),
                prefix=f"{stem.name}_")
    log.info("split %d samples into %d training and %d validation samples%s", len(ids), len(train_ids),
             len(val_ids), f" by {group_column!r}" if group_column else "")
    return train_ids, val_ids


def _warn_shared_groups(train_ids: list[str], val_ids: list[str], group_of: dict, where: str) -> None:
    shared = groups_on_both_sides(train_ids, val_ids, group_of)
    if shared:
        log.warning("%d group(s) of --group-column lie on both sides of the split%s (e.g. %s): scores will flatter "
                    "the forest", len(shared), where, shared[0])


def _fit_and_score(counts: sparse.csr_matrix, row: dict[str, int], frame: pd.DataFrame, column: str,
                   train_ids: list[str], val_ids: list[str], classifier: bool, method, metadata: str,
                   groups: np.ndarray | None, seed: int, n_jobs: int, settings: dict):
    """Fit the baseline ``method`` on ``train_ids`` (its inner searches grouped by ``groups``); (predictions of
    ``val_ids``, their metrics, the fitted model)."""
    x_train, x_val = counts[[row[s] for s in train_ids]], counts[[row[s] for s in val_ids]]
    if classifier:
        y_train = frame.loc[train_ids, column].astype(str).str.strip().to_numpy()
        y_val = frame.loc[val_ids, column].astype(str).str.strip().to_numpy()
    else:
        y_train = numeric_target(frame.loc[train_ids], column, source=metadata).to_numpy()
        y_val = numeric_target(frame.loc[val_ids], column, source=metadata).to_numpy()
    model = method.fit(x_train, y_train, classifier=classifier, seed=seed, groups=groups, n_jobs=n_jobs, **settings)
    result = baseline_frame(model, x_val, val_ids, classifier)
    result.insert(2, "actual", y_val)
    return result, score_predictions(result, classifier), model


def _usable(ids: list[str], table_ids: list[str], frame: pd.DataFrame, column: str, classifier: bool,
            metadata: str, flag: str) -> list[str]:
    in_table = set(table_ids)
    kept = [s for s in ids if s in in_table and s in frame.index]
    if len(kept) < len(ids):
        log.warning("%s: %d sample(s) are missing from the table or metadata and are left out", flag,
                    len(ids) - len(kept))
    if kept:
        if classifier:
            values = frame.loc[kept, column]
            kept = [s for s, v in zip(kept, values) if isinstance(v, str) and v.strip()]
        else:
            kept = list(numeric_target(frame.loc[kept], column, source=metadata).index)
    if not kept:
        raise AamError("no listed sample is in both the table and the metadata", source=flag)
    return kept
