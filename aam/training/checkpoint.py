"""Self-contained checkpoints: weights, model config, data transforms and training state in one file.

A checkpoint is a plain dict saved with ``torch.save``::

    {
        "format": "aam-checkpoint", "version": 1,
        "kind": "predictor" | "encoder",
        "model_config": {...},           # PredictorConfig / EncoderConfig .to_dict()
        "model_state": {...},            # state_dict without wrapper prefixes
        "data": {...},                   # max_bp, token_limit, target transform, encoders, class labels...
        "training_state": {...} | None,  # epoch, optimizer, scheduler, RNG, best metric (for --resume-from)
        "versions": {...},
    }

Loading strips ``module.`` (DataParallel/DDP) and ``_orig_mod.`` (torch.compile) prefixes and maps every
tensor to the requested device, so a model trained on GPU predicts on CPU.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aam import __version__
from aam.errors import AamError
from aam.fileio import atomic_write

FORMAT = "aam-checkpoint"
VERSION = 1
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare module inside DataParallel/DDP/FSDP and ``torch.compile`` wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        else:
            return model


def strip_wrapper_prefixes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove ``module.`` and ``_orig_mod.`` from the start of every key (in any order, repeatedly)."""
    stripped = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        stripped[key] = value
    return stripped


def versions() -> dict[str, str]:
    return {"aam": __version__, "torch": torch.__version__, "python": platform.python_version()}


def save_checkpoint(
    path: str | Path,
    *,
    kind: str,
    model: nn.Module,
    model_config: Mapping[str, Any],
    data: Mapping[str, Any] | None = None,
    training_state: Mapping[str, Any] | None = None,
) -> None:
    """Write a self-contained checkpoint atomically (see the module docstring for the layout)."""
    state = strip_wrapper_prefixes(unwrap_model(model).state_dict())
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "model_config": dict(model_config),
        "model_state": {k: v.detach().cpu() for k, v in state.items()},
        "data": dict(data or {}),
        "training_state": dict(training_state) if training_state is not None else None,
        "versions": versions(),
    }
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    expected_kind: str | tuple[str, ...] | None = None) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, validating its layout.

    Raises ``AamError`` for a missing, corrupt or incompatible file.
    """
    path = Path(path)
    if not path.is_file():
        raise AamError("checkpoint not found", source=path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:
        raise AamError(f"not a readable checkpoint ({type(err).__name__})", source=path,
                       hint="give a .pt file written by aam pretrain or aam train") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise AamError("not an aam checkpoint (no 'format: aam-checkpoint' header)", source=path,
                       hint="give best_model.pt, last_model.pt or pretrained_encoder.pt written by aam")
    if payload.get("version", 0) > VERSION:
        raise AamError(f"checkpoint format version {payload['version']} is newer than this aam supports",
                       source=path, hint="upgrade aam")
    for key in ("kind", "model_config", "model_state"):
        if key not in payload:
            raise AamError(f"checkpoint is incomplete (missing '{key}')", source=path)
    if expected_kind is not None:
        kinds = (expected_kind,) if isinstance(expected_kind, str) else expected_kind
        if payload["kind"] not in kinds:
            raise AamError(f"checkpoint holds a '{payload['kind']}' model, expected {' or '.join(kinds)}",
                           source=path)
    payload["model_state"] = strip_wrapper_prefixes(payload["model_state"])
    return payload
