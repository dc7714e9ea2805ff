"""QIIME 2 artifacts (.qza, archive versions 5 and 6) wherever a table, tree or sequences are read: the same
data as the plain files, the artifact type checked, one-line errors."""

from __future__ import annotations

import hashlib
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from aam.cli import cli
from aam.data.biom_table import load_table
from aam.data.qiime2 import artifact_type
from aam.data.sequences import read_fasta
from aam.errors import AamError
from aam.unifrac.tree import load_tree
from aam.workflows.inputs import load_amplicon_data


def make_artifact(path: Path, semantic_type: str, fmt: str, payload: dict[str, bytes], version: int = 5) -> Path:
    """An artifact in the layout QIIME 2 writes: <uuid>/{VERSION, metadata.yaml, checksums.md5, data/,
    provenance/} (provenance with a custom YAML tag, which a reader must not parse)."""
    uid = str(uuid.uuid4())
    files = {
        "VERSION": f"QIIME 2\narchive: {version}\nframework: {'2023.5.1' if version == 5 else '2024.10.1'}\n",
        "metadata.yaml": f"uuid: {uid}\ntype: {semantic_type}\nformat: {fmt}\n",
        **{f"data/{name}": data for name, data in payload.items()},
        "provenance/action/action.yaml": "action:\n  inputs:\n  - table: !ref 'environment:framework'\n",
    }
    if version >= 6:
        files["provenance/citations.bib"] = "@misc{x, title={y}}\n"
    encoded = {name: data.encode() if isinstance(data, str) else data for name, data in files.items()}
    encoded["checksums.md5"] = "".join(f"{hashlib.md5(d).hexdigest()}  {n}\n" for n, d in encoded.items()).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in encoded.items():
            archive.writestr(f"{uid}/{name}", data)
    return path


@pytest.fixture(scope="module", params=[5, 6])
def artifacts(request, synthetic_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"qza{request.param}")
    version = request.param
    return {
        "table": make_artifact(folder / "table.qza", "FeatureTable[Frequency]", "BIOMV210DirFmt",
                               {"feature-table.biom": Path(synthetic_dir["table"]).read_bytes()}, version),
        "hashed": make_artifact(folder / "hashed.qza", "FeatureTable[Frequency]", "BIOMV210DirFmt",
                                {"feature-table.biom": Path(synthetic_dir["table_hashed"]).read_bytes()}, version),
        "tree": make_artifact(folder / "tree.qza", "Phylogeny[Rooted]", "NewickDirectoryFormat",
                              {"tree.nwk": Path(synthetic_dir["tree"]).read_bytes()}, version),
        "sequences": make_artifact(folder / "sequences.qza", "FeatureData[Sequence]", "DNASequencesDirectoryFormat",
                                   {"dna-sequences.fasta": Path(synthetic_dir["sequences"]).read_bytes()}, version),
    }


def test_artifacts_read_as_their_plain_files(artifacts, synthetic_dir):
    assert artifact_type(artifacts["tree"]) == "Phylogeny[Rooted]"
    plain, packed = load_table(synthetic_dir["table"]), load_table(artifacts["table"])
    assert list(plain.ids("sample")) == list(packed.ids("sample"))
    assert list(plain.ids("observation")) == list(packed.ids("observation"))
    np.testing.assert_array_equal(plain.matrix_data.toarray(), packed.matrix_data.toarray())
    assert sorted(t.name for t in load_tree(artifacts["tree"]).tips()) == sorted(
        t.name for t in load_tree(synthetic_dir["tree"]).tips())
    assert read_fasta(artifacts["sequences"]) == read_fasta(synthetic_dir["sequences"])
    by_fasta = load_amplicon_data(synthetic_dir["table_hashed"], sequences_path=synthetic_dir["sequences"])
    by_artifacts = load_amplicon_data(str(artifacts["hashed"]), sequences_path=str(artifacts["sequences"]))
    np.testing.assert_array_equal(by_fasta.tokens, by_artifacts.tokens)


def test_unifrac_from_artifacts_equals_the_plain_files(artifacts, synthetic_dir, tmp_path):
    for name, table, tree in (("plain", synthetic_dir["table"], synthetic_dir["tree"]),
                              ("qza", artifacts["table"], artifacts["tree"])):
        result = CliRunner().invoke(cli, ["unifrac", "--table", str(table), "--tree", str(tree), "--metric",
                                          "weighted", "--output", str(tmp_path / f"{name}.tsv")])
        assert result.exit_code == 0, result.output
    assert (tmp_path / "plain.tsv").read_text() == (tmp_path / "qza.tsv").read_text()


def test_the_wrong_artifact_type_is_one_line(artifacts, synthetic_dir, tmp_path):
    result = CliRunner().invoke(cli, ["unifrac", "--table", str(artifacts["tree"]), "--tree", str(synthetic_dir["tree"]),
                                      "--output", str(tmp_path / "d.tsv")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "is a QIIME 2 Phylogeny[Rooted] artifact; --table takes FeatureTable[Frequency]" in result.output
    assert not (tmp_path / "d.tsv").exists()
    with pytest.raises(AamError, match="--sequences takes FeatureData"):
        read_fasta(artifacts["table"])


def test_files_that_are_not_artifacts(tmp_path):
    not_zip = tmp_path / "a.qza"
    not_zip.write_text("plain text")
    with pytest.raises(AamError, match="not a zip archive"):
        load_table(not_zip)
    no_metadata = tmp_path / "b.qza"
    with zipfile.ZipFile(no_metadata, "w") as archive:
        archive.writestr("x/data/feature-table.biom", b"")
    with pytest.raises(AamError, match="no <uuid>/metadata.yaml"):
        load_tree(no_metadata)
    empty = make_artifact(tmp_path / "c.qza", "FeatureTable[Frequency]", "BIOMV210DirFmt", {})
    with pytest.raises(AamError, match="holds no data/feature-table.biom"):
        load_table(empty)


def test_predictions_as_qiime2_metadata(synthetic_dir, tmp_path):
    from aam.data.metadata import read_metadata

    run = tmp_path / "run"
    assert CliRunner().invoke(cli, ["train", "--table", synthetic_dir["table"], "--metadata", synthetic_dir["metadata"],
                                    "--metadata-column", "label", "--classifier", "--model-type", "sequence-groups",
                                    "--sequence-groups", "2,4", "--max-bp", "150", "--output-dir", str(run),
                                    "--quiet"]).exit_code == 0
    common = ["predict", "--model", str(run / "checkpoints" / "best_model.pt"), "--table", synthetic_dir["table"]]
    assert CliRunner().invoke(cli, [*common, "--output", str(tmp_path / "plain.tsv")]).exit_code == 0
    result = CliRunner().invoke(cli, [*common, "--output", str(tmp_path / "q2.tsv"), "--q2-metadata"])
    assert result.exit_code == 0, result.output
    header, types = (tmp_path / "q2.tsv").read_text().splitlines()[:2]
    columns = header.split("\t")
    assert columns[:2] == ["sample-id", "prediction"]
    kinds = dict(zip(columns[1:], types.split("\t")[1:]))
    assert types.startswith("#q2:types\t") and kinds["prediction"] == "categorical"
    assert all(kinds[c] == "numeric" for c in columns if c.startswith("prob_") or c == "unseen_read_share")
    plain = read_metadata(tmp_path / "plain.tsv")
    again = read_metadata(tmp_path / "q2.tsv")  # the #q2:types row is skipped
    assert list(again.index) == list(plain.index) and list(again["prediction"]) == list(plain["prediction"])
