"""Samples as sets of ASVs, and their batches: the fast data path between a table and the model.

`AmpliconData` holds the count table (CSR, samples x ASVs) and the tokenised ASV sequences, and orders each
sample's ASVs by abundance once, at construction. `SampleDataset` yields one sample's selected ASV columns and
counts in O(sample size); `BatchCollator` pads a list of them to the longest sample of the batch and
de-duplicates ASVs across the batch, giving the `Batch` the model consumes (see
``_design_plan/00_architecture_and_interfaces.md``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, NamedTuple

import numpy as np
import torch
from scipy import sparse
from torch.utils.data import DataLoader, Dataset, Sampler

from aam.data.vocabulary import PAD
from aam.errors import AamError

log = logging.getLogger(__name__)


SeedKey = tuple[int, int, int]  # (dataset seed, epoch, sample row): one random stream per sample and epoch


@dataclass(eq=False)
class AmpliconData:
    """A count table with its tokenised ASVs.

    ``counts``: [N_samples, N_asvs] (any scipy sparse or dense array; stored as CSR float32 with explicit
    zeros removed); ``tokens``: [N_asvs, L] uint8, row j is the tokenised sequence of column j.
    Each sample's nonzero ASVs are sorted once by abundance (descending, ties in table order) into flat
    arrays indexed by ``counts.indptr``.
    """

    counts: sparse.csr_matrix
    tokens: np.ndarray
    sample_ids: list[str]
    asv_ids: list[str]
    sequences: list[str] | None = None  # ASV sequences when the ids are not the sequences themselves
    _abundance_asvs: np.ndarray = field(init=False, repr=False)  # [nnz] int32 ASV columns, per sample by rank
    _abundance_counts: np.ndarray = field(init=False, repr=False)  # [nnz] float32, aligned with the above

    def __post_init__(self) -> None:
        counts = canonical_counts(self.counts)
        self.sample_ids = [str(s) for s in self.sample_ids]
        self.asv_ids = [str(a) for a in self.asv_ids]
        if counts.shape != (len(self.sample_ids), len(self.asv_ids)):
            raise ValueError(f"counts {counts.shape} do not match {len(self.sample_ids)} sample ids x "
                             f"{len(self.asv_ids)} ASV ids")
        if self.tokens.ndim != 2 or self.tokens.shape[0] != len(self.asv_ids):
            raise ValueError(f"tokens {self.tokens.shape} do not have one row per ASV ({len(self.asv_ids)})")
        if counts.nnz and not (np.all(np.isfinite(counts.data)) and counts.data.min() > 0):
            raise AamError("the table holds negative or non-finite counts", hint="counts must be >= 0")
        self.counts = counts
        self._abundance_asvs, self._abundance_counts = abundance_order(counts)

    @classmethod
    def from_sorted(cls, counts: sparse.csr_matrix, abundance_asvs: np.ndarray, abundance_counts: np.ndarray,
                    tokens: np.ndarray, sample_ids: list[str], asv_ids: list[str],
                    sequences: list[str] | None = None) -> AmpliconData:
        """Built from arrays already in this class's form (summed, zero-free, sorted CSR; per-sample
        abundance order): kept as they are, e.g. memory-mapped (:mod:`aam.data.disk_union`), unchecked."""
        self = object.__new__(cls)
        self.counts, self.tokens, self.sample_ids, self.asv_ids = counts, tokens, sample_ids, asv_ids
        self.sequences = sequences
        self._abundance_asvs, self._abundance_counts = abundance_asvs, abundance_counts
        return self

    @property
    def n_samples(self) -> int:
        return self.counts.shape[0]

    @property
    def asvs_per_sample(self) -> np.ndarray:
        """Number of nonzero ASVs of each sample, [N_samples] int64."""
        return np.diff(self.counts.indptr).astype(np.int64)

    def by_abundance(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """ASV columns [n] int64 and counts [n] float32 (a view) of sample ``row``, most abundant first."""
        start, end = self.counts.indptr[row], self.counts.indptr[row + 1]
        return self._abundance_asvs[start:end].astype(np.int64), self._abundance_counts[start:end]

    def by_table_order(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """ASV columns [n] int64 and counts [n] float32 of sample ``row``, in table column order."""
        start, end = self.counts.indptr[row], self.counts.indptr[row + 1]
        return self.counts.indices[start:end].astype(np.int64), self.counts.data[start:end]

    def rows_of(self, sample_ids: Sequence[str], source: str | None = None) -> np.ndarray:
        """Row of each id, [N] int64; ids absent from the table raise `AamError` naming a few."""
        position = {s: i for i, s in enumerate(self.sample_ids)}
        missing = [s for s in sample_ids if str(s) not in position]
        if missing:
            raise AamError(f"{len(missing)} sample id(s) are not in the table: {', '.join(missing[:5])}",
                           source=source)
        return np.array([position[str(s)] for s in sample_ids], dtype=np.int64)

    def keep_asvs(self, keep: np.ndarray) -> AmpliconData:
        """The same samples and ASV columns with the reads of ASVs outside ``keep`` ([N_asvs] bool) removed."""
        counts = self.counts @ sparse.diags(np.asarray(keep, dtype=np.float32))
        return AmpliconData(counts.tocsr(), self.tokens, self.sample_ids, self.asv_ids, self.sequences)

    def subset(self, sample_indices: Sequence[int] | np.ndarray) -> AmpliconData:
        """The samples at ``sample_indices`` (rows), with every ASV column and the same tokens."""
        rows = np.asarray(sample_indices, dtype=np.int64)
        return AmpliconData(self.counts[rows], self.tokens, [self.sample_ids[i] for i in rows], self.asv_ids,
                            self.sequences)


def canonical_counts(counts: sparse.spmatrix | np.ndarray) -> sparse.csr_matrix:
    """Counts as `AmpliconData` keeps them: a float32 CSR copy, duplicates summed, explicit zeros removed,
    columns sorted within each row."""
    counts = sparse.csr_matrix(counts, dtype=np.float32, copy=True)
    counts.sum_duplicates()
    counts.eliminate_zeros()
    counts.sort_indices()
    return counts


def abundance_order(counts: sparse.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Each row's columns [nnz] int32 and counts [nnz] float32, most abundant first (ties: column order), laid
    out by ``counts.indptr``. With the CSR's own data and indices, 16 bytes per non-zero in all: 32-bit
    columns, widened per sample when read."""
    rows = np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr))  # [nnz] row of each entry
    order = np.lexsort((counts.indices, -counts.data, rows))  # by row, then count desc, then column
    return counts.indices[order].astype(np.int32), counts.data[order]


