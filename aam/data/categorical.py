"""Categorical metadata columns as integer codes, and per-category loss weights.

`CategoricalEncoder` maps each value of each categorical column to 1..N (values compared as strings, sorted);
index 0 means "unknown or missing". It is fitted on the training split only, so values first seen in
validation or at predict time map to 0 (one warning per column). `category_keys` builds the per-sample group
keys (``"col=v,col2=w"``) used by per-category target normalisation, and `CategoryWeights` turns
``--categorical-loss-weights auto|JSON`` into one loss weight per sample.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from aam.errors import AamError

log = logging.getLogger(__name__)

UNKNOWN = 0  # code of unknown or missing values in every column
_SHOWN = 5  # how many offending values a message names


def value_key(value: Any) -> str | None:
    """The string a metadata value is compared as; ``None`` for missing (NaN, None, empty string).

    Integral floats lose their ``.0`` so that ``3`` and ``3.0`` (a column that had a NaN at training time and
    none at predict time) are the same category.
    """
    if value is None or (isinstance(value, float | np.floating) and math.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    text = str(value).strip()
    return text or None


def _column_keys(df: pd.DataFrame, column: str, sample_ids: Sequence[str]) -> list[str | None]:
    """Keys of ``column`` for ``sample_ids``; ``None`` for ids absent from ``df`` or missing values."""
    rows = df.index.get_indexer(pd.Index([str(s) for s in sample_ids]))  # -1 where absent
    values = df[column].to_numpy(dtype=object)
    return [value_key(values[r]) if r >= 0 else None for r in rows]


def _shown(values: Iterable[str]) -> str:
    values = sorted(values)
    text = ", ".join(repr(v) for v in values[:_SHOWN])
    return text + (f", ... ({len(values)} in all)" if len(values) > _SHOWN else "")


def category_keys(df: pd.DataFrame, sample_ids: Sequence[str], columns: Sequence[str]) -> np.ndarray:
    """Per-sample group key ``"col=v[,col2=w]"`` over ``columns``: object array [N]; ``None`` if any is missing."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise AamError(f"column(s) {_shown(missing)} not in the metadata", source="--normalize-by")
    per_column = [_column_keys(df, c, sample_ids) for c in columns]
    keys = np.empty(len(sample_ids), dtype=object)
    for i, values in enumerate(zip(*per_column, strict=True)):
        keys[i] = None if None in values else ",".join(f"{c}={v}" for c, v in zip(columns, values, strict=True))
    return keys


