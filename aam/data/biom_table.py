"""Reading BIOM tables (1.0 JSON and 2.1 HDF5) and optional rarefaction."""

from __future__ import annotations

import logging
from pathlib import Path

import biom
import numpy as np

from aam.errors import AamError

log = logging.getLogger(__name__)


def load_table(path: str | Path) -> biom.Table:
    """Load a BIOM table, BIOM 1.0 (JSON) or 2.1 (HDF5), raising ``AamError`` on anything unreadable."""
    path = Path(path)
    if not path.is_file():
        raise AamError("file not found", source=path, hint="check the --table path")
    try:
        table = biom.load_table(str(path))
    except Exception as err:  # biom raises many types for malformed input
        raise AamError(f"not a readable BIOM table ({type(err).__name__})", source=path,
                       hint="give a BIOM 1.0 (JSON) or 2.1 (HDF5) file") from None
    if table.shape[0] == 0 or table.shape[1] == 0:
        raise AamError(f"the table is empty ({table.shape[0]} ASVs x {table.shape[1]} samples)", source=path)
    return table
