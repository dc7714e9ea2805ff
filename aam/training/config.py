"""The trainer's settings as data, importable without torch (the CLI reads its defaults from here)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

BEST_METRICS = ("val_loss", "r2", "mae", "accuracy", "f1")  # --best-metric choices
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
    tf32: bool = False
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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainerConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})