def _select_abundance(asvs: np.ndarray, counts: np.ndarray, limit: int,
                      seed_key: SeedKey) -> tuple[np.ndarray, np.ndarray]:
    """The ``limit`` most abundant ASVs, most abundant first."""
    return asvs[:limit], counts[:limit]


def _select_first(asvs: np.ndarray, counts: np.ndarray, limit: int,
                  seed_key: SeedKey) -> tuple[np.ndarray, np.ndarray]:
    """The first ``limit`` ASVs in table column order, in that order."""
    keep = np.argsort(asvs, kind="stable")[:limit]
    return asvs[keep], counts[keep]


def _select_random(asvs: np.ndarray, counts: np.ndarray, limit: int,
                   seed_key: SeedKey) -> tuple[np.ndarray, np.ndarray]:
    """A random ``limit`` ASVs (a new draw per epoch), kept in abundance order."""
    if len(asvs) <= limit:
        return asvs, counts
    keep = np.sort(np.random.default_rng(seed_key).choice(len(asvs), size=limit, replace=False))
    return asvs[keep], counts[keep]


# name -> selection from a sample's ASVs and counts, most abundant first (``AmpliconData.by_abundance``)
ASV_SAMPLERS: dict[str, Callable[[np.ndarray, np.ndarray, int, SeedKey], tuple[np.ndarray, np.ndarray]]] = {
    "abundance": _select_abundance,
    "first": _select_first,
    "random": _select_random,
}


