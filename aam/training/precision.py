"""How the training loop computes: float32, bf16 or fp16 autocast (fp16 with a gradient scaler), and TF32.

The Trainer calls one :class:`Precision` for every numeric choice of a step: the autocast region of forward
and loss, the backward (scaled under fp16), unscaling before gradients are clipped or logged, and the
optimizer step (skipped by the scaler when fp16 gradients overflowed). Its state (the loss scale) rides in
checkpoints under ``"scaler"``.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch.optim import Optimizer

AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """``name`` is fp32, bf16 or fp16 (``None`` and ``"none"`` mean fp32); ``tf32`` lets CUDA matmuls and
    convolutions use TensorFloat-32 (Ampere and later; no effect elsewhere)."""

    def __init__(self, name: str | None, device: torch.device, tf32: bool = False):
        name = "fp32" if name in (None, "none") else name
        if name not in AUTOCAST_DTYPES:
            raise ValueError(f"unknown precision {name!r}; choose from {', '.join(AUTOCAST_DTYPES)}")
        self.name = name
        self.device = device
        self.dtype = AUTOCAST_DTYPES[name]
        self.scaler = torch.amp.GradScaler(device.type, enabled=name == "fp16")
        self.tf32 = tf32 and device.type == "cuda"
        if self.tf32:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    def autocast(self) -> contextlib.AbstractContextManager:
        """The region forward and loss run in (nothing under fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def unscale_(self, optimizer: Optimizer) -> None:
        """Gradients in true units (before clipping or logging their norms)."""
        self.scaler.unscale_(optimizer)

    def step(self, optimizer: Optimizer) -> None:
        """The optimizer step (skipped when fp16 gradients are not finite) and the loss-scale update."""
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scaler.load_state_dict(state)

    def __repr__(self) -> str:
        return f"Precision({self.name!r}{', tf32' if self.tf32 else ''})"
