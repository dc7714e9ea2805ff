"""The objectives' registries, importable without torch: names at once, implementations on first lookup
(see ``aam.registry``). A target loss: write it, then add its line here."""

from __future__ import annotations

from aam.registry import Registry, lazy_entries

TARGET_LOSSES: Registry = Registry("target loss", lazy_entries("aam.objectives.losses", {
    "mse": "MSELoss", "mae": "MAELoss", "huber": "HuberLoss", "quantile": "QuantileLoss",
    "asymmetric": "AsymmetricLoss"}))
