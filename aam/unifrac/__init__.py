"""A built-in, exact UniFrac engine: UniFrac as array algebra over a samples x branches matrix.

Public API: ``UniFracEngine(tree, asv_ids)`` with ``.pairwise``, ``.prepare(...).batch``, ``.for_batches(...).batch``, ``.batch`` and
``.faith_pd``; ``METRICS`` (the registry of metric names), ``get_metric``, ``load_tree``.
"""

from aam.unifrac.engine import PreparedSamples, UniFracEngine
from aam.unifrac.metrics import ALIASES, METRICS, get_metric
from aam.unifrac.tree import TreeIncidence, load_tree

__all__ = ["ALIASES", "METRICS", "PreparedSamples", "TreeIncidence", "UniFracEngine", "get_metric", "load_tree"]