class CategoricalEncoder:
    """Per-column value -> code maps, fitted on the training split (0 = unknown or missing).

    Columns keep the order they were given in; each column's values are sorted as strings and coded 1..N,
    so the embedding table of that column has ``N + 1`` rows (`cardinalities`).
    """

    def __init__(self, mappings: Mapping[str, Mapping[str, int]] | None = None):
        self._set(mappings or {})

    def _set(self, mappings: Mapping[str, Mapping[str, int]]) -> None:
        self._mappings: dict[str, dict[str, int]] = {c: {str(v): int(i) for v, i in m.items()}
                                                     for c, m in mappings.items()}
        self._labels = {c: {code: v for v, code in m.items()} for c, m in self._mappings.items()}

    @property
    def columns(self) -> list[str]:
        return list(self._mappings)

    @property
    def cardinalities(self) -> list[int]:
        """Embedding rows per column: number of known values + 1 (the unknown code)."""
        return [len(m) + 1 for m in self._mappings.values()]

    def fit(self, df: pd.DataFrame, columns: Sequence[str]) -> CategoricalEncoder:
        """Learn the value codes of ``columns`` from the training metadata ``df`` (indexed by sample id)."""
        if len(df) == 0:
            raise AamError("no training samples to fit the categorical encoders on",
                           source="--categorical-columns")
        columns = list(dict.fromkeys(columns))
        absent = [c for c in columns if c not in df.columns]
        if absent:
            raise AamError(f"column(s) {_shown(absent)} not in the metadata", source="--categorical-columns",
                           hint=f"available columns: {_shown(map(str, df.columns))}")
        mappings = {}
        for column in columns:
            values = sorted({k for k in map(value_key, df[column].to_numpy(dtype=object)) if k is not None})
            if not values:
                raise AamError(f"column {column!r} has no value in the training samples",
                               source="--categorical-columns", hint="drop it from --categorical-columns")
            mappings[column] = {v: code for code, v in enumerate(values, start=1)}
        self._set(mappings)
        return self

    def transform(self, df: pd.DataFrame, sample_ids: Sequence[str]) -> np.ndarray:
        """Codes [N, K] int64 for ``sample_ids``; unseen values, NaN and ids absent from ``df`` give 0.

        Logs one warning per column that holds values not seen at fit time, naming a few of them.
        """
        codes = np.zeros((len(sample_ids), len(self._mappings)), dtype=np.int64)  # [N, K]
        for k, (column, mapping) in enumerate(self._mappings.items()):
            if column not in df.columns:
                log.warning("categorical column %r is not in the metadata; all %d samples get the unknown code",
                            column, len(sample_ids))
                continue
            keys = _column_keys(df, column, sample_ids)
            codes[:, k] = [mapping.get(key, UNKNOWN) if key is not None else UNKNOWN for key in keys]
            unseen = Counter(key for key in keys if key is not None and key not in mapping)
            if unseen:
                log.warning("categorical column %r: %d sample(s) have %d value(s) not seen in training (%s); "
                            "they get the unknown code", column, sum(unseen.values()), len(unseen),
                            _shown(unseen))
        return codes

    def inverse(self, column: str, index: int) -> str | None:
        """The value coded ``index`` in ``column``; ``None`` for the unknown code."""
        if column not in self._labels:
            raise KeyError(f"no categorical column {column!r}; columns are {self.columns}")
        return self._labels[column].get(int(index))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe state; `from_dict` rebuilds an identical encoder."""
        return {"columns": self.columns, "mappings": {c: dict(m) for c, m in self._mappings.items()}}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> CategoricalEncoder:
        return cls({c: state["mappings"][c] for c in state["columns"]})


class CategoryWeights:
    """Per-category loss weights over one categorical column (``--categorical-loss-weights``).

    ``auto`` gives category k the weight ``N / (K * n_k)`` (N training samples with a value, K categories),
    so every category contributes equally to the loss. A JSON object gives weights by value; keys may be the
    bare value (``"gut"``) or ``"column=value"``. Samples whose value is missing or has no weight get 1.0.
    """

    def __init__(self, column: str, weights: Mapping[str, float]):
        self.column = column
        self.weights = {str(k): float(v) for k, v in weights.items()}

    @classmethod
    def auto(cls, df: pd.DataFrame, column: str) -> CategoryWeights:
        """Balanced weights from the training metadata ``df``."""
        if column not in df.columns:
            raise AamError(f"column {column!r} not in the metadata", source="--categorical-loss-weight-column")
        counts = Counter(k for k in map(value_key, df[column].to_numpy(dtype=object)) if k is not None)
        if not counts:
            raise AamError(f"column {column!r} has no value in the training samples",
                           source="--categorical-loss-weights")
        total = sum(counts.values())
        return cls(column, {v: total / (len(counts) * n) for v, n in counts.items()})

    @classmethod
    def from_option(cls, option: str, df: pd.DataFrame, column: str) -> CategoryWeights:
        """Parse ``auto`` or a JSON object of weights; ``df`` is the training metadata."""
        if option.strip().lower() == "auto":
            return cls.auto(df, column)
        try:
            raw = json.loads(option)
        except json.JSONDecodeError:
            raw = None
        if not isinstance(raw, dict) or not raw:
            raise AamError(f"expected 'auto' or a JSON object of weights, got {option!r}",
                           source="--categorical-loss-weights", hint='e.g. \'{"gut": 2.0, "oral": 0.5}\'')
        weights = {}
        for key, weight in raw.items():
            value = key.split("=", 1)[1] if "=" in key else key
            if "=" in key and key.split("=", 1)[0] != column:
                raise AamError(f"key {key!r} names another column than {column!r}",
                               source="--categorical-loss-weights",
                               hint="weights apply to --categorical-loss-weight-column only")
            if not isinstance(weight, int | float) or isinstance(weight, bool) or not weight >= 0:
                raise AamError(f"weight of {key!r} must be a non-negative number, got {weight!r}",
                               source="--categorical-loss-weights")
            weights[value.strip()] = float(weight)
        known = set() if column not in df.columns else set(filter(None, map(value_key, df[column])))
        unknown = set(weights) - known
        if unknown:
            log.warning("--categorical-loss-weights: value(s) %s do not occur in column %r of the training "
                        "samples", _shown(unknown), column)
        return cls(column, weights)

    def sample_weights(self, df: pd.DataFrame, sample_ids: Sequence[str]) -> np.ndarray:
        """Weights [N] float32 for ``sample_ids``; 1.0 where the value is missing or has no weight."""
        if self.column not in df.columns:
            return np.ones(len(sample_ids), dtype=np.float32)
        keys = _column_keys(df, self.column, sample_ids)
        return np.array([self.weights.get(k, 1.0) if k is not None else 1.0 for k in keys], dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, "weights": dict(self.weights)}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> CategoryWeights:
        return cls(state["column"], state["weights"])
