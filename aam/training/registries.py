"""The training engine's registries, importable without torch: names at once, implementations on first lookup
(see ``aam.registry``). Schedule or optimizer: write it, then add its line here."""

from __future__ import annotations

from aam.registry import Registry, lazy_entries

SCHEDULERS: Registry = Registry("learning-rate schedule", lazy_entries("aam.training.schedulers", {
    "warmup_cosine": "warmup_cosine", "cosine": "cosine", "cosine_restarts": "cosine_restarts",
    "plateau": "plateau", "onecycle": "onecycle"}))
OPTIMIZERS: Registry = Registry("optimizer", lazy_entries("aam.training.optim", {
    "adamw": "adamw", "adam": "adam", "sgd": "sgd_momentum"}))
