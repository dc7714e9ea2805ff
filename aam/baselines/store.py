"""Saved baselines: the file ``aam rf-baseline --save-model`` writes (a fitted estimator on counts with its ASV
columns, task and target), read back and applied to a new table by ``aam predict --forest``; and the prediction
table of a fitted baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

from aam.baselines.estimators import relative_abundance
from aam.data.biom_table import load_table, table_to_csr
from aam.errors import AamError
from aam.fileio import atomic_write


def baseline_frame(model, features, sample_ids: list[str], classifier: bool) -> pd.DataFrame:
    """sample_id, prediction and, for classifiers, one ``prob_<class>`` column per class seen in training."""
    result = pd.DataFrame({"sample_id": sample_ids, "prediction": model.predict(features)})
    if classifier:
        probabilities = model.predict_proba(features)
        for k, label in enumerate(model.classes_):
            result[f"prob_{label}"] = probabilities[:, k]
    return result


BUNDLE_FORMATS = {"aam-forest-1": "relative abundances", "aam-baseline-1": "counts"}  # what the model reads


def save_forest(path: str | Path, model, feature_ids: list[str], classifier: bool, column: str,
                baseline: str = "forest") -> None:
    """Write a fitted baseline (an estimator on counts) with what predicting needs (its ASV columns, task,
    target), atomically."""
    import joblib

    bundle = {"format": "aam-baseline-1", "baseline": baseline, "model": model, "feature_ids": list(feature_ids),
              "classifier": bool(classifier), "metadata_column": column}
    atomic_write(path, lambda tmp: joblib.dump(bundle, tmp))


def load_forest(path: str | Path) -> dict:
    """A forest written by ``aam rf-baseline --save-model``."""
    import joblib

    if not Path(path).is_file():
        raise AamError("forest file not found", source=path, hint="write one with aam rf-baseline --save-model")
    try:
        bundle = joblib.load(path)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise AamError(f"cannot read the forest ({type(err).__name__})", source=path) from None
    if not isinstance(bundle, dict) or bundle.get("format") not in BUNDLE_FORMATS:
        raise AamError("not a forest written by aam rf-baseline --save-model", source=path)
    return bundle


def predict_forest(bundle: dict, table: str, sample_ids: list[str] | None = None) -> pd.DataFrame:
    """The saved forest's predictions for the samples of ``table`` (relative abundances over the forest's ASV
    columns; ASVs it never saw are ignored, which is the forest's limit on new cohorts)."""
    counts = table_to_csr(load_table(table))
    position = {a: j for j, a in enumerate(counts.feature_ids)}
    known = [(j, position[a]) for j, a in enumerate(bundle["feature_ids"]) if a in position]
    if not known:
        raise AamError("the table shares no ASV with the forest's training table", source=table)
    columns, sources = zip(*known)
    select = sparse.csr_matrix((np.ones(len(known)), (sources, columns)),
                               shape=(len(counts.feature_ids), len(bundle["feature_ids"])))  # [table ASVs, F]
    source = sparse.csr_matrix(counts.counts, dtype=np.float64)
    if bundle["format"] == "aam-forest-1":  # written before baselines read counts: shares of the whole table
        source = relative_abundance(source)
    aligned = source @ select  # [N, F], zero for ASVs the table lacks
    ids = list(counts.sample_ids) if sample_ids is None else [str(s) for s in sample_ids]
    rows = {s: i for i, s in enumerate(counts.sample_ids)}
    missing = [s for s in ids if s not in rows]
    if missing:
        raise AamError(f"{len(missing)} sample id(s) are not in the table: {', '.join(missing[:5])}", source=table)
    return baseline_frame(bundle["model"], aligned.tocsr()[[rows[s] for s in ids]], ids, bundle["classifier"])
