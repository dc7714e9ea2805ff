"""train_val_split and the sample-list files."""

import logging
from collections import Counter

import pytest

from aam.data.split import read_ids, train_val_split, write_ids
from aam.errors import AamError

IDS = [f"s{i}" for i in range(50)]


def test_sizes_disjoint_and_complete():
    train, val = train_val_split(IDS, test_size=0.2, seed=1)
    assert (len(train), len(val)) == (40, 10)
    assert set(train).isdisjoint(val) and set(train) | set(val) == set(IDS)
    train, val = train_val_split(IDS, test_size=7, seed=1)
    assert (len(train), len(val)) == (43, 7)
    train, val = train_val_split(IDS[:3], test_size=0.1, seed=1)  # rounded up: at least one validation sample
    assert (len(train), len(val)) == (2, 1)


def test_same_seed_same_split():
    assert train_val_split(IDS, 0.3, seed=5) == train_val_split(IDS, 0.3, seed=5)
    assert train_val_split(IDS, 0.3, seed=5) != train_val_split(IDS, 0.3, seed=6)


def test_stratified_keeps_proportions():
    labels = ["a"] * 30 + ["b"] * 20
    _, val = train_val_split(IDS, test_size=0.2, seed=0, stratify=labels)
    label_of = dict(zip(IDS, labels, strict=True))
    assert Counter(label_of[i] for i in val) == {"a": 6, "b": 4}


def test_stratify_falls_back_to_random_with_warning(caplog):
    labels = ["a"] * 49 + ["lonely"]
    with caplog.at_level(logging.WARNING, logger="aam.data.split"):
        train, val = train_val_split(IDS, test_size=0.2, seed=0, stratify=labels)
    assert (len(train), len(val)) == (40, 10)
    assert any("lonely" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("ids", "test_size"), [(IDS[:1], 0.5), (IDS[:4], 4), (IDS[:4], 10), (IDS, 0.0),
                                                  (IDS, 1.0), (IDS, 0), (IDS, -0.2)])
def test_empty_side_or_bad_size_is_an_error(ids, test_size):
    with pytest.raises(AamError) as err:
        train_val_split(ids, test_size=test_size, seed=0)
    assert err.value.source == "--test-size"


def test_ids_round_trip(tmp_path):
    path = tmp_path / "out" / "train_samples.txt"
    write_ids(path, ["a", "b 1", "0012"])
    assert read_ids(path) == ["a", "b 1", "0012"]
    assert list(path.parent.iterdir()) == [path]  # no temporary file left
    path.write_text("  x \n\n y\n\n")
    assert read_ids(path) == ["x", "y"]


def test_read_ids_errors(tmp_path):
    with pytest.raises(AamError, match="not found"):
        read_ids(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(AamError, match="empty"):
        read_ids(tmp_path / "empty.txt")
