"""``aam rf-baseline``: a random forest on relative abundances, on the same split or folds as ``aam train``."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import sparse

from aam.data.biom_table import load_table, table_to_csr
from aam.data.metadata import numeric_target, read_metadata, require_column
from aam.data.split import read_ids
from aam.errors import AamError
from aam.fileio import write_tsv
from aam.training.metrics import ClassificationMetrics, RegressionMetrics
from aam.training.plots import prediction_scatter

log = logging.getLogger("aam")


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


def relative_abundance_matrix(counts: sparse.csr_matrix) -> sparse.csr_matrix:
    """Rows of ``counts`` [N, F] divided by their sums (empty rows stay zero)."""
    totals = np.asarray(counts.sum(axis=1)).ravel()
    scale = np.divide(1.0, totals, out=np.zeros_like(totals, dtype=np.float64), where=totals > 0)
    return sparse.diags(scale) @ counts


def run_rf_baseline(*, table: str, metadata: str, metadata_column: str, output: str,
                    train_samples: str | None = None, val_samples: str | None = None, folds: str | None = None,
                    fold_column: str = "fold", n_estimators: int = 500, max_features="sqrt",
                    random_seed: int = 42, n_jobs: int = -1, classifier: bool = False) -> dict[str, float]:
    """Fit on ``train_samples`` and predict ``val_samples``, or cross-validate over ``folds``.

    ``folds``: a TSV with a sample id column and ``fold_column``; each fold is predicted by a forest fitted on
    the other folds' samples. ``output`` gets the predictions (out-of-fold, with their ``fold``, for
    ``folds``); regression also writes a scatter plot with the same stem, and ``folds`` a per-fold metrics
    table ``<stem>_metrics.tsv`` (with a ``pooled`` row). Returns the metrics (pooled over folds).
    """
    lists = (train_samples, val_samples)
    if (folds is not None and any(lists)) or (folds is None and not all(lists)):
        raise AamError("give either --train-samples and --val-samples, or --folds", source="--folds")
    counts = table_to_csr(load_table(table))
    frame = read_metadata(metadata)
    column = metadata_column.strip()
    require_column(frame, column, source=metadata)
    if folds is None:
        splits = {None: (read_ids(train_samples), read_ids(val_samples))}
    else:
        splits = read_folds(folds, fold_column)
    row = {s: i for i, s in enumerate(counts.sample_ids)}
    features = relative_abundance_matrix(counts.counts).tocsr()
    params = {"n_estimators": n_estimators, "max_features": parse_max_features(max_features),
              "random_state": random_seed, "n_jobs": n_jobs}
    frames, per_fold = [], []
    for fold, (train_ids, val_ids) in splits.items():
        where = "" if fold is None else f" (fold {fold})"
        train_ids = _usable(train_ids, counts.sample_ids, frame, column, classifier, metadata,
                            "--train-samples" if fold is None else f"--folds{where}")
        val_ids = _usable(val_ids, counts.sample_ids, frame, column, classifier, metadata,
                          "--val-samples" if fold is None else f"--folds{where}")
        result, metrics = _fit_and_score(features, row, frame, column, train_ids, val_ids, classifier, params,
                                         metadata)
        log.info("random forest%s on %d training samples, %d validation samples: %s", where, len(train_ids),
                 len(val_ids), "  ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        if fold is not None:
            result["fold"] = fold
            per_fold.append({"fold": fold, "n": len(val_ids), **metrics})
        frames.append(result)
    result = pd.concat(frames, ignore_index=True)
    metrics = metrics if folds is None else _pooled_metrics(result, classifier)
    if per_fold:
        table_rows = pd.DataFrame(per_fold + [{"fold": "pooled", "n": len(result), **metrics}])
        write_tsv(Path(output).with_name(Path(output).stem + "_metrics.tsv"), table_rows)
        means = pd.DataFrame(per_fold).drop(columns=["fold", "n"])
        log.info("%d folds: %s (pooled: %s)", len(per_fold), "  ".join(
            f"{k}={means[k].mean():.4g} +/- {means[k].std(ddof=1):.2g}" for k in means.columns),
            "  ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    write_tsv(output, result)
    if not classifier:
        title = "random forest" + (" (out-of-fold)" if per_fold else "")
        prediction_scatter(result["actual"].to_numpy(float), result["prediction"].to_numpy(float),
                           Path(output).with_suffix(".png"), unit=column,
                           title=f"{title}  MAE {metrics['mae']:.3g}  R² {metrics['r2']:.3f}")
    return metrics


def read_folds(path: str, fold_column: str = "fold") -> dict[str, tuple[list[str], list[str]]]:
    """``{fold: (training ids, validation ids)}`` from a TSV of sample ids and their fold (ids as strings)."""
    frame = read_metadata(path)
    require_column(frame, fold_column, source=path, flag="--fold-column")
    labels = frame[fold_column]
    if labels.isna().any():
        raise AamError(f"sample {labels[labels.isna()].index[0]!r} has no fold", source=path,
                       hint=f"give every sample a value in column {fold_column!r}")
    names = list(dict.fromkeys(labels))
    if len(names) < 2:
        raise AamError(f"column {fold_column!r} holds a single fold", source=path, hint="cross-validation needs 2+")
    ids = labels.index.to_list()
    return {name: ([i for i, f in zip(ids, labels) if f != name], [i for i, f in zip(ids, labels) if f == name])
            for name in names}


def _fit_and_score(features, row: dict[str, int], frame: pd.DataFrame, column: str, train_ids: list[str],
                   val_ids: list[str], classifier: bool, params: dict, metadata: str):
    """Fit a forest on ``train_ids``; (predictions of ``val_ids``, their metrics)."""
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    x_train, x_val = features[[row[s] for s in train_ids]], features[[row[s] for s in val_ids]]
    if classifier:
        y_train = frame.loc[train_ids, column].astype(str).to_numpy()
        y_val = frame.loc[val_ids, column].astype(str).to_numpy()
        model = RandomForestClassifier(**params)
    else:
        y_train = numeric_target(frame.loc[train_ids], column, source=metadata).to_numpy()
        y_val = numeric_target(frame.loc[val_ids], column, source=metadata).to_numpy()
        model = RandomForestRegressor(**params)
    model.fit(x_train, y_train)
    predicted = model.predict(x_val)
    result = pd.DataFrame({"sample_id": val_ids, "prediction": predicted, "actual": y_val})
    return result, _metrics(model, x_val, y_val, predicted, classifier)


def _pooled_metrics(result: pd.DataFrame, classifier: bool) -> dict[str, float]:
    """Metrics of the concatenated out-of-fold predictions."""
    if classifier:
        from sklearn.metrics import accuracy_score, f1_score

        actual, predicted = result["actual"].astype(str), result["prediction"].astype(str)
        return {"accuracy": float(accuracy_score(actual, predicted)),
                "f1_macro": float(f1_score(actual, predicted, average="macro")),
                "f1_weighted": float(f1_score(actual, predicted, average="weighted"))}
    return _regression_metrics(result["prediction"], result["actual"])


def _usable(ids: list[str], table_ids: list[str], frame: pd.DataFrame, column: str, classifier: bool,
            metadata: str, flag: str) -> list[str]:
    in_table = set(table_ids)
    kept = [s for s in ids if s in in_table and s in frame.index]
    if len(kept) < len(ids):
        log.warning("%s: %d sample(s) are missing from the table or metadata and are left out", flag,
                    len(ids) - len(kept))
    if not classifier and kept:
        kept = list(numeric_target(frame.loc[kept], column, source=metadata).index)
    if not kept:
        raise AamError("no listed sample is in both the table and the metadata", source=flag)
    return kept


def _metrics(model, x_val, y_val, predicted, classifier: bool) -> dict[str, float]:
    if classifier:
        labels = list(model.classes_)
        probabilities = model.predict_proba(x_val)
        target = torch.tensor([labels.index(v) if v in labels else -1 for v in y_val])
        scores = ClassificationMetrics(len(labels))
        keep = target >= 0
        scores.update(torch.as_tensor(probabilities).clamp_min(1e-12).log()[keep], target[keep])
        computed = scores.compute()
        return {k: computed[k] for k in ("accuracy", "f1_macro", "f1_weighted") if k in computed}
    return _regression_metrics(predicted, y_val)


def _regression_metrics(predicted, actual) -> dict[str, float]:
    """MAE, RMSE and R^2 as ``aam train`` reports them."""
    scores = RegressionMetrics()
    scores.update(torch.tensor(np.asarray(predicted, dtype=np.float64)),
                  torch.tensor(np.asarray(actual, dtype=np.float64)))
    computed = scores.compute()
    return {k: computed[k] for k in ("mae", "rmse", "r2")}
