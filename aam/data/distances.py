"""Sample x sample distance matrices (UniFrac targets) and per-sample values (Faith PD): read, check, align, write.

Formats, by extension:

* ``.npy`` - the bare [N, N] array in table order, or with ids in ``<stem>.ids.txt`` beside it (one per line);
* ``.npz`` - the array under ``distances`` (or the only array), optionally ids under ``ids``;
* ``.h5``/``.hdf5`` - the unifrac-binaries layout, which is also ours: datasets ``matrix`` [N, N] and
  ``order`` [N] (ids as bytes);
* ``.tsv``/``.txt``/``.csv`` - ids in the first column and in the header (scikit-bio DistanceMatrix text has an
  empty first header cell); rows and columns are matched by label, not position.

Every reader checks the matrix (square, finite, symmetric to 1e-6, unique ids) and raises ``AamError`` naming
the file. Writers are atomic: a temporary file in the same folder, then ``os.replace``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from aam.errors import AamError
from aam.fileio import atomic_path

SYMMETRY_TOLERANCE = 1e-6
MAX_NAMED = 5
TEXT_SEPARATORS = {".tsv": "\t", ".txt": "\t", ".csv": ","}
MATRIX_SUFFIXES = (".npy", ".npz", ".h5", ".hdf5", *TEXT_SEPARATORS)
WRITE_SUFFIXES = (".h5", ".hdf5", ".tsv", ".txt", ".csv", ".npy")


@dataclass
class LabeledMatrix:
    """Values with their sample ids: [N, N] distances or [N] per-sample values; ``ids`` None = table order."""

    ids: list[str] | None
    values: np.ndarray


def _named(ids: list[str]) -> str:
    shown = ", ".join(f"'{i}'" for i in ids[:MAX_NAMED])
    return shown + (", ..." if len(ids) > MAX_NAMED else "")


def ids_path(path: str | os.PathLike) -> Path:
    """Where the ids of a ``.npy`` matrix live: ``D.npy`` -> ``D.ids.txt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.ids.txt")


# ---------------------------------------------------------------- reading

def read_distance_matrix(path: str | os.PathLike, ids: list[str] | None = None) -> LabeledMatrix:
    """Read and check a distance matrix; ``ids`` labels an id-less file (it must then have as many rows)."""
    path = Path(path)
    matrix = _read_any(path, ndim=2)
    _check_square(matrix.values, path)
    _check_finite(matrix.values, path)
    _check_symmetric(matrix.values, path)
    return _with_ids(matrix, ids, path)


def read_sample_vector(path: str | os.PathLike, ids: list[str] | None = None) -> LabeledMatrix:
    """Read per-sample values [N] (e.g. Faith PD): ``.npy``/``.npz`` in table order or text with ids."""
    path = Path(path)
    vector = _read_any(path, ndim=1)
    _check_finite(vector.values, path)
    return _with_ids(vector, ids, path)


def _read_any(path: Path, ndim: int) -> LabeledMatrix:
    if not path.is_file():
        raise AamError("file not found", source=path, hint="check the distance matrix path")
    suffix = path.suffix.lower()
    readers = {".npy": _read_npy, ".npz": _read_npz, ".h5": _read_h5, ".hdf5": _read_h5}
    try:
        if suffix in readers:
            matrix = readers[suffix](path)
        elif suffix in TEXT_SEPARATORS:
            matrix = _read_text(path, TEXT_SEPARATORS[suffix], ndim)
        else:
            raise AamError(f"unknown distance matrix format '{suffix}'", source=path,
                           hint=f"use one of {', '.join(MATRIX_SUFFIXES)}")
    except (OSError, ValueError, KeyError) as err:
        raise AamError(f"not a readable {suffix} file ({type(err).__name__}: {err})", source=path) from None
    if matrix.values.ndim != ndim:
        raise AamError(f"expected a {ndim}-dimensional array, found shape {matrix.values.shape}", source=path)
    if not np.issubdtype(matrix.values.dtype, np.number):
        raise AamError(f"values are not numeric (dtype {matrix.values.dtype})", source=path)
    return LabeledMatrix(matrix.ids, matrix.values.astype(np.float64, copy=False))


def _read_npy(path: Path) -> LabeledMatrix:
    values = np.load(path, allow_pickle=False)
    id_file = ids_path(path)
    ids = id_file.read_text(encoding="utf-8").splitlines() if id_file.is_file() else None
    return LabeledMatrix(ids, values)