class SampleDataset(Dataset):
    """One item per sample: its selected ASV columns and counts, plus optional target and categoricals.

    ``indices`` are rows of ``data`` (default: all); ``targets`` [N] (float, or int64 class indices) and
    ``categoricals`` [N, K] int64 are aligned with ``indices``. At most ``token_limit`` ASVs are kept per
    sample, chosen by ``asv_sampling`` (`ASV_SAMPLERS`). ``random`` draws from a stream keyed by
    (``seed``, epoch, sample), so it differs per epoch (`set_epoch`) yet is reproducible and independent of
    the number of DataLoader workers; evaluate with ``abundance``. Samples without any nonzero ASV are left
    out; their ids are in `skipped_ids`.
    """

    def __init__(
        self,
        data: AmpliconData,
        indices: Sequence[int] | np.ndarray | None = None,
        targets: Sequence[float] | np.ndarray | None = None,
        categoricals: np.ndarray | None = None,
        token_limit: int = 1024,
        asv_sampling: str = "abundance",
        seed: int | None = None,
        sample_weights: np.ndarray | None = None,
        read_fraction: float | None = None,
    ):
        if read_fraction is not None and not 0.0 < read_fraction <= 1.0:
            raise AamError(f"must be in (0, 1], got {read_fraction}", source="--augment-reads")
        if isinstance(token_limit, bool) or not isinstance(token_limit, int | np.integer) or token_limit < 1:
            raise AamError(f"must be a positive integer, got {token_limit!r}", source="--token-limit")
        if asv_sampling not in ASV_SAMPLERS:
            raise AamError(f"unknown ASV sampling {asv_sampling!r}", source="--asv-sampling",
                           hint=f"choose one of {', '.join(ASV_SAMPLERS)}")
        rows = np.arange(data.n_samples) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
        targets = None if targets is None else _as_targets(targets, len(rows))
        if categoricals is not None:
            categoricals = np.asarray(categoricals, dtype=np.int64).reshape(len(rows), -1)  # [N, K]
        keep = data.asvs_per_sample[rows] > 0
        self.skipped_ids = [data.sample_ids[r] for r in rows[~keep]]
        if self.skipped_ids:
            log.warning("%d sample(s) have no ASV with a nonzero count and are skipped: %s",
                        len(self.skipped_ids), ", ".join(self.skipped_ids[:5]))
            if not keep.any():
                raise AamError(f"none of the {len(rows)} samples has an ASV with a nonzero count")
        self.data = data
        self.indices = rows[keep]  # [N] rows of data
        self.targets = None if targets is None else targets[keep]
        self.categoricals = None if categoricals is None else categoricals[keep]
        self.sample_weights = None if sample_weights is None else np.asarray(sample_weights, np.float32)[keep]
        self.token_limit = int(token_limit)
        self.asv_sampling = asv_sampling
        self.read_fraction = None if read_fraction is None or read_fraction == 1.0 else float(read_fraction)
        self.seed = int(np.random.SeedSequence().entropy if seed is None else seed) % 2**64  # >= 0 for numpy
        self.epoch = 0

    @property
    def sample_ids(self) -> list[str]:
        """Ids of the kept samples, in dataset order."""
        return [self.data.sample_ids[r] for r in self.indices]

    def set_epoch(self, epoch: int) -> None:
        """Select a new random subset of ASVs (``asv_sampling='random'``) for ``epoch``."""
        self.epoch = int(epoch)

    @property
    def depends_on_epoch(self) -> bool:
        """Whether items differ between epochs (random ASV subsets, thinned reads): DataLoader workers must then
        be started afresh each epoch to see :meth:`set_epoch`, which the main process calls."""
        return self.asv_sampling == "random" or self.read_fraction is not None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = int(self.indices[i])
        asvs, counts = self.data.by_abundance(row)
        if self.read_fraction is not None:  # a new draw of the reads each epoch, before the selection
            rng = np.random.default_rng((self.seed, self.epoch, row, 1))
            asvs, counts = thin_reads(asvs, counts, self.read_fraction, rng)
        select = ASV_SAMPLERS[self.asv_sampling]
        asvs, counts = select(asvs, counts, self.token_limit, (self.seed, self.epoch, row))
        item: dict[str, Any] = {"sample_index": row, "asv_index": asvs, "counts": counts}  # [n], [n]
        if self.targets is not None:
            item["target"] = self.targets[i]
        if self.categoricals is not None:
            item["categoricals"] = self.categoricals[i]  # [K]
        if self.sample_weights is not None:
            item["sample_weight"] = self.sample_weights[i]
        return item


