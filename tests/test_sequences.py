"""Tokenizer, DNA validation and FASTA mapping."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from aam.data import vocabulary as vocab
from aam.data.sequences import (
    is_dna,
    normalize_sequence,
    read_fasta,
    resolve_sequences,
    tokenize,
)
from aam.data.vocabulary import PAD, START, UNK
from aam.errors import AamError
from aam.models import EncoderConfig


def test_vocabulary():
    assert (vocab.PAD, vocab.A, vocab.C, vocab.G, vocab.T, vocab.UNK, vocab.START, vocab.MASK, vocab.VOCAB_SIZE) == (
        0, 1, 2, 3, 4, 5, 6, 7, 8)
    assert vocab.NUCLEOTIDE_TOKENS == (1, 2, 3, 4, 5)
    assert EncoderConfig().vocab_size == vocab.VOCAB_SIZE  # the models embed the data layer's tokens


def reference_tokens(sequence: str, max_bp: int) -> list[int]:
    """A plain per-character loop, independent of the vectorised lookup."""
    codes = {"A": 1, "C": 2, "G": 3, "T": 4, "U": 4}
    body = [codes.get(ch, UNK) for ch in sequence.upper() if not ch.isspace()][:max_bp]
    return [START, *body] + [PAD] * (max_bp - len(body))


def test_tokenize_matches_a_per_character_loop():
    rng = np.random.default_rng(0)
    letters = list("ACGTUacgtuNRYKMBDHVSW")
    sequences = ["".join(rng.choice(letters, size=rng.integers(1, 40))) for _ in range(200)]
    tokens = tokenize(sequences, max_bp=25)
    assert tokens.tokens.dtype == np.uint8 and tokens.tokens.shape == (200, 26)
    np.testing.assert_array_equal(tokens.tokens, [reference_tokens(s, 25) for s in sequences])
    np.testing.assert_array_equal(tokens.lengths, [min(len(s), 25) + 1 for s in sequences])
    assert tokens.n_truncated == sum(len(s) > 25 for s in sequences)


def test_empty_input_and_bad_max_bp():
    assert tokenize([], max_bp=4).tokens.shape == (0, 5)
    with pytest.raises(AamError, match="--max-bp"):
        tokenize(["ACGT"], max_bp=0)


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


def test_truncation_is_counted_and_logged_once(caplog):
    with caplog.at_level(logging.INFO, logger="aam.data.sequences"):
        tokens = tokenize(["ACGTACGT", "ACG", "TTTTTT"], max_bp=5)
    assert [r.getMessage() for r in caplog.records] == [
        "2 of 3 ASV sequences are longer than --max-bp 5 and were truncated"]
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
    with pytest.raises(AamError, match="1 of the table's 2 feature ids are not in the FASTA.*'zz'"):
        resolve_sequences(["a", "zz"], fasta)
    with pytest.raises(AamError, match="not found"):
        read_fasta(tmp_path / "missing.fasta")
    fasta.write_text("\n\n")
    with pytest.raises(AamError, match="no FASTA records"):
        read_fasta(fasta)
    fasta.write_text("ACGT\n>a\nACGT\n")
    with pytest.raises(AamError, match="before the first"):
        read_fasta(fasta)


def test_fasta_sequence_that_is_not_dna(tmp_path):
    fasta = tmp_path / "s.fasta"
    fasta.write_text(">x1\nACGT\n>x2\nMKVLA*\n")
    with pytest.raises(AamError, match="sequence of 'x2' is not DNA"):
        resolve_sequences(["x1", "x2"], fasta)


def test_dna_ids_are_the_sequences():
    assert resolve_sequences(["acgu", "ACGTN"]) == ["ACGT", "ACGTN"]


def test_hashed_ids_without_fasta_name_the_flag():
    with pytest.raises(AamError, match="table.biom: the table's feature ids are not DNA.*--sequences FILE.fasta"):
        resolve_sequences(["ACGT", "d41d8cd98f00b204e9800998ecf8427e"], source="table.biom")


def test_hashed_synthetic_table_resolves_through_its_fasta(synthetic_dir):
    from aam.data.biom_table import load_table

    plain = [str(i) for i in load_table(synthetic_dir["table"]).ids(axis="observation")]
    hashed = [str(i) for i in load_table(synthetic_dir["table_hashed"]).ids(axis="observation")]
    assert resolve_sequences(hashed, synthetic_dir["sequences"]) == plain
    with pytest.raises(AamError, match="--sequences"):
        resolve_sequences(hashed, source=synthetic_dir["table_hashed"])
