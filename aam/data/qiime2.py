"""QIIME 2 artifacts (``.qza``) read without the QIIME 2 framework.

An artifact is a zip archive holding one folder named by its UUID with ``VERSION`` (``archive: N``),
``metadata.yaml`` (``uuid``, ``type``, ``format``), the payload under ``data/`` and provenance files. Only
``metadata.yaml`` is parsed, with a safe YAML loader (provenance files use custom tags); the artifact type is
checked against what the flag expects, and the payload is extracted to a temporary folder for the usual
readers (BIOM, Newick, FASTA, taxonomy TSV).
"""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

import pandas as pd
import yaml

from aam.errors import AamError
from aam.fileio import atomic_write

# role -> (accepted semantic types, payload file name in data/, the flag that takes it)
ROLES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "table": (("FeatureTable[Frequency]",), "feature-table.biom", "--table"),
    "tree": (("Phylogeny[Rooted]",), "tree.nwk", "--tree"),
    "sequences": (("FeatureData[Sequence]",), "dna-sequences.fasta", "--sequences"),
    "taxonomy": (("FeatureData[Taxonomy]",), "taxonomy.tsv", "--taxonomy"),
}


def is_artifact(path: str | Path) -> bool:
    return Path(path).suffix.lower() == ".qza"


def artifact_type(path: str | Path) -> str:
    """The semantic type recorded in the artifact's ``metadata.yaml`` (e.g. ``FeatureTable[Frequency]``)."""
    with _open(Path(path)) as archive:
        return _metadata(archive, Path(path))[1]


@contextmanager
def artifact_payload(path: str | Path, role: str) -> Iterator[Path]:
    """The payload file of the ``role`` artifact at ``path``, extracted for the duration of the block."""
    path = Path(path)
    types, payload, flag = ROLES[role]
    with _open(path) as archive:
        root, kind = _metadata(archive, path)
        if kind not in types:
            raise AamError(f"is a QIIME 2 {kind} artifact; {flag} takes {' or '.join(types)}", source=path,
                           hint=f"give the {types[0]} artifact")
        data = [n for n in archive.namelist() if n.startswith(f"{root}/data/") and not n.endswith("/")]
        wanted = f"{root}/data/{payload}"
        member = wanted if wanted in data else (data[0] if len(data) == 1 else None)
        if member is None:
            raise AamError(f"the artifact holds no data/{payload}", source=path,
                           hint=f"export it with 'qiime tools export' and give the {payload} file")
        with tempfile.TemporaryDirectory(prefix="aam-qza-") as folder:
            target = Path(folder) / PurePosixPath(member).name
            with archive.open(member) as source, open(target, "wb") as sink:
                while chunk := source.read(1 << 20):
                    sink.write(chunk)
            yield target


@contextmanager
def _open(path: Path) -> Iterator[zipfile.ZipFile]:
    if not path.is_file():
        raise AamError("file not found", source=path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise AamError("not a QIIME 2 artifact (not a zip archive)", source=path,
                       hint="give a .qza written by QIIME 2, or the exported file") from None
    with archive:
        yield archive


def _metadata(archive: zipfile.ZipFile, path: Path) -> tuple[str, str]:
    """The archive's root folder and the artifact's semantic type."""
    roots = {PurePosixPath(name).parts[0] for name in archive.namelist() if name}
    candidates = [r for r in roots if f"{r}/metadata.yaml" in archive.namelist()]
    if len(candidates) != 1:
        raise AamError("not a QIIME 2 artifact (no <uuid>/metadata.yaml)", source=path,
                       hint="give a .qza written by QIIME 2, or the exported file")
    root = candidates[0]
    try:
        metadata = yaml.safe_load(archive.read(f"{root}/metadata.yaml").decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise AamError(f"unreadable metadata.yaml ({type(err).__name__})", source=path) from None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("type"), str):
        raise AamError("metadata.yaml names no artifact type", source=path)
    return root, metadata["type"].strip()


def write_q2_metadata(path: str | Path, frame: pd.DataFrame, id_column: str = "sample_id") -> None:
    """``frame`` as a QIIME 2 metadata TSV: ``sample-id`` first, then a ``#q2:types`` row (numeric or
    categorical per column), so ``qiime metadata tabulate`` and q2 visualizers read predictions as they are."""
    columns = [c for c in frame.columns if c != id_column]
    types = ["numeric" if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
             else "categorical" for c in columns]
    body = frame[[id_column, *columns]].rename(columns={id_column: "sample-id"})

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            handle.write("\t".join(["sample-id", *columns]) + "\n")
            handle.write("\t".join(["#q2:types", *types]) + "\n")
            body.to_csv(handle, sep="\t", index=False, header=False, float_format="%.6g")

    atomic_write(path, write)