def thin_reads(asvs: np.ndarray, counts: np.ndarray, fraction: float,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Keep each read with probability ``fraction`` (binomial thinning: a rarefaction-like re-draw); ASVs left
    without reads drop out; the result is most abundant first (ties by column). At least one read survives."""
    drawn = rng.binomial(np.maximum(np.rint(counts), 1).astype(np.int64), fraction)  # [n]
    if not drawn.any():  # an empty sample would vanish from the batch: keep one read of the most abundant ASV
        drawn[np.argmax(counts)] = 1
    keep = drawn > 0
    asvs, drawn = asvs[keep], drawn[keep]
    order = np.lexsort((asvs, -drawn))
    return asvs[order], drawn[order].astype(np.float32)


def asvs_in_groups(data: AmpliconData, rows: np.ndarray, groups: Sequence[str], min_groups: int) -> np.ndarray:
    """[N_asvs] bool: ASVs with reads in samples of at least ``min_groups`` distinct groups among ``rows``."""
    codes = np.unique(np.asarray(groups, dtype=object), return_inverse=True)[1]  # [len(rows)]
    present = data.counts[np.asarray(rows)] > 0  # [R, N_asvs] bool
    by_group = sparse.csr_matrix((np.ones(len(rows)), (codes, np.arange(len(rows)))))  # [G, R]
    carriers = (by_group @ present.astype(np.float32)) > 0  # [G, N_asvs]
    return np.asarray(carriers.sum(axis=0)).ravel() >= min_groups


def _as_targets(targets: Sequence[float] | np.ndarray, n: int) -> np.ndarray:
    """Targets as float32 (regression) or int64 (class indices), with ``n`` rows."""
    values = np.asarray(targets)
    if len(values) != n:
        raise ValueError(f"{len(values)} targets for {n} samples")
    is_class = np.issubdtype(values.dtype, np.integer) or values.dtype == bool
    return values.astype(np.int64 if is_class else np.float32)


class SizeGroups(NamedTuple):
    """A batch's samples in groups of like size, so the sample-level transformer pads each group to its own
    largest sample instead of the batch's (samples attend only within themselves, so the result is the same;
    the pairs of the distance loss are still the whole batch's). ``order`` [B]: the samples from largest to
    smallest; ``restore`` [B]: its inverse; ``bounds``: (start, stop, slots) of each group in that order, host
    integers (no device sync to read them)."""

    order: torch.Tensor
    restore: torch.Tensor
    bounds: tuple[tuple[int, int, int], ...]


def size_groups(lengths: np.ndarray, n_groups: int) -> SizeGroups | None:
    """[B] ASVs per sample -> up to ``n_groups`` groups of consecutive samples by decreasing size, as equal
    in count as can be (two samples or more each), each padded to its largest sample; a group padded like the
    one before it joins it. None when one group would do.

    Under ``torch.compile`` the groups' sizes are symbolic: groups of one sample, or a later group as wide as
    the batch, would each add a specialised graph, hence the two rules; what remains is at most one graph per
    number of groups."""
    n_groups = min(int(n_groups), len(lengths) // 2)
    if n_groups <= 1:
        return None
    order = np.argsort(-lengths, kind="stable")
    edges = np.linspace(0, len(order), n_groups + 1).round().astype(int)
    bounds: list[tuple[int, int, int]] = []
    for start, stop in zip(edges[:-1], edges[1:]):
        slots = int(lengths[order[start]])
        if bounds and bounds[-1][2] == slots:
            bounds[-1] = (bounds[-1][0], int(stop), slots)
        else:
            bounds.append((int(start), int(stop), slots))
    if len(bounds) == 1:
        return None
    restore = np.empty_like(order)
    restore[order] = np.arange(len(order))
    return SizeGroups(torch.from_numpy(order), torch.from_numpy(restore), tuple(bounds))


@dataclass
class Batch:
    """The model's input for B samples, padded to the longest sample (S slots) of the batch.

    ``tokens`` holds each distinct ASV of the batch once; ``asv_index`` points every slot at its row.
    """

    tokens: torch.Tensor  # [U, L] uint8 (compact to copy to the device), distinct ASVs of the batch, START first
    asv_index: torch.Tensor  # [B, S] int64 row of tokens per slot, 0 on padding
    asv_mask: torch.Tensor  # [B, S] bool, True on real slots
    counts: torch.Tensor  # [B, S] float32, 0 on padding
    sample_index: torch.Tensor  # [B] int64 rows of AmpliconData
    sample_ids: list[str]
    asv_ids: torch.Tensor | None = None  # [U] int64 table column of each row of tokens (for embedding caches)
    targets: torch.Tensor | None = None  # [B] float32 (transformed units) or int64 (class index)
    categoricals: torch.Tensor | None = None  # [B, K] int64, 0 = unknown
    distances: torch.Tensor | None = None  # [B, B] float32 (UniFrac) or [B] (Faith PD)
    sample_weights: torch.Tensor | None = None  # [B] float32 per-sample loss weights
    tokens_padded: bool = True  # any PAD in tokens (known on the host: no padding mask lets flash kernels run)
    size_groups: SizeGroups | None = None  # like-sized samples for the sample-level stacks (``size_groups``)

    def _map_tensors(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
        mapped = replace(self, **{f.name: fn(getattr(self, f.name)) for f in fields(self)
                                  if isinstance(getattr(self, f.name), torch.Tensor)})
        if self.size_groups is not None:
            groups = self.size_groups
            mapped.size_groups = SizeGroups(fn(groups.order), fn(groups.restore), groups.bounds)
        return mapped

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return self._map_tensors(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """Page-locked copy; DataLoader(pin_memory=True) calls this on each batch."""
        return self._map_tensors(lambda t: t.pin_memory())

    def __len__(self) -> int:
        return len(self.sample_ids)


def _used_width(tokens: np.ndarray) -> int:
    """Columns up to the last one holding a non-PAD token in any row of ``tokens`` [U, L]."""
    used = np.flatnonzero((tokens != PAD).any(axis=0))
    return int(used[-1]) + 1 if used.size else tokens.shape[1]


def collate_samples(
    items: Sequence[dict[str, Any]],
    tokens: np.ndarray,
    sample_ids: Sequence[str],
    distance_lookup: Callable[[np.ndarray], np.ndarray] | None = None,
    n_size_groups: int = 1,
) -> Batch:
    """Build a `Batch` from `SampleDataset` items; ``tokens`` [N_asvs, L] are the table's tokenised ASVs.
    With ``n_size_groups`` > 1 the batch also says how to split its samples by size (:func:`size_groups`)."""
    lengths = np.array([len(item["asv_index"]) for item in items], dtype=np.int64)  # [B]
    slots = np.arange(lengths.max()) < lengths[:, None]  # [B, S]; row-major True slots = concatenation order
    distinct, slot_rows = np.unique(np.concatenate([item["asv_index"] for item in items]), return_inverse=True)
    asv_index = np.zeros(slots.shape, dtype=np.int64)
    asv_index[slots] = slot_rows.reshape(-1)
    counts = np.zeros(slots.shape, dtype=np.float32)
    counts[slots] = np.concatenate([item["counts"] for item in items])
    batch_tokens = tokens[distinct]  # [U, L]
    batch_tokens = np.ascontiguousarray(batch_tokens[:, :_used_width(batch_tokens)], dtype=np.uint8)
    sample_index = np.array([item["sample_index"] for item in items], dtype=np.int64)  # [B]
    batch = Batch(
        tokens=torch.from_numpy(batch_tokens),
        asv_index=torch.from_numpy(asv_index),
        asv_mask=torch.from_numpy(slots),
        counts=torch.from_numpy(counts),
        sample_index=torch.from_numpy(sample_index),
        sample_ids=[sample_ids[i] for i in sample_index],
        asv_ids=torch.from_numpy(distinct.astype(np.int64)),
        tokens_padded=bool((batch_tokens == PAD).any()),
        size_groups=size_groups(lengths, n_size_groups),
    )
    if "target" in items[0]:
        batch.targets = torch.from_numpy(np.stack([item["target"] for item in items]))
    if "categoricals" in items[0]:
        batch.categoricals = torch.from_numpy(np.stack([item["categoricals"] for item in items]))
    if "sample_weight" in items[0]:
        batch.sample_weights = torch.tensor([item["sample_weight"] for item in items], dtype=torch.float32)
    if distance_lookup is not None:
        batch.distances = torch.from_numpy(np.asarray(distance_lookup(sample_index), dtype=np.float32))
    return batch


class BatchCollator:
    """Picklable ``collate_fn`` for DataLoader workers: `collate_samples` with the table's tokens bound."""

    def __init__(
        self,
        tokens: np.ndarray,
        sample_ids: Sequence[str],
        distance_lookup: Callable[[np.ndarray], np.ndarray] | None = None,
        n_size_groups: int = 1,
    ):
        self.tokens = np.ascontiguousarray(tokens)  # [N_asvs, L] uint8
        self.sample_ids = list(sample_ids)
        self.distance_lookup = distance_lookup
        self.n_size_groups = n_size_groups

    def __call__(self, items: Sequence[dict[str, Any]]) -> Batch:
        return collate_samples(items, self.tokens, self.sample_ids, self.distance_lookup, self.n_size_groups)


class MatrixDistanceLookup:
    """Distance targets of a batch from a matrix preloaded in table sample order.

    ``matrix`` is [N, N] (pairwise, e.g. UniFrac) or [N] (per sample, e.g. Faith PD); a call with rows
    ``idx`` [B] returns the [B, B] block ``matrix[idx][:, idx]`` or the [B] values.
    """

    def __init__(self, matrix: np.ndarray):
        self.matrix = np.ascontiguousarray(matrix, dtype=np.float32)

    def __call__(self, sample_index: np.ndarray) -> np.ndarray:
        if self.matrix.ndim == 1:
            return self.matrix[sample_index]
        return self.matrix[np.ix_(sample_index, sample_index)]


class EpochShuffleSampler(Sampler[int]):
    """Shuffles ``n`` items with a permutation drawn from (``seed``, epoch).

    The order of an epoch depends only on the seed and the epoch number, so a run resumed at epoch k sees
    the same batches as an uninterrupted one. Call `set_epoch` before each epoch (the Trainer does).
    With ``weights`` [n] (not all equal) an epoch is instead ``n`` draws with replacement, item i drawn with
    probability proportional to its weight: a corpus whose tables are weighted (``--tables``).

    Under DDP/FSDP (``world_size`` > 1, weighted draws) every rank draws the same sequence of
    ``ceil(n / world_size) * world_size`` items and takes every ``world_size``-th from its ``rank``: the ranks
    share one weighted epoch, each the same number of batches.
    """

    def __init__(self, n: int, seed: int, weights: np.ndarray | None = None, rank: int = 0, world_size: int = 1):
        self.n = int(n)
        self.seed = int(seed)
        self.epoch = 0
        self._skip = 0
        self.rank, self.world_size = int(rank), int(world_size)
        if weights is not None and len(weights) != self.n:
            raise ValueError(f"{len(weights)} weights for {self.n} items")
        uniform = weights is None or np.all(np.asarray(weights) == np.asarray(weights)[0])
        self.weights = None if uniform else torch.as_tensor(np.asarray(weights, dtype=np.float64))
        if self.world_size > 1 and self.weights is None:
            raise ValueError("several ranks share an epoch only for weighted draws (DistributedSampler otherwise)")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def skip(self, n_items: int) -> None:
        """The next iteration leaves out its first ``n_items`` (a run resumed mid-epoch); later ones do not."""
        self._skip = int(n_items)

    def __iter__(self):
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) % (2**63))
        skip, self._skip = self._skip, 0
        if self.weights is not None:
            total = -(-self.n // self.world_size) * self.world_size
            order = torch.multinomial(self.weights, total, replacement=True, generator=generator)
            order = order[self.rank::self.world_size]
        else:
            order = torch.randperm(self.n, generator=generator)
        return iter(order.tolist()[skip:])

    def __len__(self) -> int:
        return -(-self.n // self.world_size)


def make_loader(
    dataset: SampleDataset,
    collator: Callable[[Sequence[dict[str, Any]]], Batch],
    batch_size: int,
    shuffle: bool,
    num_workers: int = 0,
    drop_last: bool = False,
    seed: int | None = None,
    pin_memory: bool = False,
    sampler: Sampler | None = None,
) -> DataLoader:
    """A DataLoader of `Batch`es. Validation loaders keep ``drop_last=False`` so no sample is skipped.

    ``seed`` fixes the shuffling order; a ``sampler`` (e.g. DistributedSampler) replaces ``shuffle``.
    ``drop_last`` is ignored (with a warning) when it would leave no batch at all. Workers persist across
    epochs (no restart per epoch) unless the dataset's items depend on the epoch
    (:attr:`SampleDataset.depends_on_epoch`), whose :meth:`~SampleDataset.set_epoch` a kept worker would miss.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise AamError(f"must be a positive integer, got {batch_size!r}", source="--batch-size")
    n_items = len(sampler) if sampler is not None else len(dataset)
    if drop_last and n_items < batch_size:
        log.warning("only %d samples for batches of %d; keeping the partial batch", n_items, batch_size)
        drop_last = False
    generator = torch.Generator().manual_seed(seed) if seed is not None and sampler is None else None
    base = getattr(dataset, "dataset", dataset)  # a Subset's dataset
    persistent = num_workers > 0 and not getattr(base, "depends_on_epoch", True)
    return DataLoader(dataset, batch_size=int(batch_size), shuffle=shuffle and sampler is None, sampler=sampler,
                      num_workers=num_workers, collate_fn=collator, pin_memory=pin_memory, drop_last=drop_last,
                      generator=generator, persistent_workers=persistent)