def _read_npz(path: Path) -> LabeledMatrix:
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    ids = [str(i) for i in arrays.pop("ids")] if "ids" in arrays else None
    if "distances" in arrays:
        return LabeledMatrix(ids, arrays["distances"])
    if len(arrays) != 1:
        raise AamError(f"the archive holds {len(arrays)} arrays ({', '.join(arrays)}) and none named "
                       "'distances'", source=path, hint="store the matrix under the key 'distances'")
    return LabeledMatrix(ids, next(iter(arrays.values())))


def _read_h5(path: Path) -> LabeledMatrix:
    with h5py.File(path, "r") as handle:
        for name in ("matrix", "order"):
            if name not in handle:
                raise AamError(f"no '{name}' dataset in the HDF5 file", source=path,
                               hint="expected the unifrac-binaries layout: datasets 'matrix' and 'order'")
        values = handle["matrix"][()]
        order = handle["order"][()]
    ids = [i.decode("utf-8") if isinstance(i, bytes) else str(i) for i in np.atleast_1d(order)]
    return LabeledMatrix(ids, values)


def _read_text(path: Path, separator: str, ndim: int) -> LabeledMatrix:
    """Ids in the first column; for a matrix also in the header, columns reordered to match the rows."""
    header = 0 if ndim == 2 else None
    table = pd.read_csv(path, sep=separator, header=header, index_col=0, dtype=str, encoding="utf-8-sig",
                        keep_default_na=False)
    if ndim == 1 and table.shape[1] == 1 and not _is_number(table.iloc[0, 0]):
        table = table.iloc[1:]  # a header row
    table.index = table.index.astype(str).str.strip()
    values = _parse_numbers(table, path)
    ids = list(table.index)
    if ndim == 1:
        if values.shape[1] != 1:
            raise AamError(f"expected two columns (id, value), found {values.shape[1] + 1}", source=path)
        return LabeledMatrix(ids, values[:, 0])
    columns = [str(c).strip() for c in table.columns]
    if sorted(columns) != sorted(ids):
        only_rows = sorted(set(ids) - set(columns))
        only_columns = sorted(set(columns) - set(ids))
        raise AamError(f"row and column labels differ ({len(only_rows)} only in rows, e.g. "
                       f"{_named(only_rows)}; {len(only_columns)} only in columns, e.g. {_named(only_columns)})",
                       source=path, hint="give a square matrix labelled by the same ids on both axes")
    order = pd.Index(columns).get_indexer(ids)
    return LabeledMatrix(ids, values[:, order])


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _parse_numbers(table: pd.DataFrame, path: Path) -> np.ndarray:
    numbers = table.apply(pd.to_numeric, errors="coerce")
    bad = numbers.isna() & (table.apply(lambda col: col.str.strip().str.lower()) != "nan")
    if bad.to_numpy().any():
        row = bad.any(axis=1).to_numpy().argmax()
        raise AamError(f"row '{table.index[row]}' holds a value that is not a number", source=path)
    return numbers.to_numpy(dtype=np.float64)


# ---------------------------------------------------------------- checks and alignment

def _check_square(values: np.ndarray, path: Path) -> None:
    if values.shape[0] != values.shape[1]:
        raise AamError(f"the matrix is not square ({values.shape[0]} x {values.shape[1]})", source=path)


def _check_finite(values: np.ndarray, path: Path) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        raise AamError(f"{int(bad.sum())} values are NaN or infinite", source=path,
                       hint="recompute the matrix; distances must be finite")


def _check_symmetric(values: np.ndarray, path: Path) -> None:
    gap = np.abs(values - values.T)
    if gap.max(initial=0.0) > SYMMETRY_TOLERANCE:
        i, j = np.unravel_index(gap.argmax(), gap.shape)
        raise AamError(f"the matrix is not symmetric (row {i}, column {j} differ by {gap[i, j]:.3g})",
                       source=path, hint="give a symmetric distance matrix")


