"""``aam unifrac`` end to end through click."""

from __future__ import annotations

from io import StringIO

import biom
import numpy as np
import pytest
from click.testing import CliRunner
from skbio import TreeNode
from skbio.diversity import beta_diversity

from aam.cli import cli
from aam.data.distances import read_distance_matrix

NEWICK = "(((AAAC:0.3,AAAG:0.2):0.1,AAAT:0.4):0.2,((CCCA:0.25,CCCG:0.1):0.3,GGGT:0.5):0.15);"
ASVS = ["AAAC", "AAAG", "AAAT", "CCCA", "CCCG", "GGGT"]
SAMPLES = ["s1", "s2", "s3", "s4"]
COUNTS = np.array([[5, 0, 1, 0, 0, 2], [0, 3, 3, 1, 0, 0], [1, 1, 1, 1, 1, 1], [0, 0, 0, 4, 2, 0]])  # [N, T]


@pytest.fixture
def inputs(tmp_path):
    table = biom.Table(COUNTS.T, ASVS, SAMPLES)  # BIOM is ASVs x samples
    (tmp_path / "t.biom").write_text(table.to_json("test"))
    (tmp_path / "tree.nwk").write_text(NEWICK)
    return tmp_path


def invoke(*args):
    return CliRunner().invoke(cli, ["unifrac", *map(str, args)])


@pytest.mark.parametrize(("metric", "skbio_name", "options"), [
    ("unweighted", "unweighted_unifrac", {}),
    ("weighted", "weighted_unifrac", {"normalized": True}),
    ("weighted-unnormalized", "weighted_unifrac", {}),
])
@pytest.mark.parametrize("suffix", [".h5", ".tsv", ".npy"])
def test_writes_a_matrix_equal_to_scikit_bio(inputs, metric, skbio_name, options, suffix):
    output = inputs / f"d{suffix}"
    result = invoke("--table", inputs / "t.biom", "--tree", inputs / "tree.nwk", "--metric", metric,
                    "--output", output, "--threads", 1, "--block-size", 3)
    assert result.exit_code == 0, result.output
    assert "4 samples x 6 ASVs" in result.stderr
    matrix = read_distance_matrix(output)
    assert matrix.ids == SAMPLES
    tree = TreeNode.read(StringIO(NEWICK))
    expected = beta_diversity(skbio_name, COUNTS, taxa=ASVS, tree=tree, **options).data
    np.testing.assert_allclose(matrix.values, expected, rtol=0, atol=1e-9)


def test_braycurtis_needs_no_tree(inputs):
    result = invoke("--table", inputs / "t.biom", "--metric", "braycurtis", "--output", inputs / "d.h5",
                    "--float32")
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(read_distance_matrix(inputs / "d.h5").values,
                               beta_diversity("braycurtis", COUNTS).data, atol=1e-6)


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aam: error: "), result.stderr
    return lines[0]


def test_a_tree_missing_asvs_fails_cleanly(inputs):
    (inputs / "bad.nwk").write_text("((AAAC:0.3,AAAG:0.2):0.1,TTTT:0.4);")
    result = invoke("--table", inputs / "t.biom", "--tree", inputs / "bad.nwk", "--output", inputs / "d.h5")
    line = one_line_error(result)
    assert "bad.nwk" in line and "4 of the table's 6 ASVs are not tips" in line and "'AAAT'" in line
    assert not (inputs / "d.h5").exists()


def test_flag_errors_fail_cleanly(inputs):
    line = one_line_error(invoke("--table", inputs / "t.biom", "--output", inputs / "d.h5"))
    assert "--tree" in line
    line = one_line_error(invoke("--table", inputs / "t.biom", "--tree", inputs / "tree.nwk",
                                 "--output", inputs / "d.parquet"))
    assert "cannot write" in line
    line = one_line_error(invoke("--table", inputs / "t.biom", "--tree", inputs / "broken.nwk",
                                 "--output", inputs / "d.h5"))
    assert "broken.nwk: file not found" in line
    assert sorted(p.name for p in inputs.iterdir()) == ["t.biom", "tree.nwk"]


def test_help_states_defaults_and_units():
    result = CliRunner().invoke(cli, ["unifrac", "--help"])
    assert result.exit_code == 0
    for text in ("--metric", "default: unweighted", "--block-size", "default: 1024", "--float32", "--threads"):
        assert text in result.output
