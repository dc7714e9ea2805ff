"""Distance matrix readers, writers and their checks."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from skbio import DistanceMatrix

from aam.data.distances import (
    LabeledMatrix,
    align_distance_matrix,
    align_sample_vector,
    ids_path,
    read_distance_matrix,
    read_sample_vector,
    write_distance_matrix,
)
from aam.errors import AamError

IDS = ["s1", "s2", "007", "s 4", "s5"]  # "007" must stay a string, "s 4" keeps its space


def random_distances(n: int = 5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    upper = np.triu(rng.random((n, n)), 1)
    return upper + upper.T


@pytest.mark.parametrize("suffix", [".h5", ".hdf5", ".tsv", ".csv", ".npy"])
def test_write_then_read_round_trip(tmp_path, suffix):
    values = random_distances()
    path = tmp_path / f"d{suffix}"
    write_distance_matrix(path, IDS, values)
    matrix = read_distance_matrix(path)
    assert matrix.ids == IDS
    np.testing.assert_array_equal(matrix.values, values)  # text keeps 17 digits: exact
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left
    if suffix == ".npy":
        assert ids_path(path).read_text().splitlines() == IDS


def test_csv_rows_and_columns_are_matched_by_label(tmp_path):
    values = random_distances(seed=1)
    rows, columns = [3, 0, 4, 1, 2], [1, 4, 2, 0, 3]
    lines = [",".join(["id", *(IDS[c] for c in columns)])]
    lines += [",".join([IDS[r], *(repr(float(values[r, c])) for c in columns)]) for r in rows]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    matrix = read_distance_matrix(tmp_path / "d.csv")
    aligned = align_distance_matrix(matrix, IDS)
    np.testing.assert_array_equal(aligned, values)


def test_reads_scikit_bio_text_and_unifrac_binaries_h5(tmp_path):
    values = random_distances(seed=2)
    DistanceMatrix(values, IDS).write(str(tmp_path / "skbio.txt"))
    matrix = read_distance_matrix(tmp_path / "skbio.txt")
    np.testing.assert_allclose(align_distance_matrix(matrix, IDS), values, rtol=1e-12)
    with h5py.File(tmp_path / "ssu.h5", "w") as handle:  # fixed-length bytes, as unifrac-binaries writes
        handle.create_dataset("order", data=np.array([i.encode() for i in IDS], dtype="S8"))
        handle.create_dataset("matrix", data=values)
    matrix = read_distance_matrix(tmp_path / "ssu.h5")
    assert matrix.ids == IDS
    np.testing.assert_array_equal(matrix.values, values)


def test_npy_and_npz_without_ids_are_in_table_order(tmp_path):
    values = random_distances(seed=3)
    np.save(tmp_path / "d.npy", values)
    np.savez(tmp_path / "single.npz", values)
    np.savez(tmp_path / "named.npz", distances=values, other=np.zeros(3))
    for name in ("d.npy", "single.npz", "named.npz"):
        matrix = read_distance_matrix(tmp_path / name)
        assert matrix.ids is None
        np.testing.assert_array_equal(align_distance_matrix(matrix, IDS, source=name), values)
    assert read_distance_matrix(tmp_path / "d.npy", ids=IDS).ids == IDS
    with pytest.raises(AamError, match="6 samples and the file carries no ids"):
        align_distance_matrix(read_distance_matrix(tmp_path / "d.npy"), [*IDS, "s6"], source="d.npy")
    with pytest.raises(AamError, match="6 samples"):
        read_distance_matrix(tmp_path / "d.npy", ids=[*IDS, "s6"])
    np.savez(tmp_path / "two.npz", a=values, b=values)
    with pytest.raises(AamError, match="none named 'distances'"):
        read_distance_matrix(tmp_path / "two.npz")


def test_align_reorders_and_subsets_by_id():
    values = random_distances(seed=4)
    matrix = LabeledMatrix(IDS, values)
    wanted = ["s5", "s1", "007"]
    np.testing.assert_array_equal(align_distance_matrix(matrix, wanted), values[np.ix_([4, 0, 2], [4, 0, 2])])


def test_missing_ids_are_counted_and_named(tmp_path):
    matrix = LabeledMatrix(IDS, random_distances())
    wanted = ["s1", *(f"x{k}" for k in range(7))]
    with pytest.raises(AamError, match=r"7 of 8 samples are missing .*'x0', 'x1', 'x2', 'x3', 'x4', \.\.\.") as err:
        align_distance_matrix(matrix, wanted, source="d.h5")
    assert err.value.source == "d.h5"


def write_text(path, values, ids=IDS) -> None:
    lines = ["\t".join(["", *ids])] + ["\t".join([i, *(repr(float(x)) for x in row)]) for i, row in zip(ids, values, strict=True)]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda v: v.__setitem__((0, 1), np.nan), "1 values are NaN or infinite"),
        (lambda v: v.__setitem__((2, 3), np.inf), "1 values are NaN or infinite"),
        (lambda v: v.__setitem__((1, 3), v[1, 3] + 0.01), "not symmetric"),
    ],
)
def test_bad_values_are_refused(tmp_path, change, message):
    values = random_distances()
    change(values)
    for path in (tmp_path / "d.tsv", tmp_path / "d.npy"):
        if path.suffix == ".tsv":
            write_text(path, values)
        else:
            np.save(path, values)
        with pytest.raises(AamError, match=message) as err:
            read_distance_matrix(path)
        assert err.value.source == str(path)


def test_small_asymmetry_is_tolerated(tmp_path):
    values = random_distances()
    values[0, 1] += 1e-8
    np.save(tmp_path / "d.npy", values)
    assert read_distance_matrix(tmp_path / "d.npy").values.shape == (5, 5)


def test_shape_and_label_errors(tmp_path):
    np.save(tmp_path / "rect.npy", np.zeros((3, 4)))
    with pytest.raises(AamError, match=r"not square \(3 x 4\)"):
        read_distance_matrix(tmp_path / "rect.npy")
    np.save(tmp_path / "flat.npy", np.zeros(4))
    with pytest.raises(AamError, match="2-dimensional"):
        read_distance_matrix(tmp_path / "flat.npy")
    write_text(tmp_path / "labels.tsv", random_distances(), ids=IDS)
    text = (tmp_path / "labels.tsv").read_text().replace("\ts5", "\tother", 1)
    (tmp_path / "labels.tsv").write_text(text)
    with pytest.raises(AamError, match="row and column labels differ"):
        read_distance_matrix(tmp_path / "labels.tsv")
    (tmp_path / "words.tsv").write_text("\ta\tb\na\t0\tx\nb\tx\t0\n")
    with pytest.raises(AamError, match="row 'a' holds a value that is not a number"):
        read_distance_matrix(tmp_path / "words.tsv")
    with h5py.File(tmp_path / "other.h5", "w") as handle:
        handle.create_dataset("matrix", data=np.zeros((2, 2)))
    with pytest.raises(AamError, match="no 'order' dataset"):
        read_distance_matrix(tmp_path / "other.h5")
    (tmp_path / "d.json").write_text("{}")
    with pytest.raises(AamError, match="unknown distance matrix format"):
        read_distance_matrix(tmp_path / "d.json")
    with pytest.raises(AamError, match="file not found"):
        read_distance_matrix(tmp_path / "absent.h5")
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(AamError, match="not a readable .h5 file"):
        read_distance_matrix(tmp_path / "junk.h5")


def test_duplicate_ids_are_refused(tmp_path):
    with h5py.File(tmp_path / "dup.h5", "w") as handle:
        handle.create_dataset("order", data=np.array([b"a", b"a"]))
        handle.create_dataset("matrix", data=np.zeros((2, 2)))
    with pytest.raises(AamError, match="1 ids occur more than once"):
        read_distance_matrix(tmp_path / "dup.h5")


def test_writer_refuses_unknown_format_and_leaves_nothing(tmp_path):
    with pytest.raises(AamError, match="cannot write a distance matrix as '.parquet'"):
        write_distance_matrix(tmp_path / "d.parquet", IDS, random_distances())
    with pytest.raises(ValueError):
        write_distance_matrix(tmp_path / "d.h5", IDS[:2], random_distances())
    assert list(tmp_path.iterdir()) == []


def test_sample_vectors(tmp_path):
    values = np.array([1.5, 2.0, 0.0, 3.25, 9.0])
    np.save(tmp_path / "pd.npy", values)
    np.testing.assert_array_equal(align_sample_vector(read_sample_vector(tmp_path / "pd.npy"), IDS), values)
    rows = "\n".join(f"{i}\t{float(v)!r}" for i, v in zip(IDS[::-1], values[::-1], strict=True))
    (tmp_path / "pd.tsv").write_text(f"sample_id\tfaith_pd\n{rows}\n")
    vector = read_sample_vector(tmp_path / "pd.tsv")
    np.testing.assert_array_equal(align_sample_vector(vector, IDS), values)
    with pytest.raises(AamError, match="1 of 1 samples are missing"):
        align_sample_vector(vector, ["nope"])
    (tmp_path / "nan.tsv").write_text("a\t1\nb\tnan\n")
    with pytest.raises(AamError, match="NaN or infinite"):
        read_sample_vector(tmp_path / "nan.tsv")