def _with_ids(matrix: LabeledMatrix, ids: list[str] | None, path: Path) -> LabeledMatrix:
    """Check the file's own ids, or attach ``ids`` to an id-less file of the same size."""
    if matrix.ids is not None:
        if len(matrix.ids) != matrix.values.shape[0]:
            raise AamError(f"{len(matrix.ids)} ids for {matrix.values.shape[0]} rows", source=path)
        counts = pd.Series(matrix.ids).value_counts()
        duplicated = list(counts.index[counts > 1])
        if duplicated:
            raise AamError(f"{len(duplicated)} ids occur more than once ({_named(duplicated)})", source=path)
        return matrix
    if ids is not None:
        _check_size(matrix.values, len(ids), path)
        return LabeledMatrix(list(ids), matrix.values)
    return matrix


def _check_size(values: np.ndarray, n_samples: int, path: str | os.PathLike | None) -> None:
    if values.shape[0] != n_samples:
        raise AamError(f"the file has {values.shape[0]} rows but the table {n_samples} samples and the file "
                       "carries no ids", source=path,
                       hint="give a matrix in table order, or a format with ids (.h5, .tsv, .npy + .ids.txt)")


def _positions(file_ids: list[str], sample_ids: list[str], source) -> np.ndarray:
    """Row of each sample id in the file; AamError saying how many are missing and naming a few."""
    index = pd.Index(file_ids)
    positions = index.get_indexer(list(sample_ids))
    missing = [s for s, p in zip(sample_ids, positions, strict=True) if p < 0]
    if missing:
        raise AamError(f"{len(missing)} of {len(sample_ids)} samples are missing from the file "
                       f"({_named(missing)})", source=source,
                       hint="compute the matrix for this table, e.g. with 'aam unifrac'")
    return positions


def align_distance_matrix(matrix: LabeledMatrix, sample_ids: list[str],
                          source: str | os.PathLike | None = None) -> np.ndarray:
    """The distances among ``sample_ids`` in that order: [N, N]; an id-less matrix must be in that order."""
    if matrix.ids is None:
        _check_size(matrix.values, len(sample_ids), source)
        return matrix.values
    positions = _positions(matrix.ids, sample_ids, source)
    return matrix.values[np.ix_(positions, positions)]


def align_sample_vector(vector: LabeledMatrix, sample_ids: list[str],
                        source: str | os.PathLike | None = None) -> np.ndarray:
    """The per-sample values of ``sample_ids`` in that order: [N]."""
    if vector.ids is None:
        _check_size(vector.values, len(sample_ids), source)
        return vector.values
    return vector.values[_positions(vector.ids, sample_ids, source)]


align = align_distance_matrix  # the name in the layer contract (_design_plan/00_architecture_and_interfaces.md)


# ---------------------------------------------------------------- writing

def write_distance_matrix(path: str | os.PathLike, ids: list[str], values: np.ndarray) -> None:
    """Write [N, N] distances labelled by ``ids``: ``.h5`` (unifrac-binaries layout), ``.tsv`` (scikit-bio
    DistanceMatrix text), ``.csv``, or ``.npy`` with ``<stem>.ids.txt`` beside it."""
    path = Path(path)
    ids = [str(i) for i in ids]
    values = np.asarray(values)
    if values.shape != (len(ids), len(ids)):
        raise ValueError(f"{len(ids)} ids for a matrix of shape {values.shape}")
    check_output_path(path)
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        with atomic_path(path) as temporary, h5py.File(temporary, "w") as handle:
            handle.create_dataset("order", data=[i.encode("utf-8") for i in ids],
                                  dtype=h5py.string_dtype("utf-8"))
            handle.create_dataset("matrix", data=values)
    elif suffix == ".npy":
        if any("\n" in i or "\r" in i for i in ids):
            raise AamError("sample ids contain line breaks", source=path, hint="write .h5 instead")
        with atomic_path(ids_path(path)) as temporary:
            temporary.write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
        with atomic_path(path) as temporary, open(temporary, "wb") as handle:
            np.save(handle, values)
    else:
        frame = pd.DataFrame(values, index=ids, columns=ids)
        with atomic_path(path) as temporary:
            frame.to_csv(temporary, sep=TEXT_SEPARATORS[suffix], index_label="", float_format="%.17g")


def check_output_path(path: str | os.PathLike) -> None:
    """AamError unless ``path`` has an extension ``write_distance_matrix`` knows (check before computing)."""
    suffix = Path(path).suffix.lower()
    if suffix not in WRITE_SUFFIXES:
        raise AamError(f"cannot write a distance matrix as '{suffix or Path(path).name}'", source=path,
                       hint=f"use one of {', '.join(WRITE_SUFFIXES)}")
