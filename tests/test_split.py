"""train_val_split and the sample-list files."""

import logging
from collections import Counter

import pandas as pd
import pytest

from aam.data.split import (
    grouped_train_val_split,
    make_folds,
    read_ids,
    suggest_group_column,
    train_val_split,
    write_ids,
)
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


# ----------------------------------------------------------------------------- grouped splits and folds
SUBJECT_IDS = [f"s{i}" for i in range(120)]
SUBJECTS = [f"P{i // 10}" for i in range(120)]  # 12 subjects of 10 samples
DISEASE = ["CD" if (i // 10) % 3 == 0 else "control" for i in range(120)]  # 4 CD subjects, 8 controls


def _groups_of(ids):
    return {SUBJECTS[SUBJECT_IDS.index(i)] for i in ids}


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_grouped_split_keeps_every_group_on_one_side(seed):
    train, val = grouped_train_val_split(SUBJECT_IDS, SUBJECTS, test_size=0.25, seed=seed)
    assert set(train).isdisjoint(val) and set(train) | set(val) == set(SUBJECT_IDS)
    assert _groups_of(train).isdisjoint(_groups_of(val))
    assert len(val) == 30  # 3 whole subjects of 10
    assert grouped_train_val_split(SUBJECT_IDS, SUBJECTS, 0.25, seed) == (train, val)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_grouped_split_stratifies_by_class(seed):
    _, val = grouped_train_val_split(SUBJECT_IDS, SUBJECTS, test_size=0.25, seed=seed, stratify=DISEASE)
    label = dict(zip(SUBJECT_IDS, DISEASE, strict=True))
    assert Counter(label[i] for i in val) == {"CD": 10, "control": 20}  # 1 CD and 2 control subjects
    assert _groups_of(val).isdisjoint(_groups_of(set(SUBJECT_IDS) - set(val)))


def test_one_group_is_a_clear_error():
    with pytest.raises(AamError) as err:
        grouped_train_val_split(IDS, ["same"] * len(IDS), 0.2, seed=0)
    assert err.value.source == "--group-column" and "one group" in str(err.value)


def test_samples_without_a_group_become_their_own_group(caplog):
    groups = [None if i % 10 == 0 else g for i, g in enumerate(SUBJECTS)]
    with caplog.at_level(logging.WARNING, logger="aam.data.split"):
        train, val = grouped_train_val_split(SUBJECT_IDS, groups, 0.25, seed=0)
    assert "12 sample(s) have no group value" in caplog.text
    assert set(train) | set(val) == set(SUBJECT_IDS)


def test_grouped_folds_partition_the_samples_by_group_and_keep_classes():
    folds = make_folds(SUBJECT_IDS, 4, seed=0, groups=SUBJECTS, stratify=DISEASE)
    assert sorted(i for fold in folds.values() for i in fold) == sorted(SUBJECT_IDS)
    owners = [_groups_of(fold) for fold in folds.values()]
    assert all(a.isdisjoint(b) for k, a in enumerate(owners) for b in owners[k + 1:])
    label = dict(zip(SUBJECT_IDS, DISEASE, strict=True))
    assert all({label[i] for i in fold} == {"CD", "control"} for fold in folds.values())  # 4 CD subjects, 4 folds


def test_plain_stratified_and_leave_one_group_out_folds():
    folds = make_folds(SUBJECT_IDS, 5, seed=1, stratify=DISEASE)
    label = dict(zip(SUBJECT_IDS, DISEASE, strict=True))
    assert [Counter(label[i] for i in fold) for fold in folds.values()] == [{"CD": 8, "control": 16}] * 5
    assert make_folds(SUBJECT_IDS, 5, seed=1) == make_folds(SUBJECT_IDS, 5, seed=1)
    logo = make_folds(SUBJECT_IDS, seed=0, groups=SUBJECTS, leave_one_group_out=True)
    assert sorted(logo) == sorted(set(SUBJECTS)) and all(_groups_of(v) == {k} for k, v in logo.items())
    with pytest.raises(AamError, match="groups cannot fill"):
        make_folds(SUBJECT_IDS, 13, seed=0, groups=SUBJECTS)
    with pytest.raises(AamError) as err:
        make_folds(SUBJECT_IDS, seed=0, leave_one_group_out=True)
    assert err.value.source == "--leave-one-group-out"


def test_suggests_a_subject_like_column_and_not_numbers_or_labels():
    frame = pd.DataFrame({"age": [str(20 + i % 7) for i in range(120)], "disease": DISEASE, "host_subject_id": SUBJECTS,
                          "run": [f"r{i}" for i in range(120)]}, index=SUBJECT_IDS)
    assert suggest_group_column(frame, SUBJECT_IDS) == ("host_subject_id", 12)
    assert suggest_group_column(frame, SUBJECT_IDS, exclude=("host_subject_id",)) is None
    frame["site_code"] = [f"c{i % 4}" for i in range(120)]  # text that repeats: a candidate without the name hint
    assert suggest_group_column(frame, SUBJECT_IDS, exclude=("host_subject_id",)) == ("site_code", 4)
