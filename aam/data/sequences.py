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

from aam.errors import AamError

log = logging.getLogger(__name__)

PAD, A, C, G, T, UNK, START, MASK = range(8)
VOCAB_SIZE = 8
NUCLEOTIDE_TOKENS = (A, C, G, T, UNK)
IUPAC = frozenset("ACGTURYSWKMBDHVN")

_LOOKUP = np.full(256, UNK, dtype=np.uint8)  # byte -> token, for upper-cased sequences
for _letter, _token in zip("ACGTU", (A, C, G, T, T)):
    _LOOKUP[ord(_letter)] = _token


def normalize_sequence(sequence: str) -> str:
    """Upper-case, U read as T, surrounding whitespace removed."""
    return sequence.strip().upper().replace("U", "T")


def is_dna(sequence: str) -> bool:
    """True for a non-empty string of IUPAC nucleotide letters (any case, U allowed)."""
    text = sequence.strip().upper()
    return bool(text) and set(text) <= IUPAC


def read_fasta(path: str | os.PathLike) -> dict[str, str]:
    """FASTA records as {id: sequence}; the id is the first word after ``>``; multi-line records allowed."""
    path = Path(path)
    if not path.is_file():
        raise AamError("FASTA file not found", source=path, hint="check the --sequences path")
    records: dict[str, str] = {}
    current: str | None = None
    chunks: list[str] = []

    def finish() -> None:
        if current is not None:
            if current in records:
                raise AamError(f"duplicate sequence id {current!r}", source=path)
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
                    raise AamError(f"line {number}: a '>' header without an id", source=path)
                current, chunks = words[0], []
            elif current is None:
                raise AamError(f"line {number}: sequence data before the first '>' header", source=path,
                               hint="give a FASTA file")
            else:
                chunks.append(line)
    finish()
    if not records:
        raise AamError("no FASTA records", source=path)
    return records


def resolve_sequences(feature_ids: Sequence[str], fasta_path: str | os.PathLike | None = None,
                      source: str | os.PathLike | None = None) -> list[str]:
    """One normalised DNA sequence per feature id.

    Without a FASTA the ids must themselves be sequences (the deblur/DADA2 convention); with one, each id is
    looked up in it.
    """
    if fasta_path is None:
        bad = [i for i in feature_ids if not is_dna(str(i))]
        if bad:
            raise AamError(f"{len(bad)} of {len(feature_ids)} feature ids are not DNA sequences "
                           f"(e.g. {bad[0]!r})", source=source,
                           hint="pass --sequences FILE.fasta mapping the ids to their sequences")
        return [normalize_sequence(str(i)) for i in feature_ids]
    records = read_fasta(fasta_path)
    missing = [i for i in feature_ids if str(i) not in records]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5])
        raise AamError(f"{len(missing)} feature id(s) of the table are not in the FASTA (e.g. {shown})",
                       source=fasta_path, hint="give the FASTA written for this table")
    sequences = [records[str(i)] for i in feature_ids]
    bad = [(i, s) for i, s in zip(feature_ids, sequences) if not is_dna(s)]
    if bad:
        raise AamError(f"the sequence of {bad[0][0]!r} is not DNA ({bad[0][1][:20]!r}...)", source=fasta_path)
    return [normalize_sequence(s) for s in sequences]


@dataclass
class TokenizedSequences:
    """``tokens`` [N, max_bp + 1] uint8 (START first, PAD after the end), ``lengths`` [N] (non-PAD tokens,
    START included) and how many sequences were longer than ``max_bp``."""

    tokens: np.ndarray
    lengths: np.ndarray
    n_truncated: int


def tokenize(sequences: Sequence[str], max_bp: int = 150) -> TokenizedSequences:
    """Tokenise normalised sequences; longer than ``max_bp`` are truncated (and counted)."""
    if max_bp < 1:
        raise AamError(f"must be at least 1, got {max_bp}", source="--max-bp")
    tokens = np.zeros((len(sequences), max_bp + 1), dtype=np.uint8)
    tokens[:, 0] = START
    lengths = np.empty(len(sequences), dtype=np.int64)
    n_truncated = 0
    for row, sequence in enumerate(sequences):
        raw = normalize_sequence(sequence).encode("ascii", errors="replace")
        if len(raw) > max_bp:
            n_truncated += 1
            raw = raw[:max_bp]
        tokens[row, 1:len(raw) + 1] = _LOOKUP[np.frombuffer(raw, dtype=np.uint8)]
        lengths[row] = len(raw) + 1
    return TokenizedSequences(tokens, lengths, n_truncated)
