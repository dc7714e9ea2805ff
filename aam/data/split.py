"""Train/validation split of sample ids, and the sample-list files (``train_samples.txt``, ``val_samples.txt``)."""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from aam.data.metadata import read_metadata, require_column
from aam.errors import AamError
from aam.fileio import atomic_write

log = logging.getLogger(__name__)


def _validation_size(n: int, test_size: float | int) -> int:
    """Number of validation samples out of ``n`` for ``--test-size`` (rounded up, as scikit-learn does)."""
    if isinstance(test_size, bool) or not isinstance(test_size, int | float | np.integer | np.floating):
        raise AamError(f"expected a fraction or a count, got {test_size!r}", source="--test-size")
    if isinstance(test_size, int | np.integer):
        if test_size < 1:
            raise AamError(f"a sample count must be at least 1, got {test_size}", source="--test-size")
        return int(test_size)
    if not 0.0 < test_size < 1.0:
        raise AamError(f"a fraction must be in (0, 1), got {test_size}", source="--test-size")
    return math.ceil(test_size * n)


def train_val_split(
    ids: Sequence[str],
    test_size: float | int = 0.2,
    seed: int | None = None,
    stratify: Sequence | np.ndarray | None = None,
) -> tuple[list[str], list[str]]:
    """Split ``ids`` into (train ids, validation ids); the same ``seed`` gives the same split.

    ``test_size`` is a fraction in (0, 1) or a sample count. ``stratify`` (one label per id) keeps label
    proportions; it falls back to a random split, with a warning, when a label has fewer than 2 samples or
    either side is too small to hold every label.
    """
    ids = [str(i) for i in ids]
    if len(set(ids)) != len(ids):
        raise ValueError("train_val_split: duplicate sample ids")
    n_val = _validation_size(len(ids), test_size)
    if n_val < 1 or len(ids) - n_val < 1:
        raise AamError(f"{len(ids)} sample(s) with test size {test_size} leave an empty "
                       f"{'validation' if n_val < 1 else 'training'} split", source="--test-size",
                       hint="use more samples or a test size that leaves both sides non-empty")
    labels = None if stratify is None else _stratify_labels(stratify, len(ids), n_val)
    train, val = train_test_split(ids, test_size=n_val, random_state=seed, stratify=labels)
    return list(train), list(val)


def _stratify_labels(stratify: Sequence | np.ndarray, n: int, n_val: int) -> np.ndarray | None:
    labels = np.asarray([str(v) for v in stratify], dtype=object)
    if len(labels) != n:
        raise ValueError(f"stratify has {len(labels)} labels for {n} ids")
    counts = Counter(labels)
    rare = sorted(label for label, c in counts.items() if c < 2)
    if rare:
        log.warning("cannot stratify the split: %d label(s) have a single sample (%s); splitting at random",
                    len(rare), ", ".join(rare[:5]))
        return None
    if min(n_val, n - n_val) < len(counts):
        log.warning("cannot stratify the split: %d labels do not fit in a side of %d samples; splitting at "
                    "random", len(counts), min(n_val, n - n_val))
        return None
    return labels


