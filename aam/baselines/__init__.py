"""The classical baselines AAM is measured against, in one place that every command calls: the estimators
(``estimators``: random forest, CLR-linear, boosted trees, and the last two reading a tree's clades too) and
saved baselines (``store``: write, read and predict with the file of ``aam rf-baseline --save-model``). ``BASELINES`` names them without importing
scikit-learn (the CLI's choices)."""

from __future__ import annotations

from aam.registry import Registry, lazy_entries

# the random forest's settings (the reference tool's baseline): the defaults of aam rf-baseline, of
# aam cross-validate's --rf-* options and of the ``forest`` estimator; here, not in ``estimators``, so the CLI reads
# them without importing numpy and scipy
FOREST_TREES = 500
FOREST_MAX_FEATURES = "sqrt"
# the regression losses of the boosted trees (scikit-learn's names), and the ``boosted`` baseline's: the absolute
# error since session 21 (before: the squared error), better on 11 of the 12 regression task-seeds of the
# real-data suite by rule 1 of _design_plan/real_suite.md
BOOSTED_REGRESSION_LOSSES = ("squared_error", "absolute_error")
BOOSTED_BASELINE_LOSS = "absolute_error"

BASELINES: Registry = Registry("classical baseline", lazy_entries("aam.baselines.estimators", {
    "forest": "FOREST", "clr-linear": "CLR_LINEAR", "boosted": "BOOSTED",
    "clr-linear-clades": "CLR_LINEAR_CLADES", "boosted-clades": "BOOSTED_CLADES"}))
# the baselines that also read the log shares of the clades of a phylogeny (they need --tree; session 24)
TREE_BASELINES = ("clr-linear-clades", "boosted-clades")
