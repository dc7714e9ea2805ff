"""The trainer's settings as data, importable without torch (the CLI reads its defaults from here)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from aam.objectives.metric_names import metric_direction

PRECISIONS = ("fp16", "bf16", "fp32")  # --mixed-precision ("none" on the CLI is fp32)
@dataclass(frozen=True)
class TrainerConfig:
    """Optimisation and selection settings shared by ``aam pretrain`` and ``aam train``."""

    epochs: int = 100
    optimizer: str = "adamw"
    lr: float = 1e-4
    weight_decay: float = 0.01
    categorical_lr: float | None = None
    scheduler: str = "warmup_cosine"
    warmup_steps: int | None = None
    warmup_fraction: float = 0.05
    scheduler_t0: int | None = None
    scheduler_t_mult: int | None = None
    scheduler_eta_min: float | None = None
    scheduler_patience: int | None = None
    scheduler_factor: float | None = None
    scheduler_min_lr: float | None = None
    patience: int = 10
    max_grad_norm: float | None = None
    gradient_accumulation_steps: int = 1
    mixed_precision: str | None = None  # fp32 (None) | bf16 | fp16, see aam.training.precision
    tf32: bool = True  # TF32 matmuls on CUDA GPUs that have them (Ampere and later); no effect elsewhere
    compile_model: bool = False
    compile_backend: str = "inductor"  # torch.compile backend (tests on CPU use "eager" and "aot_eager")
    attn_implementation: str = "sdpa"  # SDPA kernels on CUDA (aam.models.layers.ATTENTION_BACKENDS)
    best_metric: str = "val_loss"
    mask_nucleotides: bool = True
    log_grad_norms: bool = False
    progress: bool = True
    ema_decay: float | None = None
    memory_profile: bool = False
    checkpoint_every_steps: int | None = None  # also write the "last" checkpoint every N optimizer steps
    progress_interval: float = 60.0  # seconds between progress lines when no progress bar is shown (0: every step)
    val_every_steps: int | None = None  # also validate (on the step-validation loader) every N optimizer steps

    def __post_init__(self) -> None:
        from aam.training.registries import OPTIMIZERS, SCHEDULERS

        for name in ("epochs", "gradient_accumulation_steps"):
            _at_least(name, getattr(self, name), 1)
        for name in ("checkpoint_every_steps", "val_every_steps", "warmup_steps"):
            if getattr(self, name) is not None:
                _at_least(name, getattr(self, name), 1 if name != "warmup_steps" else 0)
        _at_least("patience", self.patience, 0)
        _at_least("weight_decay", self.weight_decay, 0)
        _at_least("progress_interval", self.progress_interval, 0)
        for name in ("lr", "categorical_lr", "max_grad_norm"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0; got {value!r}")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must be in [0, 1); got {self.warmup_fraction!r}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1); got {self.ema_decay!r}")
        _one_of("optimizer", self.optimizer, OPTIMIZERS.names())
        _one_of("scheduler", self.scheduler, SCHEDULERS.names())
        if self.mixed_precision is not None:
            _one_of("mixed_precision", self.mixed_precision, PRECISIONS)
        metric_direction(self.best_metric)  # a metric the trainer can rank epochs by

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainerConfig:
        """The config of ``to_dict``; an unknown key is an error (a typo must not pass for a default)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown TrainerConfig fields: {', '.join(unknown)}")
        return cls(**values)


def _at_least(name: str, value: Any, low: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
        raise ValueError(f"{name} must be a number >= {low}; got {value!r}")


def _one_of(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
