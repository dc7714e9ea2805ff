"""Tokenizer, DNA validation and FASTA mapping."""

from __future__ import annotations

import numpy as np
import pytest

from aam.data.sequences import (
    PAD,
    START,
    UNK,
    is_dna,
    normalize_sequence,
    read_fasta,
    resolve_sequences,
    tokenize,
)
from aam.errors import AamError


def test_token_values_with_unknown_and_padding():
    tokens = tokenize(["ACGTN"], max_bp=8)
    np.testing.assert_array_equal(tokens.tokens[0], [START, 1, 2, 3, 4, UNK, PAD, PAD, PAD])
    assert tokens.lengths.tolist() == [6] and tokens.n_truncated == 0


def test_iupac_codes_are_unknown_never_padding():
    tokens = tokenize(["ARYSWKMBDHVN"], max_bp=12).tokens[0]
    assert tokens[1] == 1 and (tokens[2:13] == UNK).all()


def test_lowercase_and_u_are_normalised():
    assert normalize_sequence(" acgu \n") == "ACGT"
    np.testing.assert_array_equal(tokenize(["acgu"], 4).tokens, tokenize(["ACGT"], 4).tokens)


def test_truncation_is_counted():
    tokens = tokenize(["ACGTACGT", "ACG", "TTTTTT"], max_bp=5)
    assert tokens.n_truncated == 2
    assert tokens.tokens.shape == (3, 6)
    assert tokens.lengths.tolist() == [6, 4, 6]


@pytest.mark.parametrize("text, expected", [("ACGT", True), ("acgtn", True), ("ACGU", True), ("", False),
                                            ("5f3a9c", False), ("ACGT-", False), ("ACXT", False)])
def test_is_dna(text, expected):
    assert is_dna(text) is expected


def test_fasta_multiline_and_mapping(tmp_path):
    fasta = tmp_path / "s.fasta"
    fasta.write_text(">a description here\nACG\nTTA\n\n>b\nccgg\n")
    assert read_fasta(fasta) == {"a": "ACGTTA", "b": "ccgg"}
    assert resolve_sequences(["b", "a"], fasta) == ["CCGG", "ACGTTA"]


def test_fasta_errors(tmp_path):
    fasta = tmp_path / "s.fasta"
    fasta.write_text(">a\nACGT\n>a\nACGT\n")
    with pytest.raises(AamError, match="duplicate"):
        read_fasta(fasta)
    fasta.write_text(">a\nACGT\n")
    with pytest.raises(AamError, match="not in the FASTA"):
        resolve_sequences(["a", "zz"], fasta)
    with pytest.raises(AamError, match="not found"):
        read_fasta(tmp_path / "missing.fasta")


def test_hashed_ids_without_fasta_name_the_flag():
    with pytest.raises(AamError, match="--sequences"):
        resolve_sequences(["ACGT", "d41d8cd98f00b204e9800998ecf8427e"], source="table.biom")
