"""``aam rf-baseline``: a random forest on relative abundances, on the same split as ``aam train``."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
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


def run_rf_baseline(*, table: str, metadata: str, metadata_column: str, train_samples: str, val_samples: str,
                    output: str, n_estimators: int = 500, max_features="sqrt", random_seed: int = 42,
                    n_jobs: int = -1, classifier: bool = False) -> dict[str, float]:
    """Fit on ``train_samples``, predict ``val_samples``; write ``output`` TSV and a plot; return metrics."""
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    counts = table_to_csr(load_table(table))
    frame = read_metadata(metadata)
    column = metadata_column.strip()
    require_column(frame, column, source=metadata)
    train_ids = _usable(read_ids(train_samples), counts.sample_ids, frame, column, classifier, metadata,
                        "--train-samples")
    val_ids = _usable(read_ids(val_samples), counts.sample_ids, frame, column, classifier, metadata,
                      "--val-samples")
    row = {s: i for i, s in enumerate(counts.sample_ids)}
    features = relative_abundance_matrix(counts.counts).tocsr()
    x_train, x_val = features[[row[s] for s in train_ids]], features[[row[s] for s in val_ids]]
    if classifier:
        y_train = frame.loc[train_ids, column].astype(str).to_numpy()
        y_val = frame.loc[val_ids, column].astype(str).to_numpy()
        model = RandomForestClassifier(n_estimators=n_estimators, max_features=parse_max_features(max_features),
                                       random_state=random_seed, n_jobs=n_jobs)
    else:
        y_train = numeric_target(frame.loc[train_ids], column, source=metadata).to_numpy()
        y_val = numeric_target(frame.loc[val_ids], column, source=metadata).to_numpy()
        model = RandomForestRegressor(n_estimators=n_estimators, max_features=parse_max_features(max_features),
                                      random_state=random_seed, n_jobs=n_jobs)
    model.fit(x_train, y_train)
    predicted = model.predict(x_val)
    result = pd.DataFrame({"sample_id": val_ids, "prediction": predicted, "actual": y_val})
    write_tsv(output, result)
    metrics = _metrics(model, x_val, y_val, predicted, classifier)
    if not classifier:
        prediction_scatter(y_val.astype(float), predicted.astype(float), Path(output).with_suffix(".png"),
                           unit=column, title=f"random forest  MAE {metrics['mae']:.3g}  R² {metrics['r2']:.3f}")
    log.info("random forest on %d training samples, %d validation samples: %s", len(train_ids), len(val_ids),
             "  ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return metrics


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
    import torch

    if classifier:
        labels = list(model.classes_)
        probabilities = model.predict_proba(x_val)
        target = torch.tensor([labels.index(v) if v in labels else -1 for v in y_val])
        scores = ClassificationMetrics(len(labels))
        keep = target >= 0
        scores.update(torch.as_tensor(probabilities).clamp_min(1e-12).log()[keep], target[keep])
        computed = scores.compute()
        return {k: computed[k] for k in ("accuracy", "f1_macro", "f1_weighted") if k in computed}
    scores = RegressionMetrics()
    scores.update(torch.tensor(np.asarray(predicted, dtype=np.float64)), torch.tensor(np.asarray(y_val, dtype=np.float64)))
    computed = scores.compute()
    return {k: computed[k] for k in ("mae", "rmse", "r2")}
