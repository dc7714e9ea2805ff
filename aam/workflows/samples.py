"""Which samples train, validate or stay out: the train/validation split (random, stratified, grouped or
given), sample groups from a metadata column, and excluded samples."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from aam.data.metadata import require_column
from aam.data.split import (
    group_labels,
    grouped_train_val_split,
    groups_on_both_sides,
    read_ids,
    suggest_group_column,
    train_val_split,
)
from aam.errors import AamError
from aam.workflows.run_config import SampleSplit

log = logging.getLogger("aam")


def split_samples(ids: list[str], split: SampleSplit, seed: int, stratify: np.ndarray | None = None,
                  groups: np.ndarray | None = None) -> tuple[list[str], list[str]]:
    """Train and validation ids: from ``--val-samples FILE`` (e.g. a cross-validation fold) when given, else a
    seeded split of ``--test-size``, grouped (every group on one side) when ``groups`` are given."""
    if not split.val_samples:
        if groups is not None:
            return grouped_train_val_split(ids, groups, split.test_size, seed, stratify=stratify)
        return train_val_split(ids, split.test_size, seed, stratify=stratify)
    listed = set(read_ids(split.val_samples))
    val_ids = [s for s in ids if s in listed]
    train_ids = [s for s in ids if s not in listed]
    missing = len(listed) - len(val_ids)
    if missing:
        log.warning("%d id(s) of %s are not usable samples of this run and are ignored", missing, split.val_samples)
    if not val_ids or not train_ids:
        raise AamError(f"leaves an empty {'validation' if not val_ids else 'training'} split", source="--val-samples",
                       hint="list some, but not all, of the table's sample ids (one per line)")
    if groups is not None:
        shared = groups_on_both_sides(train_ids, val_ids, dict(zip(ids, groups)))
        if shared:
            log.warning("%d group(s) of --group-column have samples on both sides of --val-samples (e.g. %s): "
                        "validation scores will flatter the model", len(shared), shared[0])
    return train_ids, val_ids


_SUGGESTED: set[tuple[Any, str]] = set()  # (metadata file, column) already suggested as --group-column


def sample_groups(metadata: Any, ids: list[str], split: SampleSplit, target: str | None = None,
                  inputs: tuple[str, ...] = ()) -> np.ndarray | None:
    """``--group-column``'s group of each id (None without it); without it, suggests a subject-like column once."""
    column = (split.group_column or "").strip()
    if not column:
        if metadata is not None and not split.val_samples:
            suggestion = suggest_group_column(metadata, ids, exclude=(target, *inputs))
            if suggestion is not None and (split.metadata, suggestion[0]) not in _SUGGESTED:
                _SUGGESTED.add((split.metadata, suggestion[0]))  # once per process (e.g. per CV run)
                log.warning("metadata column %r has %d values shared by %d samples: if they mark the same subject "
                            "or study, pass --group-column %s so validation measures new subjects (samples of "
                            "one subject on both sides flatter early stopping)", suggestion[0], suggestion[1],
                            len(ids), suggestion[0])
        return None
    if metadata is None:
        raise AamError("needs --metadata (the file with the group column)", source="--group-column")
    require_column(metadata, column, source=split.metadata, flag="--group-column")
    if column == target:
        raise AamError("the group column cannot be the target", source="--group-column")
    return group_labels(metadata.loc[ids, column].to_numpy(), ids)


def exclude_samples(ids: list[str], split: SampleSplit) -> list[str]:
    """``ids`` without those listed in ``--exclude-samples FILE`` (e.g. an outer cross-validation test fold)."""
    if not split.exclude_samples:
        return ids
    excluded = set(read_ids(split.exclude_samples))
    kept = [s for s in ids if s not in excluded]
    if not kept:
        raise AamError("excludes every usable sample", source="--exclude-samples")
    log.info("--exclude-samples: %d sample(s) left out of training and validation", len(ids) - len(kept))
    return kept
