"""`aam rf-baseline --folds`: cross-validation that agrees fold by fold with the two-list mode, and its errors."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner

from aam.cli import cli

FOREST = ["--n-estimators", "20", "--n-jobs", "1", "--random-seed", "3", "--quiet"]


def _run(*args):
    return CliRunner().invoke(cli, ["rf-baseline", *[str(a) for a in args]])


@pytest.fixture
def folds_file(synthetic_dir, tmp_path):
    ids = pd.read_csv(synthetic_dir["metadata"], sep="\t", dtype=str).iloc[:, 0].tolist()
    path = tmp_path / "folds.tsv"
    pd.DataFrame({"sample_id": ids, "fold": [f"f{i % 3}" for i in range(len(ids))]}).to_csv(path, sep="\t",
                                                                                           index=False)
    return path, ids


@pytest.mark.parametrize("task", ["target", "label"])
def test_folds_give_out_of_fold_predictions_equal_to_each_split_run(synthetic_dir, folds_file, tmp_path, task):
    path, ids = folds_file
    common = ["--table", synthetic_dir["table"], "--metadata", synthetic_dir["metadata"], "--metadata-column", task,
              *(["--classifier"] if task == "label" else []), *FOREST]
    result = _run(*common, "--folds", path, "--output", tmp_path / "cv.tsv")
    assert result.exit_code == 0, result.output
    cv = pd.read_csv(tmp_path / "cv.tsv", sep="\t", dtype={"sample_id": str, "fold": str})
    probabilities = ["prob_type_a", "prob_type_b", "prob_type_c"] if task == "label" else []
    assert list(cv.columns) == ["sample_id", "prediction", "actual", *probabilities, "fold"]
    assert sorted(cv["sample_id"]) == sorted(ids)  # every sample predicted once, by the forest without its fold
    per_fold = pd.read_csv(tmp_path / "cv_metrics.tsv", sep="\t", dtype={"fold": str})
    assert per_fold["fold"].tolist() == ["f0", "f1", "f2", "pooled"]
    assert per_fold["n"].tolist() == [16, 16, 16, 48]
    for fold in ("f0", "f1", "f2"):
        val = [s for i, s in enumerate(ids) if f"f{i % 3}" == fold]
        (tmp_path / "train.txt").write_text("\n".join(s for s in ids if s not in val) + "\n")
        (tmp_path / "val.txt").write_text("\n".join(val) + "\n")
        single = _run(*common, "--train-samples", tmp_path / "train.txt", "--val-samples", tmp_path / "val.txt",
                      "--output", tmp_path / "one.tsv")
        assert single.exit_code == 0, single.output
        alone = pd.read_csv(tmp_path / "one.tsv", sep="\t", dtype={"sample_id": str}).set_index("sample_id")
        mine = cv[cv["fold"] == fold].set_index("sample_id").loc[alone.index]
        assert (mine["prediction"].astype(str) == alone["prediction"].astype(str)).all()
    if task == "target":
        pooled = per_fold.iloc[-1]
        assert pooled["mae"] == pytest.approx((cv["prediction"] - cv["actual"]).abs().mean(), rel=1e-5)  # files hold 6 digits
        assert (tmp_path / "cv.png").is_file()


def test_folds_and_split_lists_are_exclusive_and_folds_need_two(synthetic_dir, folds_file, tmp_path):
    path, ids = folds_file
    base = ["--table", synthetic_dir["table"], "--metadata", synthetic_dir["metadata"], "--metadata-column",
            "target", "--output", tmp_path / "out.tsv", *FOREST]
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    result = _run(*base, "--folds", path, "--train-samples", tmp_path / "ids.txt")
    assert result.exit_code == 2 and "--folds" in result.output, result.output
    result = _run(*base, "--train-samples", tmp_path / "ids.txt")  # one list without the other
    assert result.exit_code == 2 and "--val-samples" in result.output, result.output
    one = tmp_path / "one_fold.tsv"
    pd.DataFrame({"sample_id": ids, "fold": "a"}).to_csv(one, sep="\t", index=False)
    result = _run(*base, "--folds", one)
    assert result.exit_code == 2 and "single fold" in result.output
    result = _run(*base, "--folds", path, "--fold-column", "nope")
    assert result.exit_code == 2 and "--fold-column" in result.output
    assert not (tmp_path / "out.tsv").exists()
