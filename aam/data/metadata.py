"""Sample metadata: tab-separated files in the QIIME 2 conventions, ids always strings."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from aam.errors import AamError

log = logging.getLogger(__name__)

# QIIME 2 id-column names (compared case-insensitively); the first column that matches is the id column
ID_COLUMNS = ("sample_id", "sample-id", "sampleid", "sample id", "id", "#sampleid", "#sample id", "sample_name",
              "sample name", "feature id", "feature-id", "featureid")
# cells read as missing (compared case-insensitively after stripping); Qiita's "missing: ..." forms too
MISSING_VALUES = frozenset({"", "na", "nan", "n/a", "none", "null", "missing", "not applicable", "not provided",
                            "not collected", "restricted access"})


def read_metadata(path: str | os.PathLike) -> pd.DataFrame:
    """Metadata indexed by sample id (str, index name ``sample_id``); every column str, missing cells NaN.

    Tab-separated UTF-8 with or without BOM; column names stripped; ``#`` comment lines (the QIIME 2
    ``#q2:types`` row among them) skipped, except a header whose first cell is an id column (``#SampleID``).
    """
    path = Path(path)
    frame = _parse_tsv(_read_text(path), path)
    id_column = next((c for c in frame.columns if c.lower() in ID_COLUMNS), None)
    if id_column is None:
        raise AamError(f"no sample id column (found: {', '.join(frame.columns[:8]) or 'none'})", source=path,
                       hint="name the id column sample_id, sample-id, sampleid, id, #SampleID, #Sample ID or "
                            "sample_name")
    ids = _sample_ids(frame[id_column], path)
    values = frame.drop(columns=[id_column]).apply(lambda column: column.str.strip())
    values = values.mask(values.apply(_is_missing))
    values.index = pd.Index(ids, name="sample_id", dtype=object)
    return values


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise AamError("metadata file not found", source=path, hint="check the --metadata path")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise AamError("not UTF-8 text", source=path, hint="save the metadata as UTF-8 tab-separated text") from None


def _is_header(line: str) -> bool:
    """A non-blank line that is not a comment, or a comment-looking header such as ``#SampleID``."""
    if not line.strip():
        return False
    return not line.startswith("#") or line.split("\t")[0].strip().lower() in ID_COLUMNS


def _parse_tsv(text: str, path: Path) -> pd.DataFrame:
    """Every cell as str (csv ``excel-tab`` quoting); blank and ``#`` lines after the header dropped.

    Short rows are padded with empty cells; a row with more non-empty cells than the header is an error.
    """
    lines = text.splitlines()
    header_at = next((i for i, line in enumerate(lines) if _is_header(line)), None)
    if header_at is None:
        raise AamError("the metadata file has no header line", source=path)
    header = [cell.strip() for cell in next(csv.reader([lines[header_at]], dialect="excel-tab"))]
    while header and not header[-1]:  # trailing tabs
        header.pop()
    repeated = next((name for name in header if header.count(name) > 1), None)
    if repeated is not None:
        raise AamError(f"column {repeated!r} appears more than once in the header", source=path)
    rows = []
    for number, line in enumerate(lines[header_at + 1:], start=header_at + 2):
        if not line.strip() or line.startswith("#"):
            continue
        cells = next(csv.reader([line], dialect="excel-tab"))
        if len(cells) > len(header) and any(c.strip() for c in cells[len(header):]):
            raise AamError(f"line {number} has {len(cells)} tab-separated fields, the header has {len(header)}",
                           source=path, hint="every row needs as many tab-separated fields as the header")
        rows.append((cells + [""] * len(header))[:len(header)])
    return pd.DataFrame(rows, columns=header, dtype=object)


def _sample_ids(column: pd.Series, path: Path) -> list[str]:
    """Stripped ids as written (never parsed as numbers); empty or duplicate ids are errors."""
    ids = column.str.strip()
    empty = np.flatnonzero((ids == "").to_numpy())
    if empty.size:
        raise AamError(f"data row {int(empty[0]) + 1} has an empty sample id", source=path)
    duplicated = ids[ids.duplicated()]
    if not duplicated.empty:
        raise AamError(f"sample id {duplicated.iloc[0]!r} appears more than once", source=path,
                       hint="sample ids must be unique")
    return ids.to_list()


def _is_missing(column: pd.Series) -> pd.Series:
    lowered = column.str.lower()
    return lowered.isin(MISSING_VALUES) | lowered.str.startswith("missing:")


def require_column(frame: pd.DataFrame, column: str, source: str | os.PathLike | None = None,
                   flag: str = "--metadata-column") -> None:
    """Raise ``AamError`` naming ``flag`` and the available columns if ``column`` is absent."""
    if column not in frame.columns:
        available = ", ".join(list(frame.columns)[:10])
        raise AamError(f"column {column!r} ({flag}) is not in the metadata (columns: {available})", source=source)


def numeric_target(frame: pd.DataFrame, column: str, source: str | os.PathLike | None = None) -> pd.Series:
    """``column`` as float64 indexed by sample id; rows with missing, NaN or infinite values are dropped (and
    counted in the log). A value that is not a number is an ``AamError`` naming its sample."""
    require_column(frame, column, source)
    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce")
    bad = raw.notna() & values.isna() & (raw.astype(str).str.strip().str.lower() != "nan")
    if bad.any():
        sample = bad.idxmax()
        raise AamError(f"column {column!r} is not numeric: sample {sample!r} has {raw[sample]!r}", source=source,
                       hint="fix the value, or use --classifier for class labels")
    finite = values.notna() & np.isfinite(values.astype(float))
    dropped = int((~finite).sum())
    if dropped:
        log.warning("%d sample(s) with a missing or non-finite %r are left out", dropped, column)
    if not finite.any():
        raise AamError(f"column {column!r} has no finite value", source=source)
    return values[finite].astype(float)


def align_samples(table_ids: Sequence[str], metadata: pd.DataFrame,
                  source: str | os.PathLike | None = None) -> list[str]:
    """Table sample ids that are in the metadata, in table order; the others are dropped and counted."""
    present = set(metadata.index)
    kept = [s for s in table_ids if s in present]
    if not kept:
        raise AamError(f"no table sample id is in the metadata (table: {', '.join(list(table_ids)[:3])}; "
                       f"metadata: {', '.join(list(metadata.index)[:3])})", source=source,
                       hint="the metadata's id column must hold the table's sample ids")
    if len(kept) < len(table_ids):
        log.warning("%d table sample(s) are not in the metadata and are left out", len(table_ids) - len(kept))
    return kept
