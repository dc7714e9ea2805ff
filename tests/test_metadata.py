"""Metadata reading in the QIIME 2 conventions; ids as strings; target parsing."""

from __future__ import annotations

import numpy as np
import pytest

from aam.data.metadata import align_samples, numeric_target, read_metadata, require_column
from aam.errors import AamError


def write(tmp_path, text: str, encoding: str = "utf-8"):
    path = tmp_path / "meta.tsv"
    path.write_bytes(text.encode(encoding))
    return path


@pytest.mark.parametrize("id_column", ["sample_id", "sample-id", "sampleid", "id", "#SampleID", "#Sample ID",
                                       "sample_name", "SampleID"])
def test_every_id_column_convention(tmp_path, id_column):
    frame = read_metadata(write(tmp_path, f"{id_column}\tage\nS1\t3\nS2\t4\n"))
    assert list(frame.index) == ["S1", "S2"] and list(frame.columns) == ["age"]


def test_bom_whitespace_and_q2_types_row(tmp_path):
    text = "\ufeff sample_id \t age \t site\n#q2:types\tnumeric\tcategorical\nS1\t3\tgut\n"
    frame = read_metadata(write(tmp_path, text))
    assert list(frame.columns) == ["age", "site"]
    assert frame.loc["S1", "age"] == "3"


def test_ids_stay_strings(tmp_path):
    frame = read_metadata(write(tmp_path, "sample_id\tage\n007\t1\n10317.000001\t2\n1e5\t3\n"))
    assert list(frame.index) == ["007", "10317.000001", "1e5"]


def test_missing_values_become_nan(tmp_path):
    frame = read_metadata(write(tmp_path, "sample_id\tage\nS1\t\nS2\tNA\nS3\tnot provided\nS4\t5\n"))
    assert frame["age"].isna().tolist() == [True, True, True, False]


def test_duplicate_and_missing_id_column(tmp_path):
    with pytest.raises(AamError, match="more than once"):
        read_metadata(write(tmp_path, "sample_id\tage\nS1\t1\nS1\t2\n"))
    with pytest.raises(AamError, match="no sample id column"):
        read_metadata(write(tmp_path, "name\tage\nS1\t1\n"))
    with pytest.raises(AamError, match="not found"):
        read_metadata(tmp_path / "missing.tsv")


def test_numeric_target_drops_nan_and_inf(tmp_path):
    frame = read_metadata(write(tmp_path, "sample_id\tage\nS1\t1.5\nS2\tnan\nS3\tinf\nS4\t\nS5\t-2\n"))
    target = numeric_target(frame, "age", source="meta.tsv")
    assert target.to_dict() == {"S1": 1.5, "S5": -2.0}
    assert target.dtype == np.float64


def test_numeric_target_errors_name_the_row(tmp_path):
    frame = read_metadata(write(tmp_path, "sample_id\tage\nS1\t1\nS2\tseven\n"))
    with pytest.raises(AamError, match="S2.*seven"):
        numeric_target(frame, "age")
    frame = read_metadata(write(tmp_path, "sample_id\tage\nS1\t\n"))
    with pytest.raises(AamError, match="no finite value"):
        numeric_target(frame, "age")
    with pytest.raises(AamError, match="height"):
        require_column(frame, "height")


def test_align_samples_keeps_table_order(tmp_path, caplog):
    frame = read_metadata(write(tmp_path, "sample_id\tage\nB\t1\nA\t2\n"))
    assert align_samples(["A", "C", "B"], frame) == ["A", "B"]
    assert "1 table sample" in caplog.text
    with pytest.raises(AamError, match="no table sample id"):
        align_samples(["X"], frame)
