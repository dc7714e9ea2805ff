"""A run's inputs: the count table with its tokenised ASVs, UniFrac distance targets (from a matrix file or
computed from a tree), and the data loaders over them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, Subset

from aam.data.biom_table import load_table, rarefy, table_to_csr
from aam.data.dataset import (
    AmpliconData,
    BatchCollator,
    EpochShuffleSampler,
    MatrixDistanceLookup,
    SampleDataset,
    make_loader,
)
from aam.data.distances import (
    align_distance_matrix,
    align_sample_vector,
    read_distance_matrix,
    read_sample_vector,
)
from aam.data.sequences import resolve_sequences, tokenize
from aam.errors import AamError
from aam.training.distributed import (
    DistributedContext,
    ResumableDistributedSampler,
    ShardSampler,
)

log = logging.getLogger("aam")


# --unifrac-metric (reference names) -> built-in engine metric
ENGINE_METRICS = {"unifrac": "unweighted", "weighted": "weighted-normalized", "faith_pd": "faith_pd"}


def load_amplicon_data(table_path: str | Path, *, sequences_path: str | Path | None = None, max_bp: int = 150,
                       rarefy_depth: int | None = None, seed: int | None = None) -> AmpliconData:
    """Read a BIOM table (optionally rarefied) and tokenise its ASV sequences once."""
    table = load_table(table_path)
    if rarefy_depth is not None:
        table, _ = rarefy(table, rarefy_depth, seed)  # logs how many samples were too shallow
    count_table = table_to_csr(table)
    sequences = resolve_sequences(count_table.feature_ids, sequences_path, source=table_path)
    tokenized = tokenize(sequences, max_bp)  # logs how many sequences were truncated
    log.info("table %s: %d samples x %d ASVs", table_path, count_table.counts.shape[0], count_table.counts.shape[1])
    return AmpliconData(count_table.counts, tokenized.tokens, count_table.sample_ids, count_table.feature_ids,
                        sequences=sequences)


@dataclass
class DistanceTargets:
    """Per-batch distance targets: a lookup for ``BatchCollator`` and the rows of samples that have them."""

    lookup: Callable[[np.ndarray], np.ndarray]
    rows: np.ndarray  # rows of AmpliconData with a target
    metric: str


def load_distance_targets(data: AmpliconData, *, unifrac_matrix: str | None, tree: str | None,
                          metric: str) -> DistanceTargets | None:
    """Distance targets from ``--unifrac-matrix`` or computed on the fly from ``--tree``; None when neither."""
    if unifrac_matrix and tree:
        raise AamError("give either --unifrac-matrix or --tree, not both", source="--tree")
    if unifrac_matrix:
        return _targets_from_file(data, unifrac_matrix, metric)
    if tree:
        return _targets_from_tree(data, tree, metric)
    return None


def _targets_from_file(data: AmpliconData, path: str, metric: str) -> DistanceTargets:
    per_sample = metric == "faith_pd"
    matrix = read_sample_vector(path) if per_sample else read_distance_matrix(path)
    ids = data.sample_ids
    if matrix.ids is not None:
        present = set(matrix.ids)
        ids = [s for s in data.sample_ids if s in present]
        missing = len(data.sample_ids) - len(ids)
        if missing:
            log.warning("%d table sample(s) are not in %s and are left out", missing, path)
        if not ids:
            raise AamError("no sample id of the table is in the distance file", source=path,
                           hint="compute it from this table's samples (aam unifrac)")
    rows = data.rows_of(ids)
    if per_sample:
        full = np.zeros(data.n_samples, dtype=np.float32)
        full[rows] = align_sample_vector(matrix, ids, source=path)
    else:
        full = np.zeros((data.n_samples, data.n_samples), dtype=np.float32)
        full[np.ix_(rows, rows)] = align_distance_matrix(matrix, ids, source=path)
    return DistanceTargets(MatrixDistanceLookup(full), rows, metric)


class EngineDistanceLookup:
    """Distances of a batch computed on the fly by the UniFrac engine (picklable for DataLoader workers)."""

    def __init__(self, prepared):
        self.prepared = prepared

    def __call__(self, sample_index: np.ndarray) -> np.ndarray:
        return self.prepared.batch(sample_index, dtype="float32")


def _targets_from_tree(data: AmpliconData, tree: str, metric: str) -> DistanceTargets:
    from aam.unifrac import UniFracEngine, load_tree

    parsed = load_tree(Path(tree))
    try:
        engine = UniFracEngine(parsed, data.asv_ids, source=tree)
    except AamError:
        if data.sequences is None or data.sequences == data.asv_ids:
            raise
        engine = UniFracEngine(parsed, data.sequences, source=tree)  # tree tips named by sequence
    rows = np.arange(data.n_samples)
    if metric == "faith_pd":
        return DistanceTargets(MatrixDistanceLookup(engine.faith_pd(data.counts)), rows, metric)
    return DistanceTargets(EngineDistanceLookup(engine.for_batches(data.counts, ENGINE_METRICS[metric])), rows, metric)


def build_loaders(data: AmpliconData, train_rows: np.ndarray, val_rows: np.ndarray, *, batch_size: int,
                  token_limit: int, asv_sampling: str, seed: int, num_workers: int = 0,
                  distance_lookup: Callable | None = None, train_targets: np.ndarray | None = None,
                  val_targets: np.ndarray | None = None, train_categoricals: np.ndarray | None = None,
                  val_categoricals: np.ndarray | None = None, train_weights: np.ndarray | None = None,
                  pin_memory: bool = False, distributed: DistributedContext | None = None,
                  read_fraction: float | None = None, train_data: AmpliconData | None = None,
                  train_draw_weights: np.ndarray | None = None, drop_last_train: bool = False,
                  n_size_groups: int = 1):
    """Training loader (shuffled, ``asv_sampling``, reads thinned to ``read_fraction`` each epoch when given)
    and validation loader (every sample, abundance-first, all reads). ``train_data`` (the same samples and
    ASVs, some reads removed) replaces ``data`` for the training samples. ``train_draw_weights`` [len(train_rows)]
    (tables of a weighted corpus): each epoch draws the training samples with replacement in proportion.
    ``drop_last_train``: every training batch holds ``batch_size`` samples (the partial one is left out, a
    different one each epoch): one batch shape less to compile, and no batch too small for pairs.
    ``n_size_groups``: batches split their samples into that many groups of like size for the sample-level
    stacks (``aam.data.dataset.size_groups``)."""
    collator = BatchCollator(data.tokens, data.sample_ids, distance_lookup, n_size_groups)
    train_set = SampleDataset(data if train_data is None else train_data, train_rows, train_targets,
                              train_categoricals, token_limit, asv_sampling, seed, sample_weights=train_weights,
                              read_fraction=read_fraction)
    val_set = SampleDataset(data, val_rows, val_targets, val_categoricals, token_limit, "abundance", seed)
    weighted = train_draw_weights is not None and len(np.unique(train_draw_weights)) > 1
    weights = None
    if weighted:  # aligned with the dataset's rows (it leaves out samples without reads)
        weights = np.asarray(train_draw_weights, dtype=np.float64)[np.isin(train_rows, train_set.indices)]
    if distributed is not None and weighted:  # one weighted epoch drawn alike on every rank, each its share
        train_sampler = EpochShuffleSampler(len(train_set), seed, weights, distributed.rank, distributed.world_size)
        val_sampler = ShardSampler(len(val_set), distributed.rank, distributed.world_size)
    elif distributed is not None:  # same permutation on every rank, each takes its share
        train_sampler = ResumableDistributedSampler(train_set, distributed.world_size, distributed.rank,
                                                    shuffle=True, seed=seed)
        val_sampler = ShardSampler(len(val_set), distributed.rank, distributed.world_size)
    else:
        train_sampler, val_sampler = EpochShuffleSampler(len(train_set), seed, weights), None
    train_loader = make_loader(train_set, collator, batch_size, shuffle=True, num_workers=num_workers,
                               pin_memory=pin_memory, sampler=train_sampler, drop_last=drop_last_train)
    val_loader = make_loader(val_set, collator, batch_size, shuffle=False, num_workers=num_workers,
                             pin_memory=pin_memory, sampler=val_sampler)
    return train_loader, val_loader


def step_validation_loader(val_loader: DataLoader, n: int, seed: int,
                           distributed: DistributedContext | None = None) -> DataLoader:
    """``val_loader`` restricted to a fixed subsample of ``n`` of its samples (drawn once from ``seed``, in
    their order), for validation every N steps; ``val_loader`` itself when it holds no more than ``n``."""
    dataset = val_loader.dataset
    if len(dataset) <= n:
        return val_loader
    rows = np.sort(np.random.default_rng(seed).choice(len(dataset), size=n, replace=False))
    sampler = ShardSampler(n, distributed.rank, distributed.world_size) if distributed is not None else None
    return make_loader(Subset(dataset, rows.tolist()), val_loader.collate_fn, val_loader.batch_size, shuffle=False,
                       num_workers=val_loader.num_workers, pin_memory=val_loader.pin_memory, sampler=sampler)