def write_ids(path: str | os.PathLike, ids: Sequence[str]) -> None:
    """Write one id per line, atomically (a temporary file in the same folder, then renamed)."""
    text = "".join(f"{i}\n" for i in ids)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def read_ids(path: str | os.PathLike) -> list[str]:
    """Read ids written by `write_ids` (surrounding space stripped, blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise AamError("sample list not found", source=path)
    ids = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    ids = [i for i in ids if i]
    if not ids:
        raise AamError("sample list is empty", source=path)
    return ids


# ----------------------------------------------------------------------------- grouped splits and folds
def group_labels(groups: Sequence | np.ndarray, ids: Sequence[str], source: str = "--group-column") -> np.ndarray:
    """Group keys (strings) of ``ids``; a sample without a group value becomes its own group (logged once)."""
    values = np.asarray([None if _missing(g) else str(g).strip() for g in groups], dtype=object)
    if len(values) != len(ids):
        raise ValueError(f"groups has {len(values)} values for {len(ids)} ids")
    empty = [i for i, v in enumerate(values) if v is None or v == ""]
    if empty:
        log.warning("%s: %d sample(s) have no group value; each is treated as its own group", source, len(empty))
        for i in empty:
            values[i] = f"\x00{ids[i]}"  # cannot clash with a real value
    return values


def groups_on_both_sides(train_ids: Sequence[str], val_ids: Sequence[str], group_of: dict) -> list[str]:
    """Groups with samples on both sides of a split (sorted; samples without a group are ignored)."""
    shared = {group_of.get(s) for s in train_ids} & {group_of.get(s) for s in val_ids}
    return sorted(str(g).lstrip("\x00") for g in shared if g is not None)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def grouped_train_val_split(
    ids: Sequence[str],
    groups: Sequence | np.ndarray,
    test_size: float | int = 0.2,
    seed: int | None = None,
    stratify: Sequence | np.ndarray | None = None,
    source: str = "--group-column",
) -> tuple[list[str], list[str]]:
    """Split ``ids`` so that every group (e.g. a subject) lies on one side; the same ``seed``, the same split.

    Groups are shuffled and dealt to ``round(1 / fraction)`` folds balanced in samples (and, with ``stratify``,
    in label proportions: scikit-learn's ``StratifiedGroupKFold``); the first fold validates. A fold cannot
    split a group, so the validation size is only close to ``test_size``.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    ids = [str(i) for i in ids]
    keys = group_labels(groups, ids, source)
    n_groups = len(set(keys))
    if n_groups < 2:
        raise AamError(f"all {len(ids)} samples share one group, which leaves the other side of the split empty",
                       source=source, hint="a grouped split needs at least 2 groups (e.g. 2+ subjects)")
    n_val = _validation_size(len(ids), test_size)
    n_folds = min(n_groups, max(2, round(len(ids) / max(n_val, 1))))
    labels = np.zeros(len(ids), dtype=np.int64) if stratify is None else _class_codes(stratify, len(ids))
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=_sklearn_seed(seed))
    with _quiet_sklearn_warnings():
        train_index, val_index = next(splitter.split(np.zeros(len(ids)), labels, keys))
    if stratify is not None:
        _warn_if_class_missing(labels, val_index, stratify)
    return [ids[i] for i in train_index], [ids[i] for i in val_index]


def make_folds(
    ids: Sequence[str],
    n_folds: int = 5,
    seed: int | None = None,
    groups: Sequence | np.ndarray | None = None,
    stratify: Sequence | np.ndarray | None = None,
    leave_one_group_out: bool = False,
) -> dict[str, list[str]]:
    """Cross-validation folds ``{fold name: validation ids}``; every id is in exactly one fold.

    Plain k-fold (``KFold``, or ``StratifiedKFold`` with ``stratify``), grouped k-fold (``StratifiedGroupKFold``:
    every group in one fold, label proportions kept where the groups allow), or one fold per group
    (``leave_one_group_out``, folds named by their group). Shuffled with ``seed``.
    """
    from sklearn.model_selection import KFold, StratifiedGroupKFold, StratifiedKFold

    ids = [str(i) for i in ids]
    if leave_one_group_out:
        if groups is None:
            raise AamError("leave-one-group-out needs a group column", source="--leave-one-group-out",
                           hint="add --group-column COLUMN (e.g. subject or study)")
        keys = group_labels(groups, ids)
        names = sorted(set(keys))
        if len(names) < 2:
            raise AamError("the group column holds a single group", source="--group-column",
                           hint="leave-one-group-out needs at least 2 groups")
        return {name.lstrip("\x00"): [i for i, k in zip(ids, keys) if k == name] for name in names}
    if n_folds < 2:
        raise AamError(f"must be at least 2, got {n_folds}", source="--n-folds")
    labels = None if stratify is None else _class_codes(stratify, len(ids))
    x = np.zeros(len(ids))
    if groups is not None:
        keys = group_labels(groups, ids)
        if len(set(keys)) < n_folds:
            raise AamError(f"{len(set(keys))} groups cannot fill {n_folds} folds", source="--n-folds",
                           hint="use fewer folds, or --leave-one-group-out")
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=_sklearn_seed(seed))
        with _quiet_sklearn_warnings():
            parts = [val for _, val in splitter.split(x, np.zeros(len(ids)) if labels is None else labels, keys)]
    else:
        if len(ids) < n_folds:
            raise AamError(f"{len(ids)} samples cannot fill {n_folds} folds", source="--n-folds")
        if labels is not None and np.bincount(labels).min() < n_folds:
            log.warning("cannot stratify %d folds: a class has fewer samples than folds; folding at random",
                        n_folds)
            labels = None
        splitter = (KFold(n_folds, shuffle=True, random_state=_sklearn_seed(seed)) if labels is None
                    else StratifiedKFold(n_folds, shuffle=True, random_state=_sklearn_seed(seed)))
        parts = [val for _, val in splitter.split(x, labels)]
    return {f"fold{k}": [ids[i] for i in sorted(part)] for k, part in enumerate(parts)}


