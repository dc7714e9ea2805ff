"""Sample metadata: tab-separated files in the QIIME 2 conventions, ids always strings."""

from __future__ import annotations

import io
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
              "feature id", "feature-id", "featureid")
MISSING_VALUES = {"", "na", "nan", "n/a", "none", "null", "missing", "not applicable", "not provided",
                  "not collected", "restricted access"}


def read_metadata(path: str | os.PathLike) -> pd.DataFrame:
    """Metadata indexed by sample id (str), every column as strings with missing values as NaN.

    UTF-8 with or without BOM; column names stripped; QIIME 2 ``#q2:types`` and other ``#`` rows after the
    header skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise AamError("metadata file not found", source=path, hint="check the --metadata path")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise AamError("not UTF-8 text", source=path, hint="save the metadata as UTF-8 tab-separated text") from None
    lines = text.splitlines()
    header_index = next((i for i, line in enumerate(lines) if line.strip()), None)
    if header_index is None:
        raise AamError("the metadata file is empty", source=path)
    body = [line for line in lines[header_index + 1:] if line.strip() and not line.startswith("#")]
    content = "\n".join([lines[header_index], *body])
    try:
        frame = pd.read_csv(io.StringIO(content), sep="\t", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, ValueError) as err:
        raise AamError(f"cannot parse as tab-separated text ({err})", source=path) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    id_column = next((c for c in frame.columns if c.lower() in ID_COLUMNS), None)
    if id_column is None:
        raise AamError(f"no sample id column (found: {', '.join(frame.columns[:8])})", source=path,
                       hint="name the first column sample_id (or sample-id, #SampleID, id, sample_name)")
    ids = frame[id_column].str.strip()
    duplicated = ids[ids.duplicated()]
    if not duplicated.empty:
        raise AamError(f"sample id {duplicated.iloc[0]!r} appears more than once", source=path)
    if (ids == "").any():
        raise AamError(f"row {int(np.flatnonzero(ids == '')[0]) + 2} has an empty sample id", source=path)
    frame = frame.drop(columns=[id_column]).apply(lambda column: column.str.strip())
    frame = frame.mask(frame.apply(lambda column: column.str.lower().isin(MISSING_VALUES)))
    frame.index = pd.Index(ids.to_list(), name="sample_id", dtype=object)
    return frame


def require_column(frame: pd.DataFrame, column: str, source: str | os.PathLike | None = None,
                   flag: str = "--metadata-column") -> None:
    """Raise ``AamError`` naming ``flag`` and the available columns if ``column`` is absent."""
    if column not in frame.columns:
        available = ", ".join(list(frame.columns)[:10])
        raise AamError(f"column {column!r} ({flag}) is not in the metadata (columns: {available})", source=source)


def numeric_target(frame: pd.DataFrame, column: str, source: str | os.PathLike | None = None) -> pd.Series:
    """``column`` as floats; rows with missing, NaN or infinite values are dropped (and counted)."""
    require_column(frame, column, source)
    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce")
    bad = raw.notna() & values.isna() & ~raw.astype(str).str.lower().isin({"nan", "inf", "-inf"})
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
