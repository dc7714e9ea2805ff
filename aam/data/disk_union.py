"""A corpus joined on disk: tables larger than memory, read in blocks of samples and memory-mapped.

``build_disk_union`` reads each table of a corpus in blocks of samples (BIOM 2.1 HDF5 straight from its
sample-major arrays with h5py; other formats are loaded whole, as they are small), joins them by sequence
exactly as :func:`aam.data.table_union.load_union` does, and writes the union's arrays to a folder:

    union.json             what was joined (tables with size and modification time, --max-bp, prefixing),
                           the sample ids, ASV ids and sequences; written last, so its presence marks a
                           complete folder
    indptr.npy             [N + 1] int64   the CSR row pointers (samples x distinct sequences)
    indices.npy, data.npy  [nnz] int64, float32  each sample's ASV columns (ascending) and counts
    abundance_asvs.npy     [nnz] int32     each sample's ASV columns, most abundant first (ties: column order)
    abundance_counts.npy   [nnz] float32   their counts
    tokens.npy, source_of_sample.npy

The arrays are then memory-mapped: the operating system pages in the samples each batch reads, and the
process holds the distinct sequences' tokens and the sample ids, never the counts. The arrays are byte for byte
those of the in-memory union, so training is identical. A later run with the same tables and settings reuses
the folder (a resumed run starts at once); anything changed rebuilds it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from scipy import sparse

from aam.data.biom_table import load_table
from aam.data.dataset import AmpliconData, abundance_order, canonical_counts
from aam.data.sequences import resolve_sequences, tokenize
from aam.data.table_union import (
    TableSource,
    TableUnion,
    UnionColumns,
    check_listed_once,
    sample_names,
    table_labels,
)
from aam.errors import AamError

log = logging.getLogger("aam")

FORMAT = 1
ARRAYS = ("indptr", "indices", "data", "abundance_asvs", "abundance_counts")


class _SampleBlocks:
    """One table as blocks of samples: ids, and [B, T] float32 CSR blocks (T: the table's features)."""

    def __init__(self, path: str, block_samples: int):
        self.path, self.block_samples = path, block_samples
        import h5py

        self._hdf5 = h5py.is_hdf5(path)
        if self._hdf5:
            with h5py.File(path, "r") as handle:
                try:
                    self.sample_ids = [_text(i) for i in handle["sample/ids"][:]]
                    self.feature_ids = [_text(i) for i in handle["observation/ids"][:]]
                    self._indptr = handle["sample/matrix/indptr"][:].astype(np.int64)
                except KeyError as err:
                    raise AamError(f"not a BIOM 2.1 table (no {err.args[0]!r} in the HDF5 file)", source=path,
                                   hint="give a BIOM 2.1 (HDF5) table") from None
            self._whole = None
        else:  # BIOM 1.0 JSON or a QIIME 2 artifact: small enough to load
            table = load_table(path)
            self.sample_ids = [str(i) for i in table.ids(axis="sample")]
            self.feature_ids = [str(i) for i in table.ids(axis="observation")]
            self._whole = sparse.csr_matrix(table.matrix_data.T, dtype=np.float32)
        if not self.sample_ids or not self.feature_ids:
            raise AamError(f"the table is empty ({len(self.feature_ids)} ASVs x {len(self.sample_ids)} samples)",
                           source=path)

    def __iter__(self) -> Iterator[tuple[int, sparse.csr_matrix]]:
        """(first sample, block) in sample order; explicit zeros removed, negative counts refused."""
        n, width = len(self.sample_ids), len(self.feature_ids)
        handle = None
        if self._hdf5:
            import h5py

            handle = h5py.File(self.path, "r")
        try:
            for start in range(0, n, self.block_samples):
                stop = min(start + self.block_samples, n)
                if handle is None:
                    block = self._whole[start:stop]
                else:
                    lo, hi = self._indptr[start], self._indptr[stop]
                    block = sparse.csr_matrix(
                        (handle["sample/matrix/data"][lo:hi].astype(np.float32),
                         handle["sample/matrix/indices"][lo:hi], self._indptr[start:stop + 1] - lo),
                        shape=(stop - start, width))
                block.eliminate_zeros()
                if block.nnz and block.data.min() < 0:
                    raise AamError("the table has negative counts", source=self.path,
                                   hint="give raw or rarefied read counts")
                yield start, block
        finally:
            if handle is not None:
                handle.close()


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fingerprint(sources: Sequence[TableSource], max_bp: int, prefix_sample_ids: bool) -> dict:
    def stamp(path: str | None) -> list | None:
        if path is None:
            return None
        status = os.stat(path)
        return [str(Path(path).resolve()), status.st_size, status.st_mtime_ns]

    return {"format": FORMAT, "max_bp": max_bp, "prefix_sample_ids": prefix_sample_ids,
            "tables": [[stamp(s.table), stamp(s.sequences), s.weight] for s in sources]}


def build_disk_union(sources: Sequence[TableSource], folder: str | Path, *, max_bp: int,
                     prefix_sample_ids: bool = False, block_samples: int = 20_000) -> TableUnion:
    """The union of ``sources`` with its arrays in ``folder`` (built, or reused when it holds this union)."""
    if not sources:
        raise AamError("no table to read", source="--tables", hint="give --table or --tables MANIFEST.tsv")
    for source in sources:
        if not Path(source.table).is_file():
            raise AamError("file not found", source=source.table, hint="check the table path in the manifest")
    folder = Path(folder)
    fingerprint = _fingerprint(sources, max_bp, prefix_sample_ids)
    index = folder / "union.json"
    if index.is_file():
        saved = json.loads(index.read_text())
        if saved.get("fingerprint") == fingerprint:
            log.info("reusing the corpus arrays in %s", folder)
            return _open(folder, saved, sources)
        log.info("the corpus in %s was built from other tables or settings: rebuilding it", folder)
    folder.mkdir(parents=True, exist_ok=True)
    index.unlink(missing_ok=True)
    saved = _build(sources, folder, max_bp, prefix_sample_ids, block_samples)
    saved["fingerprint"] = fingerprint
    partial = index.with_name(index.name + ".partial")
    partial.write_text(json.dumps(saved))
    os.replace(partial, index)
    return _open(folder, saved, sources)


def _build(sources: Sequence[TableSource], folder: Path, max_bp: int, prefix_sample_ids: bool,
           block_samples: int) -> dict:
    labels = table_labels(sources)
    union = UnionColumns()
    tables, owner, sample_ids, source_of_sample = [], {}, [], []
    total_nnz = 0
    seen: dict[str, str] = {}
    for number, source in enumerate(sources):  # pass 1: ids, observed features, non-zeros
        check_listed_once(source, seen)
        blocks = _SampleBlocks(source.table, block_samples)
        held = np.zeros(len(blocks.feature_ids), dtype=np.int64)
        table_nnz = 0
        for _, block in blocks:
            held += np.bincount(block.indices, minlength=len(held))
            table_nnz += block.nnz
        observed = np.flatnonzero(held)
        features = [blocks.feature_ids[j] for j in observed]
        sequences = resolve_sequences(features, source.sequences, source=source.table)
        known = union.size
        table_columns = np.full(len(blocks.feature_ids), -1, dtype=np.int64)
        table_columns[observed] = union.add(features, sequences)
        if len(np.unique(table_columns[observed])) < len(observed):  # ids sharing a sequence merge: recount
            table_nnz = sum(_in_union(block, table_columns, union.size).nnz for _, block in blocks)
        total_nnz += table_nnz
        names = sample_names(blocks.sample_ids, source, labels[number] if prefix_sample_ids else None, owner)
        sample_ids += names
        source_of_sample += [number] * len(names)
        tables.append((blocks, table_columns))
        log.info("table %s: %d samples x %d ASVs (%d new to the union)", source.table, len(names), len(observed),
                 union.size - known)
    n = len(sample_ids)
    arrays = {"indptr": _array(folder, "indptr", n + 1, np.int64),
              "indices": _array(folder, "indices", total_nnz, np.int64),
              "data": _array(folder, "data", total_nnz, np.float32),
              "abundance_asvs": _array(folder, "abundance_asvs", total_nnz, np.int32),
              "abundance_counts": _array(folder, "abundance_counts", total_nnz, np.float32)}
    arrays["indptr"][0] = 0
    row, at = 0, 0
    for blocks, table_columns in tables:  # pass 2: each block in union columns, as AmpliconData orders it
        for _, block in blocks:
            counts = _in_union(block, table_columns, union.size)
            size = counts.nnz
            arrays["indices"][at:at + size] = counts.indices
            arrays["data"][at:at + size] = counts.data
            arrays["abundance_asvs"][at:at + size], arrays["abundance_counts"][at:at + size] = \
                abundance_order(counts)
            arrays["indptr"][row + 1:row + 1 + counts.shape[0]] = at + counts.indptr[1:]
            row, at = row + counts.shape[0], at + size
    for array in arrays.values():
        array.flush()
    for name, array in (("tokens", tokenize(union.sequences, max_bp).tokens),
                        ("source_of_sample", np.asarray(source_of_sample, dtype=np.int64))):
        np.save(folder / f"{name}.npy", array)
    log.info("union of %d tables on disk in %s: %d samples x %d distinct sequences, %d non-zeros", len(sources),
             folder, n, union.size, at)
    return {"sample_ids": sample_ids, "asv_ids": union.ids, "sequences": union.sequences, "nnz": int(at)}


def _in_union(block: sparse.csr_matrix, table_columns: np.ndarray, width: int) -> sparse.csr_matrix:
    """A block of a table in the union's columns, as AmpliconData keeps it (two ids of one sequence in a table
    share a column)."""
    return canonical_counts(sparse.csr_matrix((block.data, table_columns[block.indices], block.indptr),
                                              shape=(block.shape[0], width)))


def _array(folder: Path, name: str, size: int, dtype) -> np.memmap:
    return np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=dtype, shape=(size,))


def _open(folder: Path, saved: dict, sources: Sequence[TableSource]) -> TableUnion:
    arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in ARRAYS}
    counts = sparse.csr_matrix((len(saved["sample_ids"]), len(saved["asv_ids"])), dtype=np.float32)
    counts.indptr, counts.indices, counts.data = arrays["indptr"], arrays["indices"], arrays["data"]
    data = AmpliconData.from_sorted(counts, arrays["abundance_asvs"], arrays["abundance_counts"],
                                    np.load(folder / "tokens.npy"), saved["sample_ids"], saved["asv_ids"],
                                    saved["sequences"])
    return TableUnion(data, list(sources), np.load(folder / "source_of_sample.npy"))
