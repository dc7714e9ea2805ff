"""Feature taxonomy: a QIIME 2 taxonomy TSV (``Feature ID``, ``Taxon``, optional ``Confidence``) or its
``FeatureData[Taxonomy]`` artifact, read into feature id -> lineage string."""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path

from aam.data.qiime2 import artifact_payload, is_artifact
from aam.errors import AamError

TAXON_COLUMNS = ("taxon", "taxonomy")
FEATURE_COLUMNS = ("feature id", "feature-id", "featureid", "#otu id", "otu id", "#otuid", "id", "asv", "asv id")
UNNAMED_RANK = {"", "unassigned", "unknown", "uncultured", "metagenome"}


def read_taxonomy(path: str | Path) -> dict[str, str]:
    """Feature id -> lineage (``k__Bacteria; p__...``) from a taxonomy TSV or a ``.qza``."""
    if is_artifact(path):
        with artifact_payload(path, "taxonomy") as payload:
            return _read(payload, Path(path))
    return _read(Path(path), Path(path))


def _read(path: Path, source: Path) -> dict[str, str]:
    if not path.is_file():
        raise AamError("file not found", source=source)
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = [row for row in csv.reader(handle, delimiter="\t") if row and not row[0].startswith("#q2:")]
    if not rows or len(rows[0]) < 2:
        raise AamError("needs a header and at least two tab-separated columns (feature id, taxon)", source=source,
                       hint="give the taxonomy.tsv of 'qiime feature-classifier' or its .qza")
    header = [h.strip().lower() for h in rows[0]]
    column = next((header.index(c) for c in TAXON_COLUMNS if c in header), None)
    if column is None or header[0] not in FEATURE_COLUMNS:
        found = ", ".join(repr(h.strip()) for h in rows[0])
        raise AamError(f"needs a 'Feature ID' column first and a 'Taxon' column; found {found}", source=source,
                       hint="give the taxonomy.tsv of 'qiime feature-classifier' (Feature ID, Taxon, Confidence) "
                            "or its .qza")
    taxa: dict[str, str] = {}
    for number, row in enumerate(rows[1:], start=2):
        feature = row[0].strip()
        if not feature:
            continue
        if feature in taxa:
            raise AamError(f"feature id {feature!r} appears twice (row {number})", source=source)
        taxa[feature] = row[column].strip() if column < len(row) else ""
    return taxa


def short_name(lineage: str) -> str:
    """The deepest named rank of a lineage (``g__Prevotella`` of ``...; f__Prevotellaceae; g__Prevotella; s__``),
    or the lineage itself when no rank is named."""
    for rank in reversed([part.strip() for part in lineage.split(";")]):
        name = rank.split("__", 1)[-1].strip()
        if name.lower() not in UNNAMED_RANK:
            return rank
    return lineage.strip()


_DNA = re.compile(r"^[ACGTURYSWKMBDHVN]+$", re.IGNORECASE)


def feature_label(feature_id: str, taxon: str = "") -> str:
    """A short, distinct label of an ASV for figures: its taxon's deepest named rank when known, with a short id:
    the feature id itself when short, else for a sequence its MD5 (QIIME 2's feature id of that sequence) cut to
    8 characters, else the id cut to 10. Sequences sharing a primer share their first nucleotides, so a prefix
    of the sequence tells ASVs apart badly."""
    feature_id = str(feature_id)
    if len(feature_id) <= 12:
        short = feature_id
    elif _DNA.match(feature_id):
        short = "md5 " + hashlib.md5(feature_id.encode("ascii")).hexdigest()[:8]
    else:
        short = feature_id[:10] + "…"
    taxon = (taxon or "").strip()
    return f"{short_name(taxon)} ({short})" if taxon else short
