"""Train/validation split of sample ids, and the sample-list files (``train_samples.txt``, ``val_samples.txt``)."""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

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
