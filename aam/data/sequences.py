"""ASV sequences: FASTA reading, DNA validation and the nucleotide tokenizer.

Vocabulary: ``PAD=0`` (after the end), ``A=1 C=2 G=3 T=4``, ``UNK=5`` (any other IUPAC code: an explicit
token, never padding), ``START=6`` (first position of every sequence, so no row is all padding), ``MASK=7``
(masked-nucleotide objective).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aam.data.qiime2 import artifact_payload, is_artifact
from aam.data.vocabulary import START, UNK, A, C, G, T
from aam.errors import AamError

log = logging.getLogger(__name__)

IUPAC = frozenset("ACGTURYSWKMBDHVN")

_LOOKUP = np.full(256, UNK, dtype=np.uint8)  # byte -> token, for upper-cased sequences
for _letter, _token in zip("ACGTU", (A, C, G, T, T)):
    _LOOKUP[ord(_letter)] = _token


def normalize_sequence(sequence: str) -> str:
    """Upper-case, U read as T, all whitespace removed (FASTA line breaks, stray spaces)."""
    return "".join(sequence.split()).upper().replace("U", "T")


def is_dna(sequence: str) -> bool:
    """True for a non-empty string of IUPAC nucleotide letters (any case, U allowed, whitespace ignored)."""
    text = "".join(sequence.split()).upper()
    return bool(text) and set(text) <= IUPAC


def read_fasta(path: str | os.PathLike) -> dict[str, str]:
    """FASTA records as {id: sequence}; the id is the first word after ``>``; multi-line records allowed. A QIIME 2
    FeatureData[Sequence] ``.qza`` is read from its payload."""
    path = Path(path)
    if not path.is_file():
        raise AamError("FASTA file not found", source=path, hint="check the --sequences path")
    if is_artifact(path):
        with artifact_payload(path, "sequences") as payload:
            return _read_fasta_file(payload, source=path)
    return _read_fasta_file(path, source=path)


def _read_fasta_file(path: Path, source: Path) -> dict[str, str]:
    records: dict[str, str] = {}
    current: str | None = None
    chunks: list[str] = []

    def finish() -> None:
        if current is not None:
            if current in records:
                raise AamError(f"duplicate sequence id {current!r}", source=source)
            records[current] = "".join(chunks)

    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line:
                continue
            if line.startswith(">"):
                finish()
                words = line[1:].split()
                if not words:
                    raise AamError(f"line {number}: a '>' header without an id", source=source)
                current, chunks = words[0], []
            elif current is None:
                raise AamError(f"line {number}: sequence data before the first '>' header", source=source,
                               hint="give a FASTA file")
            else:
                chunks.append(line)
    finish()
    if not records:
        raise AamError("no FASTA records", source=source)
    return records


def resolve_sequences(feature_ids: Sequence[str], fasta_path: str | os.PathLike | None = None,
                      source: str | os.PathLike | None = None) -> list[str]:
    """One normalised DNA sequence per feature id, in the order of ``feature_ids``.

    With a FASTA (``--sequences``) every id is looked up in it: an explicit mapping wins, so an id that happens
    to spell IUPAC letters (``'B'``, ``'ACC'``) is not mistaken for a sequence. Without one the ids must be the
    sequences themselves (the deblur/DADA2 convention). ``source`` names the table in errors.
    """
    ids = [str(i) for i in feature_ids]
    if fasta_path is None:
        bad = [i for i in ids if not is_dna(i)]
        if bad:
            raise AamError(f"the table's feature ids are not DNA sequences ({len(bad)} of {len(ids)}, e.g. "
                           f"{bad[0]!r})", source=source,
                           hint="pass --sequences FILE.fasta mapping the ids to their sequences")
        return [normalize_sequence(i) for i in ids]
    records = read_fasta(fasta_path)
    missing = [i for i in ids if i not in records]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:3])
        raise AamError(f"{len(missing)} of the table's {len(ids)} feature ids are not in the FASTA (e.g. {shown})",
                       source=fasta_path, hint="give the FASTA written for this table")
    sequences = [records[i] for i in ids]
    bad = next(((i, s) for i, s in zip(ids, sequences) if not is_dna(s)), None)
    if bad is not None:
        raise AamError(f"the sequence of {bad[0]!r} is not DNA ({bad[1][:20]!r})", source=fasta_path,
                       hint="sequences may hold only IUPAC nucleotide letters")
    return [normalize_sequence(s) for s in sequences]


@dataclass
class TokenizedSequences:
    """Tokenised ASVs: ``tokens`` [N, max_bp + 1] uint8 (START first, PAD after the end), ``lengths`` [N]
    (non-PAD tokens, START included) and ``n_truncated`` (sequences longer than ``max_bp``)."""

    tokens: np.ndarray  # [N, max_bp + 1] uint8
    lengths: np.ndarray  # [N] int64
    n_truncated: int


def tokenize(sequences: Sequence[str], max_bp: int = 150) -> TokenizedSequences:
    """Tokenise sequences in one vectorised pass; longer than ``max_bp`` are truncated, counted and logged."""
    if max_bp < 1:
        raise AamError(f"must be at least 1, got {max_bp}", source="--max-bp")
    normalized = [normalize_sequence(s) for s in sequences]
    full_lengths = np.fromiter((len(s) for s in normalized), dtype=np.int64, count=len(normalized))
    n_truncated = int((full_lengths > max_bp).sum())
    kept = np.minimum(full_lengths, max_bp)  # [N]
    raw = "".join(s[:max_bp] for s in normalized).encode("ascii", errors="replace")  # non-ASCII -> '?' -> UNK
    rows = np.repeat(np.arange(len(normalized)), kept)
    starts = np.cumsum(kept) - kept  # offset of each sequence in ``raw``
    columns = np.arange(len(raw)) - np.repeat(starts, kept) + 1  # +1: after START
    tokens = np.zeros((len(normalized), max_bp + 1), dtype=np.uint8)  # PAD everywhere
    tokens[:, 0] = START
    tokens[rows, columns] = _LOOKUP[np.frombuffer(raw, dtype=np.uint8)]
    if n_truncated:
        log.info("%d of %d ASV sequences are longer than --max-bp %d and were truncated", n_truncated,
                 len(normalized), max_bp)
    return TokenizedSequences(tokens, kept + 1, n_truncated)
