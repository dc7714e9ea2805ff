"""Several count tables as one, joined by ASV sequence: a pretraining corpus made of many studies.

Each table is read (and rarefied) on its own, its feature ids resolved to sequences (the ids themselves, or its
FASTA); the union has one column per distinct sequence, in order of first appearance, named by the first id
seen for it (so a tree whose tips are those ids, or the sequences, still matches). Only non-zeros are stacked:
memory follows the tables' non-zeros, never samples x ASVs. Sample ids must be unique across the tables, or are
prefixed by their table's file name on request.

A manifest (``--tables FILE.tsv``) lists the tables, one per row: ``table`` (a path, relative to the manifest's
folder or absolute), optional ``sequences`` (a FASTA for hashed ids) and optional ``weight`` (> 0: how often
the table's samples are drawn per epoch, relative to the others; 1 by default).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

from aam.data.biom_table import load_table, rarefy, table_to_csr
from aam.data.dataset import AmpliconData
from aam.data.sequences import resolve_sequences, tokenize
from aam.errors import AamError

log = logging.getLogger("aam")

MANIFEST_COLUMNS = ("table", "sequences", "weight")
MANIFEST_SUFFIXES = (".tsv", ".txt")


@dataclass(frozen=True)
class TableSource:
    """One table of a union: its path, an optional FASTA for hashed ids, and its sampling weight."""

    table: str
    sequences: str | None = None
    weight: float = 1.0


@dataclass
class TableUnion:
    """The joined data, and for every sample (row) the index of the source it came from."""

    data: AmpliconData
    sources: list[TableSource]
    source_of_sample: np.ndarray  # [N_samples] int64 index into ``sources``

    def sample_ids_of(self, first: int, stop: int) -> list[str]:
        """The ids of the samples of sources ``first`` .. ``stop - 1``, in table order."""
        keep = (self.source_of_sample >= first) & (self.source_of_sample < stop)
        return [s for s, k in zip(self.data.sample_ids, keep) if k]

    def sample_weights(self) -> np.ndarray:
        """[N_samples] the weight of each sample's table."""
        return np.array([self.sources[i].weight for i in self.source_of_sample], dtype=np.float64)


class UnionColumns:
    """The union's columns: one per distinct sequence, in order of first appearance, named by its first id."""

    def __init__(self) -> None:
        self.column_of: dict[str, int] = {}  # sequence -> column
        self.ids: list[str] = []  # column -> the first id seen for it

    @property
    def size(self) -> int:
        return len(self.ids)

    @property
    def sequences(self) -> list[str]:
        return list(self.column_of)  # in column order (dicts keep insertion order)

    def add(self, feature_ids: Sequence[str], sequences: Sequence[str]) -> np.ndarray:
        """The union column of each of a table's features [T] int64, adding the sequences not seen yet."""
        columns = np.empty(len(sequences), dtype=np.int64)
        for j, (feature, sequence) in enumerate(zip(feature_ids, sequences)):
            column = self.column_of.get(sequence)
            if column is None:
                column = self.column_of[sequence] = len(self.ids)
                self.ids.append(feature)
            columns[j] = column
        return columns


def is_manifest(path: str | Path) -> bool:
    """A manifest is a text table (.tsv/.txt); anything else is taken for a count table."""
    return Path(path).suffix.lower() in MANIFEST_SUFFIXES


def read_manifest(path: str | Path, option: str = "--tables") -> list[TableSource]:
    """The sources listed in the manifest at ``path`` (paths resolved against its folder)."""
    path = Path(path)
    if not path.is_file():
        raise AamError("file not found", source=path, hint=f"check the {option} path")
    try:
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, comment="#")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise AamError(f"not a readable tab-separated manifest ({type(err).__name__})", source=path,
                       hint="one row per table with a header: table, then optional sequences and weight") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    unknown = [c for c in frame.columns if c not in MANIFEST_COLUMNS]
    if "table" not in frame.columns or unknown:
        found = ", ".join(frame.columns) or "none"
        raise AamError(f"the manifest's columns are {found}", source=path,
                       hint="give a header of table, then optional sequences and weight (tab-separated)")
    if frame.empty:
        raise AamError("the manifest lists no table", source=path, hint="one row per table under the header")
    sources = []
    for line, row in zip(range(2, len(frame) + 2), frame.to_dict("records")):
        where = f"{path}, line {line}"
        table = row["table"].strip()
        if not table:
            raise AamError("the table path is empty", source=where)
        fasta = (row.get("sequences") or "").strip() or None
        weight_text = (row.get("weight") or "").strip()
        try:
            weight = float(weight_text) if weight_text else 1.0
        except ValueError:
            raise AamError(f"the weight {weight_text!r} is not a number", source=where) from None
        if not np.isfinite(weight) or weight <= 0:
            raise AamError(f"the weight must be a positive number, got {weight_text}", source=where)
        sources.append(TableSource(_beside(path, table), _beside(path, fasta) if fasta else None, weight))
    return sources


