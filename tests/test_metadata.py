"""Metadata reading in the QIIME 2 conventions; ids as strings; target parsing."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from aam.data.metadata import align_samples, numeric_target, read_metadata, require_column
from aam.errors import AamError


def write(tmp_path, text: str, encoding: str = "utf-8"):
    path = tmp_path / "meta.tsv"
    path.write_bytes(text.encode(encoding))
    return path


@pytest.mark.parametrize("id_column", ["sample_id", "sample-id", "sampleid", "id", "#SampleID", "#Sample ID",
                                       "sample_name", "SampleID", "Sample ID", "ID"])
def test_every_id_column_convention(tmp_path, id_column):
    frame = read_metadata(write(tmp_path, f"{id_column}\tage\nS1\t3\nS2\t4\n"))
    assert list(frame.index) == ["S1", "S2"] and list(frame.columns) == ["age"]
    assert frame.index.name == "sample_id"


def test_first_matching_id_column_wins(tmp_path):
    frame = read_metadata(write(tmp_path, "age\tsample_name\tid\n3\tA\tx\n4\tB\ty\n"))
    assert list(frame.index) == ["A", "B"] and list(frame.columns) == ["age", "id"]


def test_comment_lines_before_and_after_the_header(tmp_path):
    text = "# exported by a lab tool\n\n#SampleID\tage\n# a note\nS1\t3\n\nS2\t4\n"
    frame = read_metadata(write(tmp_path, text))
    assert list(frame.index) == ["S1", "S2"] and frame["age"].tolist() == ["3", "4"]


def test_bom_whitespace_and_q2_types_row(tmp_path):
    text = "\ufeff sample_id \t age \t site\n#q2:types\tnumeric\tcategorical\nS1\t3\tgut\n"
    frame = read_metadata(write(tmp_path, text))
    assert list(frame.columns) == ["age", "site"]
    assert frame.loc["S1", "age"] == "3"


def test_ids_and_values_stay_strings(tmp_path):
    frame = read_metadata(write(tmp_path, "sample_id\tage\tzip\n007\t1\t02139\n10317.000001\t2\tNA\n"
                                          "1e5\t3\t1.50\nNA_1\t4\t5\n"))
    assert list(frame.index) == ["007", "10317.000001", "1e5", "NA_1"]
    assert all(isinstance(i, str) for i in frame.index)
    assert frame["zip"].tolist()[0] == "02139" and frame.loc["1e5", "zip"] == "1.50"


def test_values_are_stripped_and_bom_only_file_without_rows(tmp_path):
    frame = read_metadata(write(tmp_path, "\ufeffid\tsite\n S1 \t north \n"))
    assert list(frame.index) == ["S1"] and frame.loc["S1", "site"] == "north"
    frame = read_metadata(write(tmp_path, "sample_id\nS1\nS2\n"))
    assert frame.shape == (2, 0)


def test_missing_values_become_nan(tmp_path):
    text = "sample_id\tage\nS1\t\nS2\tNA\nS3\tnot provided\nS4\t5\nS5\tmissing: not collected\nS6\tNAN\n"
    frame = read_metadata(write(tmp_path, text))
    assert frame["age"].isna().tolist() == [True, True, True, False, True, True]


def test_duplicate_and_missing_id_column(tmp_path):
    with pytest.raises(AamError, match="sample id 'S1' appears more than once"):
        read_metadata(write(tmp_path, "sample_id\tage\nS1\t1\nS2\t2\n S1\t2\n"))
    with pytest.raises(AamError, match=r"no sample id column \(found: name, age\).*#SampleID"):
        read_metadata(write(tmp_path, "name\tage\nS1\t1\n"))
    with pytest.raises(AamError, match="not found"):
        read_metadata(tmp_path / "missing.tsv")


def test_unparseable_files(tmp_path):
    with pytest.raises(AamError, match="empty sample id"):
        read_metadata(write(tmp_path, "sample_id\tage\n\t1\n"))
    with pytest.raises(AamError, match="line 2 has 4 tab-separated fields, the header has 2"):
        read_metadata(write(tmp_path, "sample_id\tage\nS1\t1\t2\t3\n"))
    with pytest.raises(AamError, match="not UTF-8"):
        read_metadata(write(tmp_path, "sample_id\tsite\nS1\tZ\u00fcrich\n", encoding="latin-1"))
    with pytest.raises(AamError, match="column 'age' appears more than once"):
        read_metadata(write(tmp_path, "sample_id\tage\tage\nS1\t1\t2\n"))
    with pytest.raises(AamError, match="no header"):
        read_metadata(write(tmp_path, "# only a comment\n\n"))


def test_numeric_target_drops_nan_and_inf(tmp_path, caplog):
    text = "sample_id\tage\nS1\t1.5\nS2\tnan\nS3\tinf\nS4\t\nS5\t-2\nS6\t-Infinity\nS7\t1e3\n"
    frame = read_metadata(write(tmp_path, text))
    with caplog.at_level(logging.INFO, logger="aam.data.metadata"):
        target = numeric_target(frame, "age", source="meta.tsv")
    assert target.to_dict() == {"S1": 1.5, "S5": -2.0, "S7": 1000.0}
    assert target.dtype == np.float64
    assert "4 sample(s) with a missing or non-finite 'age'" in caplog.text


def test_numeric_target_errors_name_the_row(tmp_path):
    frame = read_metadata(write(tmp_path, "sample_id\tage\nS1\t1\nS2\tseven\n"))
    with pytest.raises(AamError, match="meta.tsv: column 'age' is not numeric: sample 'S2' has 'seven'"):
        numeric_target(frame, "age", source="meta.tsv")
    frame = read_metadata(write(tmp_path, "sample_id\tage\nS1\t\n"))
    with pytest.raises(AamError, match="no finite value"):
        numeric_target(frame, "age")
    with pytest.raises(AamError, match=r"'height' \(--metadata-column\) is not in the metadata \(columns: age\)"):
        require_column(frame, "height")


def test_align_samples_keeps_table_order(tmp_path, caplog):
    frame = read_metadata(write(tmp_path, "sample_id\tage\nB\t1\nA\t2\nD\t3\n"))
    assert align_samples(["A", "C", "B"], frame) == ["A", "B"]
    assert "1 table sample(s) are not in the metadata" in caplog.text
    with pytest.raises(AamError, match=r"no table sample id is in the metadata \(table: X, Y; metadata: B, A, D\)"):
        align_samples(["X", "Y"], frame)
