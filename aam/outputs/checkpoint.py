"""Self-contained checkpoints: weights, model config, data transforms and training state in one file.

A checkpoint is a plain dict saved with ``torch.save``::

    {
        "format": "aam-checkpoint", "version": 1,
        "kind": "predictor" | "encoder",
        "family": "transformer" | ...,   # the model family (aam.families); read from model_config when absent
        "model_config": {...},           # PredictorConfig / EncoderConfig / a family's config .to_dict()
        "model_state": {...},            # state_dict without wrapper prefixes
        "data": {...},                   # max_bp, token_limit, target transform, encoders, class labels...
        "training_state": {...} | None,  # epoch, optimizer, scheduler, RNG, best metric (for --resume-from)
        "versions": {...},
        "created": "2026-11-30T17:00:00+00:00",  # UTC
    }

Loading strips ``module.`` (DataParallel/DDP) and ``_orig_mod.`` (torch.compile) prefixes and maps every
tensor to the requested device, so a model trained on GPU predicts on CPU.

With ``--fsdp-sharded-checkpoint`` a checkpoint is a directory instead: every rank's shards of the weights and
optimizer state written by ``torch.distributed.checkpoint`` (``.metadata``, ``__<rank>_0.distcp``), plus
``aam_checkpoint.pt``, the dict above without the tensors and with ``"sharded": {"world_size": W}``.
:func:`load_checkpoint` reads either form into the same dict, in one process.
"""

from __future__ import annotations

import platform
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from aam import __version__
from aam.errors import AamError
from aam.families import family_name
from aam.fileio import atomic_write
from aam.models.build import unwrap_model

FORMAT = "aam-checkpoint"
VERSION = 1
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
SHARDED_HEADER = "aam_checkpoint.pt"  # the non-tensor part of a sharded checkpoint directory


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


def _payload(kind: str, model_config: Mapping[str, Any], data: Mapping[str, Any] | None,
             training_state: Mapping[str, Any] | None, family: str | None = None) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "family": family or family_name({"model_config": model_config}),
        "model_config": dict(model_config),
        "data": dict(data or {}),
        "training_state": dict(training_state) if training_state is not None else None,
        "versions": versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def save_checkpoint(
    path: str | Path,
    *,
    kind: str,
    model_config: Mapping[str, Any],
    model: nn.Module | None = None,
    model_state: Mapping[str, torch.Tensor] | None = None,
    data: Mapping[str, Any] | None = None,
    training_state: Mapping[str, Any] | None = None,
    family: str | None = None,
) -> None:
    """Write a self-contained checkpoint atomically (see the module docstring for the layout).

    The weights come from ``model`` or, already collected (e.g. gathered from FSDP shards), ``model_state``.
    """
    if (model is None) == (model_state is None):
        raise ValueError("give either model or model_state")
    state = strip_wrapper_prefixes(unwrap_model(model).state_dict() if model is not None else model_state)
    payload = _payload(kind, model_config, data, training_state, family)
    payload["model_state"] = {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in state.items()}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def save_sharded_checkpoint(
    directory: str | Path,
    *,
    kind: str,
    model_config: Mapping[str, Any],
    model_state: Mapping[str, Any],
    data: Mapping[str, Any] | None = None,
    training_state: Mapping[str, Any] | None = None,
    family: str | None = None,
) -> None:
    """Write this rank's shards of ``model_state`` (and of ``training_state['optimizer']``) into ``directory``.

    A collective: every rank calls it. The shards go to a staging folder beside ``directory`` that rank 0
    renames onto it once every rank has written, so a crash never leaves a complete-looking directory.
    """
    directory = Path(directory)
    staging = directory.with_name(f".{directory.name}.partial")
    main = dist.get_rank() == 0
    if main:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    dist.barrier()
    training_state = dict(training_state) if training_state is not None else None
    tensors = {"model": dict(model_state)}
    if training_state is not None and training_state.get("optimizer") is not None:
        tensors["optimizer"] = training_state.pop("optimizer")
    dcp.save(tensors, checkpoint_id=staging)
    if main:
        header = _payload(kind, model_config, data, training_state, family)
        header["sharded"] = {"world_size": dist.get_world_size()}
        torch.save(header, staging / SHARDED_HEADER)
        _replace_directory(staging, directory)
    dist.barrier()


def _replace_directory(new: Path, target: Path) -> None:
    """Move ``new`` onto ``target``; an older ``target`` is moved aside first and removed after."""
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


@dataclass
class Snapshot:
    """Weights and training state at one moment, collected on every rank and ready to be written.

    Either full (``model_state`` holds every tensor on rank 0; other ranks write nothing) or ``sharded``
    (each rank holds and writes its own shards of the weights and of ``training_state['optimizer']``).
    """

    model_state: dict[str, Any]
    training_state: dict[str, Any]
    sharded: bool = False

    def write(self, stem: Path, *, kind: str, model_config: Mapping[str, Any], data: Mapping[str, Any] | None = None,
              with_training_state: bool = True, family: str | None = None) -> Path:
        """Write to ``stem.pt`` (rank 0) or, sharded, to the directory ``stem`` (every rank); returns the path."""
        training_state = self.training_state if with_training_state else None
        if self.sharded:
            save_sharded_checkpoint(stem, kind=kind, model_config=model_config, model_state=self.model_state,
                                    data=data, training_state=training_state, family=family)
            return stem
        path = stem.with_name(f"{stem.name}.pt")
        if not dist.is_initialized() or dist.get_rank() == 0:
            save_checkpoint(path, kind=kind, model_config=model_config, model_state=self.model_state, data=data,
                            training_state=training_state, family=family)
        return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    expected_kind: str | tuple[str, ...] | None = None) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` or :func:`save_sharded_checkpoint`, validating it.

    ``path`` is a checkpoint file or a sharded checkpoint directory. Raises ``AamError`` for a missing,
    corrupt or incompatible file.
    """
    path = Path(path)
    if path.is_dir():
        payload = _read_sharded(path, map_location)
    elif path.is_file():
        payload = _read(path, map_location)
    else:
        raise AamError("checkpoint not found", source=path)
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
    payload["family"] = family_name(payload)  # checkpoints written before families were recorded
    return payload


def _read(path: Path, map_location: str | torch.device) -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:
        raise AamError(f"not a readable checkpoint ({type(err).__name__})", source=path,
                       hint="give a .pt file (or a sharded checkpoint directory) written by aam pretrain or aam train"
                       ) from None


def _read_sharded(directory: Path, map_location: str | torch.device) -> Any:
    """A sharded checkpoint directory as one checkpoint dict: the shards are joined in this process."""
    if not (directory / SHARDED_HEADER).is_file() or not (directory / ".metadata").is_file():
        raise AamError(f"not a sharded aam checkpoint (no {SHARDED_HEADER} or .metadata)", source=directory,
                       hint="give a .pt file or a checkpoint directory written with --fsdp-sharded-checkpoint")
    payload = _read(directory / SHARDED_HEADER, map_location)
    if not isinstance(payload, dict):
        return payload
    with tempfile.TemporaryDirectory() as tmp:
        joined = Path(tmp) / "joined.pt"
        try:
            dcp_to_torch_save(directory, joined)
        except Exception as err:
            raise AamError(f"the shards cannot be read ({type(err).__name__})", source=directory) from None
        tensors = torch.load(joined, map_location=map_location, weights_only=False)
    payload["model_state"] = tensors["model"]
    if payload.get("training_state") is not None and "optimizer" in tensors:
        payload["training_state"]["optimizer"] = tensors["optimizer"]
    return payload