def _class_codes(stratify: Sequence | np.ndarray, n: int) -> np.ndarray:
    labels = np.asarray([str(v) for v in stratify], dtype=object)
    if len(labels) != n:
        raise ValueError(f"stratify has {len(labels)} labels for {n} ids")
    return np.unique(labels, return_inverse=True)[1]


def _warn_if_class_missing(labels: np.ndarray, val_index: np.ndarray, stratify) -> None:
    absent = sorted(set(labels.tolist()) - set(labels[val_index].tolist()))
    if absent:
        names = sorted({str(v) for v in stratify})
        log.warning("the grouped validation split holds no sample of class(es) %s: the groups do not allow it",
                    ", ".join(names[i] for i in absent))


def _sklearn_seed(seed: int | None) -> int | None:
    return None if seed is None else int(seed) % (2**32)


@contextmanager
def _quiet_sklearn_warnings() -> Iterator[None]:
    """Silence scikit-learn's 'least populated class' warnings; the callers log their own."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="sklearn")
        yield


# ----------------------------------------------------------------------------- group-column suggestion
GROUP_NAME_HINTS = ("subject", "host", "individual", "participant", "patient", "person", "donor", "mouse",
                    "animal", "study", "cohort", "family", "household", "cage")


def suggest_group_column(metadata: pd.DataFrame, ids: Sequence[str], exclude: Sequence[str] = ()) -> tuple[str, int] | None:
    """A metadata column that looks like a subject or study id: (name, number of distinct values), or None.

    A candidate has text (or integer) values, at least 3 distinct ones, and on average at least 2 samples per
    value; columns named like subject/host/study come first, then the one with the most values.
    """
    frame = metadata.loc[[i for i in ids if i in metadata.index]]
    n = len(frame)
    candidates = []
    for name in frame.columns:
        if name in exclude:
            continue
        values = frame[name].dropna().astype(str).str.strip()
        values = values[values != ""]
        distinct = values.nunique()
        if values.empty or distinct < 3 or distinct > n / 2:
            continue
        named = any(hint in str(name).lower() for hint in GROUP_NAME_HINTS)
        if not named and pd.to_numeric(values, errors="coerce").notna().all():
            continue  # a numeric column (an age, a count) is not an id unless named like one
        candidates.append((not named, -distinct, str(name)))
    if not candidates:
        return None
    _, negative_distinct, name = min(candidates)
    return name, -negative_distinct


def write_split(output_dir: str | os.PathLike, train_ids: Sequence[str], val_ids: Sequence[str],
                group_of: dict[str, str] | None = None, prefix: str = "") -> None:
    """``train_samples.txt`` and ``val_samples.txt``; with groups also ``split.tsv`` (sample_id, split, group)."""
    output_dir = Path(output_dir)
    write_ids(output_dir / f"{prefix}train_samples.txt", train_ids)
    write_ids(output_dir / f"{prefix}val_samples.txt", val_ids)
    if group_of is not None:
        rows = [(i, "train") for i in train_ids] + [(i, "val") for i in val_ids]
        text = "sample_id\tsplit\tgroup\n" + "".join(f"{i}\t{side}\t{group_of[i].lstrip(chr(0))}\n"
                                                       for i, side in rows)
        atomic_write(output_dir / f"{prefix}split.tsv", lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


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
