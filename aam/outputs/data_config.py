"""What a checkpoint records about its data, typed: how its model reads a table (sequence length, ASVs per
sample) and what its outputs mean (target, classes, scaling, categorical levels), plus the training ASVs'
fingerprints and the run record.

Checkpoints store :meth:`DataConfig.to_dict`; :meth:`DataConfig.from_dict` reads every version this package
has written: a field an older checkpoint lacks takes the value that version used (the defaults below, which
are the model configs' own), and a key it does not know is ignored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aam.models.config import EncoderConfig

_ENCODER = EncoderConfig()


def _tuple(value: Sequence | None) -> tuple | None:
    return None if value is None else tuple(value)


@dataclass(frozen=True)
class DataConfig:
    """The data side of a checkpoint (``kind`` encoder: the first four fields; predictor: all)."""

    max_bp: int = _ENCODER.max_bp
    token_limit: int = _ENCODER.token_limit
    asv_sampling: str = "abundance"
    seed: int | None = None
    unifrac_metric: str | None = None  # pretraining's distance target
    metadata_column: str | None = None
    classifier: bool = False
    class_labels: tuple[str, ...] = ()
    target_transform: Mapping[str, Any] | None = None  # a fitted aam.data.normalization transform, as data
    normalize_by: tuple[str, ...] | None = None  # columns of per-category target scaling
    categorical_columns: tuple[str, ...] = ()
    categorical_encoder: Mapping[str, Any] | None = None  # aam.data.categorical.CategoricalEncoder, as data
    quantiles: tuple[float, ...] | None = None
    forest_weight: float | None = None  # chosen by --forest-blend's inner cross-validation
    training_asvs: Any = field(default=None, compare=False)  # sorted uint64 fingerprints of the training ASVs (aam.data.novelty)
    run: Mapping[str, Any] = field(default_factory=dict)  # options, split and groups of the run

    def __post_init__(self) -> None:
        for name in ("class_labels", "categorical_columns"):
            object.__setattr__(self, name, tuple(getattr(self, name) or ()))
        for name in ("normalize_by", "quantiles"):
            object.__setattr__(self, name, _tuple(getattr(self, name)) or None)
        object.__setattr__(self, "class_labels", tuple(str(c) for c in self.class_labels))
        object.__setattr__(self, "run", dict(self.run or {}))

    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists for tuples) for ``torch.save`` and ``config.json``."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> DataConfig:
        """Read what any version wrote (None or {} for a checkpoint without data)."""
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in (values or {}).items() if k in names and v is not None}
        return cls(**known)

    def replace(self, **changes: Any) -> DataConfig:
        return dataclasses.replace(self, **changes)