def _beside(manifest: Path, name: str) -> str:
    target = Path(name)
    return str(target if target.is_absolute() else manifest.parent / target)


def load_union(sources: Sequence[TableSource], *, max_bp: int, rarefy_depth: int | None = None,
               seed: int | None = None, prefix_sample_ids: bool = False) -> TableUnion:
    """Read every source and join them by sequence (see the module notes); ASVs are tokenised once each."""
    if not sources:
        raise AamError("no table to read", source="--tables", hint="give --table or --tables MANIFEST.tsv")
    seen_tables: dict[str, str] = {}
    labels = table_labels(sources)
    union = UnionColumns()
    blocks, sample_ids, source_of_sample = [], [], []
    owner: dict[str, str] = {}  # sample id -> its table (for the duplicate message)
    for index, source in enumerate(sources):
        check_listed_once(source, seen_tables)
        table = load_table(source.table)
        if rarefy_depth is not None:
            table, _ = rarefy(table, rarefy_depth, seed)
        part = table_to_csr(table)
        sequences = resolve_sequences(part.feature_ids, source.sequences, source=source.table)
        known = union.size
        columns = union.add(part.feature_ids, sequences)
        names = sample_names(part.sample_ids, source, labels[index] if prefix_sample_ids else None, owner)
        counts = part.counts.tocsr()
        blocks.append((counts.data, columns[counts.indices], counts.indptr, counts.shape[0]))
        sample_ids += names
        source_of_sample += [index] * len(names)
        log.info("table %s: %d samples x %d ASVs (%d new to the union)", source.table, counts.shape[0],
                 counts.shape[1], union.size - known)
    counts = sparse.vstack([sparse.csr_matrix((data, indices, indptr), shape=(rows, union.size))
                            for data, indices, indptr, rows in blocks], format="csr")
    sequences, ids = union.sequences, union.ids
    tokenized = tokenize(sequences, max_bp)
    log.info("union of %d tables: %d samples x %d distinct sequences, %d non-zeros", len(sources),
             counts.shape[0], counts.shape[1], counts.nnz)
    data = AmpliconData(counts, tokenized.tokens, sample_ids, ids, sequences=sequences)
    return TableUnion(data, list(sources), np.asarray(source_of_sample, dtype=np.int64))


def check_listed_once(source: TableSource, seen: dict[str, str]) -> None:
    """Record ``source``'s table in ``seen`` (resolved path -> as listed); a table listed twice is an error."""
    resolved = str(Path(source.table).resolve())
    if resolved in seen:
        raise AamError(f"the table is listed twice (also as {seen[resolved]})", source=source.table,
                       hint="list each table once; give it a larger weight to draw it more often")
    seen[resolved] = source.table


def table_labels(sources: Sequence[TableSource]) -> list[str]:
    """A short name per table for ``--prefix-sample-ids``: its file name without suffix, or ``folder/name``
    where two tables share a file name (``task_a/table.biom``, ``task_b/table.biom``)."""
    stems = [Path(s.table).stem for s in sources]
    return [stem if stems.count(stem) == 1 else f"{Path(s.table).parent.name}/{stem}"
            for stem, s in zip(stems, sources)]


def sample_names(sample_ids: list[str], source: TableSource, prefix: str | None,
                  owner: dict[str, str]) -> list[str]:
    """The union's names of one table's samples; a name already taken is an error naming both tables."""
    names = [f"{prefix}:{s}" for s in sample_ids] if prefix is not None else sample_ids
    for name in names:
        if name in owner:
            hint = ("give the tables distinct file or folder names" if prefix is not None else
                    "give --prefix-sample-ids to name each sample TABLE:ID (TABLE: its file name without suffix)")
            raise AamError(f"sample {name!r} is in both {owner[name]} and {source.table}", source=source.table,
                           hint=hint)
        owner[name] = source.table
    return names
