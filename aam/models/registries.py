"""The model layer's registries, importable without torch: names are known at once, implementations load on
first lookup. To add a fusion mode: write the class (``aam.models.fusion.CategoricalFusion``) and call
``FUSIONS.register("name", TheClass)`` (or add a ``Lazy`` entry here); the CLI, the config checks and the
model builder then know it (CONTRIBUTING.md walks through it)."""

from __future__ import annotations

from aam.registry import Registry, lazy_entries

FUSIONS: Registry = Registry("categorical fusion", lazy_entries("aam.models.fusion", {
    "concat": "ConcatFusion", "add": "AddFusion", "gmu": "GMUFusion", "cross-attention": "CrossAttentionFusion",
    "perceiver": "PerceiverFusion"}))
OUTPUT_CONSTRAINTS: Registry = Registry("output constraint", lazy_entries("aam.models.heads", {
    "none": "Unconstrained", "bounded": "Bounded", "nonnegative": "NonNegative",
    "nonnegative-learnable": "LearnableSoftplus"}))
REGRESSION_HEADS: Registry = Registry("regression head", lazy_entries("aam.models.heads", {
    "linear": "LinearHead", "mlp": "MLPHead", "residual": "ResidualHead"}))
COUNT_EMBEDDINGS: Registry = Registry("count embedding", lazy_entries("aam.models.sample_encoder", {
    "add": "AddCountEmbedding", "concat": "ConcatCountEmbedding", "film": "FiLMCountEmbedding"}))
MASK_STRATEGIES: Registry = Registry("nucleotide mask strategy", lazy_entries("aam.models.asv_encoder", {
    "random": "RANDOM_MASK", "span": "SPAN_MASK"}))
