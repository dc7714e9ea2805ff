"""The corpus builder of ``benchmarks/pretrain_scale.py``: tables joined by sequence back into the corpus it
drew, a tree over every sequence, sharing across samples, and the cache reused."""

from __future__ import annotations

import json

import numpy as np

from aam.data.table_union import load_union, read_manifest
from aam.unifrac import UniFracEngine, load_tree


def test_the_synthetic_corpus_joins_back_whole(load_benchmark, tmp_path):
    scale = load_benchmark("pretrain_scale")
    info = scale.build_corpus(tmp_path / "c", n_samples=300, n_tables=3, per_sample=40, seed=2, pool=500)
    assert info["samples"] == 300 and info["distinct_asvs"] == 500
    union = load_union(read_manifest(tmp_path / "c" / "manifest.tsv"), max_bp=scale.SEQUENCE_LENGTH)
    data = union.data
    assert data.n_samples == 300 and data.counts.nnz == info["nonzeros"]
    assert np.bincount(union.source_of_sample).tolist() == [100, 100, 100]
    assert data.counts.shape[1] <= 500 and 20 < info["asvs_per_sample"] <= 40  # repeated draws merge
    held = np.diff(data.counts.tocsc().indptr)
    assert held.max() > 100 and np.median(held) < held.max() / 5  # a few ASVs shared widely, most rare
    engine = UniFracEngine(load_tree(tmp_path / "c" / "tree.nwk"), data.asv_ids)  # every sequence is a tip
    distances = engine.for_batches(data.counts, "unweighted").batch(np.arange(8))
    assert distances.shape == (8, 8) and 0 < distances[0, 1] < 1
    assert 0 < scale.distinct_per_batch(tmp_path / "c" / "study0.biom", batch_size=8, token_limit=32) <= 8 * 32
    again = scale.build_corpus(tmp_path / "c", n_samples=300, n_tables=3, per_sample=40, seed=2, pool=500)
    assert again == json.loads((tmp_path / "c" / "corpus.json").read_text()) == info
    assert scale.n_asvs_for(2000) == 3000 and 80000 < scale.n_asvs_for(500_000) < 85000


def test_abundant_asvs_are_the_widespread_ones(load_benchmark):
    """Abundance-occupancy: with the coupling, the ASVs most samples carry have the larger counts, so a batch's
    most abundant ASVs are shared (as in the real corpus); without it counts ignore popularity."""
    scale = load_benchmark("pretrain_scale")
    for coupling, expected in ((scale.ABUNDANCE_OCCUPANCY, True), (0.0, False)):
        counts = scale.sample_counts(2000, 3000, 130, np.random.default_rng(1), coupling).tocoo()
        widespread = counts.col < 30  # the 30 most popular ranks
        ratio = np.median(counts.data[widespread]) / np.median(counts.data[~widespread])
        assert bool(ratio > 3) == expected, (coupling, ratio)
