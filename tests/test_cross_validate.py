"""`aam cross-validate` and `--group-column`: grouped outer and inner splits, the forest on the same folds, the
scores, and resuming after a real interruption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.metrics import roc_auc_score

from aam.cli import cli
from aam.objectives import scoring
from aam.workflows import samples

TINY = ["--embedding-dim", "16", "--attention-heads", "2", "--attention-layers", "1", "--token-limit", "24",
        "--max-bp", "150", "--batch-size", "8", "--seed", "3", "--device", "cpu", "--quiet"]
FOREST = ["--rf-n-estimators", "20", "--rf-n-jobs", "1"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def run_ok(*args):
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def subjects(synthetic_dir, tmp_path_factory):
    """The synthetic metadata with a ``subject`` column: 12 subjects of 4 consecutive samples."""
    frame = pd.read_csv(synthetic_dir["metadata"], sep="\t", dtype={"sample_id": str})
    frame["subject"] = [f"P{i // 4:02d}" for i in range(len(frame))]
    path = tmp_path_factory.mktemp("subjects") / "metadata.tsv"
    frame.to_csv(path, sep="\t", index=False)
    return path, frame.set_index("sample_id")["subject"].to_dict()


def _cv(synthetic_dir, metadata, out, *extra):
    return ["cross-validate", "--table", synthetic_dir["table"], "--metadata", metadata, "--output-dir", out,
            "--epochs", 3, "--lr", "1e-3", *TINY, *FOREST, *extra]


def _ids(path):
    return path.read_text().split()


@pytest.fixture(scope="module")
def grouped_run(synthetic_dir, subjects, tmp_path_factory):
    out = tmp_path_factory.mktemp("cv") / "grouped"
    run_ok(*_cv(synthetic_dir, subjects[0], out, "--metadata-column", "target", "--group-column", "subject",
                "--n-folds", 3))
    return out


def test_outer_and_inner_splits_are_grouped_and_test_folds_never_train(grouped_run, subjects):
    subject_of = subjects[1]
    folds = pd.read_csv(grouped_run / "folds.tsv", sep="\t", dtype=str)
    assert sorted(folds["sample_id"]) == sorted(subject_of) and folds["fold"].nunique() == 3
    assert (folds.groupby("group")["fold"].nunique() == 1).all()  # every subject in one outer fold
    for fold, test in folds.groupby("fold"):
        run = grouped_run / "folds" / fold / "model"
        train, val = _ids(run / "train_samples.txt"), _ids(run / "val_samples.txt")
        assert set(train + val).isdisjoint(test["sample_id"])  # held out of training and of early stopping
        assert sorted(train + val + test["sample_id"].tolist()) == sorted(subject_of)
        assert {subject_of[s] for s in train}.isdisjoint(subject_of[s] for s in val)  # inner split grouped too
        split = pd.read_csv(run / "split.tsv", sep="\t", dtype=str)
        assert split.groupby("group")["split"].nunique().max() == 1


def test_outputs_score_every_method_on_the_same_folds(grouped_run, synthetic_dir, tmp_path):
    oof = pd.read_csv(grouped_run / "oof_predictions.tsv", sep="\t", dtype={"sample_id": str, "fold": str})
    assert list(oof.columns) == ["sample_id", "fold", "group", "actual", "aam_prediction", "forest_prediction",
                                 "clr-linear_prediction", "boosted_prediction", "blend_prediction"]
    parts = ["aam", "forest", "clr-linear", "boosted"]  # the blend: AAM and every baseline, equal weights
    np.testing.assert_allclose(oof["blend_prediction"], oof[[f"{m}_prediction" for m in parts]].mean(1), rtol=1e-5)
    assert oof["sample_id"].is_unique and len(oof) == 48 and np.isfinite(oof["aam_prediction"]).all()
    comparison = pd.read_csv(grouped_run / "comparison.tsv", sep="\t", dtype={"fold": str})
    assert comparison["fold"].tolist() == ["fold0", "fold1", "fold2", "pooled", "mean", "sd"]
    pooled = comparison.set_index("fold").loc["pooled"]
    assert pooled["aam_mae"] == pytest.approx((oof["aam_prediction"] - oof["actual"]).abs().mean(), rel=1e-4)
    assert pooled["forest_mae"] == pytest.approx((oof["forest_prediction"] - oof["actual"]).abs().mean(), rel=1e-4)
    summary = json.loads((grouped_run / "summary.json").read_text())
    baselines = ["forest", "clr-linear", "boosted"]
    means = {b: comparison.set_index("fold").loc["mean", f"{b}_mae"] for b in baselines}
    assert summary["baselines"] == baselines and summary["best_baseline"] == min(means, key=means.get)
    best = summary["best_baseline"]
    for _, row in comparison.iloc[:4].iterrows():
        for name in baselines:
            assert row[f"winner_vs_{name}"] == ("aam" if row["aam_mae"] < row[f"{name}_mae"] else name)
        assert row["winner"] == row[f"winner_vs_{best}"]
    assert summary["aam_fold_wins"] == (comparison.iloc[:3]["winner"] == "aam").sum()
    for name in baselines:  # each baseline's pooled MAE is its own out-of-fold column's
        assert pooled[f"{name}_mae"] == pytest.approx((oof[f"{name}_prediction"] - oof["actual"]).abs().mean(),
                                                      rel=1e-4)
    groups = pd.read_csv(grouped_run / "groups.tsv", sep="\t")
    assert len(groups) == 12 and groups["n"].sum() == 48 and {"aam_mae", "forest_mae"} <= set(groups.columns)
    means = oof.groupby("group")[["aam_prediction", "forest_prediction", "actual"]].mean()
    for method in ("aam", "forest"):  # each subject's mean prediction, scored as one call per subject
        assert summary[method]["by_group"]["n_groups"] == 12
        assert summary[method]["by_group"]["mae"] == pytest.approx(
            (means[f"{method}_prediction"] - means["actual"]).abs().mean(), rel=1e-4)
    assert (grouped_run / "plots" / "cross_validation.png").stat().st_size > 1000
    # the forest is exactly aam rf-baseline over the same folds file with the same seed
    run_ok("rf-baseline", "--table", synthetic_dir["table"], "--metadata", synthetic_dir["metadata"],
           "--metadata-column", "target", "--folds", grouped_run / "folds.tsv", "--n-estimators", 20, "--n-jobs", 1,
           "--random-seed", 3, "--output", tmp_path / "rf.tsv", "--quiet")
    alone = pd.read_csv(tmp_path / "rf.tsv", sep="\t", dtype={"sample_id": str}).set_index("sample_id")
    np.testing.assert_allclose(oof.set_index("sample_id").loc[alone.index, "forest_prediction"], alone["prediction"])


def test_classifier_folds_are_stratified_and_scored_by_auroc(synthetic_dir, subjects, tmp_path, monkeypatch):
    monkeypatch.setattr(samples, "_SUGGESTED", set())
    out = tmp_path / "cls"
    result = run_ok(*_cv(synthetic_dir, subjects[0], out, "--metadata-column", "label", "--classifier",
                         "--n-folds", 3, "--epochs", 1))
    assert result.output.count("--group-column subject") == 1  # suggested once, not once per fold
    oof = pd.read_csv(out / "oof_predictions.tsv", sep="\t", dtype={"sample_id": str, "fold": str})
    classes = sorted(oof["actual"].unique())
    for method in ("aam", "forest", "blend"):
        probabilities = oof[[f"{method}_prob_{c}" for c in classes]].to_numpy()
        np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-4)
        reference = roc_auc_score(oof["actual"], probabilities, multi_class="ovr", labels=classes)
        pooled = pd.read_csv(out / "comparison.tsv", sep="\t").set_index("fold").loc["pooled", f"{method}_auroc"]
        assert pooled == pytest.approx(reference, abs=1e-4)
    folds = pd.read_csv(out / "folds.tsv", sep="\t", dtype=str).set_index("sample_id")["fold"]
    counts = pd.crosstab(folds, oof.set_index("sample_id").loc[folds.index, "actual"])
    assert (counts.max() - counts.min()).max() <= 1  # stratified: each class spread evenly over the folds


def test_leave_one_group_out_and_folds_file(synthetic_dir, subjects, grouped_run, tmp_path):
    frame = pd.read_csv(subjects[0], sep="\t", dtype=str)
    frame["study"] = ["A" if i < 16 else "B" if i < 36 else "C" for i in range(len(frame))]
    frame.to_csv(tmp_path / "meta.tsv", sep="\t", index=False)
    out = tmp_path / "logo"
    run_ok(*_cv(synthetic_dir, tmp_path / "meta.tsv", out, "--metadata-column", "target", "--group-column", "study",
                "--leave-one-group-out", "--no-forest", "--baselines", "forest,clr-linear", "--epochs", 1))
    comparison = pd.read_csv(out / "comparison.tsv", sep="\t", dtype={"fold": str})
    assert comparison["fold"].tolist()[:3] == ["A", "B", "C"] and comparison["n"].tolist()[:3] == [16, 20, 12]
    assert (comparison["winner"].fillna("") == comparison["winner_vs_clr-linear"].fillna("")).all()  # the one left
    assert not (out / "forest").exists() and not (out / "boosted").exists() and (out / "clr-linear").is_dir()
    out = tmp_path / "from_file"  # a folds file of another run gives the same folds
    run_ok(*_cv(synthetic_dir, subjects[0], out, "--metadata-column", "target", "--folds",
                grouped_run / "folds.tsv", "--baselines", "none", "--epochs", 1))
    assert "winner" not in pd.read_csv(out / "comparison.tsv", sep="\t").columns
    assert (pd.read_csv(out / "folds.tsv", sep="\t", dtype=str)[["sample_id", "fold"]]
            .equals(pd.read_csv(grouped_run / "folds.tsv", sep="\t", dtype=str)[["sample_id", "fold"]]))


@pytest.mark.parametrize(("extra", "flag"), [
    (["--leave-one-group-out"], "--leave-one-group-out"),
    (["--group-column", "nope"], "--group-column"),
    (["--val-samples", "x.txt"], "--val-samples"),
    (["--n-folds", "1"], "--n-folds"),
    (["--baselines", "forest,lasso"], "--baselines"),
])
def test_bad_cross_validation_options_are_one_line_errors(synthetic_dir, subjects, tmp_path, extra, flag):
    (tmp_path / "x.txt").write_text("S001\n")
    extra = [str(tmp_path / e) if e == "x.txt" else e for e in extra]
    result = invoke(*_cv(synthetic_dir, subjects[0], tmp_path / "bad", "--metadata-column", "target", *extra))
    assert result.exit_code == 2 and flag in result.output and "Traceback" not in result.output


def test_interrupted_run_resumes_to_the_uninterrupted_result(synthetic_dir, subjects, tmp_path):
    """SIGINT while fold 1 trains; the rerun keeps fold 0, resumes fold 1 from its last checkpoint and ends with
    the predictions of a run never interrupted."""
    args = _cv(synthetic_dir, subjects[0], tmp_path / "whole", "--metadata-column", "target", "--group-column",
               "subject", "--n-folds", 3, "--epochs", 12, "--patience", 12, "--baselines", "none")
    run_ok(*args)
    out = tmp_path / "cut"
    args[args.index("--output-dir") + 1] = out
    process = subprocess.Popen([sys.executable, "-m", "aam", *map(str, args)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    first, second = out / "folds" / "fold0" / "predictions.tsv", out / "folds" / "fold1" / "model" / "checkpoints"
    deadline = time.monotonic() + 120
    while not ((second / "last_model.pt").exists() and first.exists()) and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)
    assert process.returncode != 0, "the run finished before it could be interrupted"
    assert not (out / "folds" / "fold1" / "predictions.tsv").exists()
    kept = first.stat().st_mtime_ns
    run_ok(*args)
    assert first.stat().st_mtime_ns == kept  # the finished fold was not redone
    whole = pd.read_csv(tmp_path / "whole" / "oof_predictions.tsv", sep="\t", dtype={"sample_id": str})
    cut = pd.read_csv(out / "oof_predictions.tsv", sep="\t", dtype={"sample_id": str})
    np.testing.assert_allclose(cut["aam_prediction"], whole["aam_prediction"], rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- --group-column on each command
def test_train_splits_by_group_and_suggests_the_column(synthetic_dir, subjects, tmp_path, monkeypatch):
    monkeypatch.setattr(samples, "_SUGGESTED", set())
    base = ["train", "--table", synthetic_dir["table"], "--metadata", subjects[0], "--metadata-column", "target",
            "--epochs", 1, *TINY]
    run_ok(*base, "--group-column", "subject", "--output-dir", tmp_path / "grouped")
    subject_of = subjects[1]
    train, val = _ids(tmp_path / "grouped" / "train_samples.txt"), _ids(tmp_path / "grouped" / "val_samples.txt")
    assert {subject_of[s] for s in train}.isdisjoint(subject_of[s] for s in val) and len(train + val) == 48
    run_ok(*base, "--output-dir", tmp_path / "plain")
    log = (tmp_path / "plain" / "training.log").read_text()
    assert "--group-column subject" in log
    assert "--group-column" not in (tmp_path / "grouped" / "training.log").read_text()


def test_group_column_errors(synthetic_dir, subjects, tmp_path):
    base = ["train", "--table", synthetic_dir["table"], "--metadata", subjects[0], "--metadata-column", "target",
            "--epochs", 1, *TINY]
    missing = invoke(*base, "--group-column", "donor", "--output-dir", tmp_path / "a")
    assert missing.exit_code == 2 and "'donor' (--group-column)" in missing.output
    no_groups = invoke(*base, "--min-asv-groups", 2, "--output-dir", tmp_path / "c")
    assert no_groups.exit_code == 2 and "--min-asv-groups" in no_groups.output
    frame = pd.read_csv(subjects[0], sep="\t", dtype=str).assign(subject="P1")
    frame.to_csv(tmp_path / "one.tsv", sep="\t", index=False)
    one = invoke(*base[:4], tmp_path / "one.tsv", *base[5:], "--group-column", "subject", "--output-dir",
                 tmp_path / "b")
    assert one.exit_code == 2 and "one group" in one.output and not (tmp_path / "b").exists()


def test_pretrain_and_rf_baseline_take_the_group_column(synthetic_dir, subjects, tmp_path):
    subject_of = subjects[1]
    run_ok("pretrain", "--table", synthetic_dir["table"], "--tree", synthetic_dir["tree"], "--metadata", subjects[0],
           "--group-column", "subject", "--output-dir", tmp_path / "pre", "--epochs", 1, *TINY)
    train, val = _ids(tmp_path / "pre" / "train_samples.txt"), _ids(tmp_path / "pre" / "val_samples.txt")
    assert {subject_of[s] for s in train}.isdisjoint(subject_of[s] for s in val)
    no_metadata = invoke("pretrain", "--table", synthetic_dir["table"], "--tree", synthetic_dir["tree"],
                         "--group-column", "subject", "--output-dir", tmp_path / "pre2", "--epochs", 1, *TINY)
    assert no_metadata.exit_code == 2 and "--group-column" in no_metadata.output
    run_ok("rf-baseline", "--table", synthetic_dir["table"], "--metadata", subjects[0], "--metadata-column", "label",
           "--classifier", "--group-column", "subject", "--n-estimators", 20, "--n-jobs", 1, "--output",
           tmp_path / "rf" / "forest.tsv", "--quiet")
    train, val = _ids(tmp_path / "rf" / "forest_train_samples.txt"), _ids(tmp_path / "rf" / "forest_val_samples.txt")
    assert {subject_of[s] for s in train}.isdisjoint(subject_of[s] for s in val)
    predictions = pd.read_csv(tmp_path / "rf" / "forest.tsv", sep="\t", dtype={"sample_id": str})
    assert sorted(predictions["sample_id"]) == sorted(val)
    assert {"prob_type_a", "prob_type_b", "prob_type_c"} <= set(predictions.columns)
    groups = pd.read_csv(tmp_path / "rf" / "forest_groups.tsv", sep="\t")
    assert groups["n"].sum() == len(val) and "accuracy" in groups.columns


def test_variants_only_folds_and_samples_in_no_fold(synthetic_dir, subjects, grouped_run, tmp_path):
    """--variant adds a recipe to each fold's ensemble; --only-folds runs some folds now and the rest later into
    the same folder; samples of no fold are neither trained on nor predicted."""
    folds = pd.read_csv(grouped_run / "folds.tsv", sep="\t", dtype=str)
    partial = folds.iloc[4:]  # the first subject is in no fold
    partial.to_csv(tmp_path / "folds.tsv", sep="\t", index=False)
    out = tmp_path / "variants"
    args = _cv(synthetic_dir, subjects[0], out, "--metadata-column", "target", "--folds", tmp_path / "folds.tsv",
               "--baselines", "none", "--epochs", 1, "--variant", "--kmer-size 4")
    run_ok(*args, "--only-folds", "fold1")
    assert sorted(p.name for p in (out / "folds").iterdir()) == ["fold1"]
    runs = sorted(p.name for p in (out / "folds" / "fold1").iterdir() if p.is_dir())
    assert runs == ["model_s0", "model_v1_s0"]
    variant = json.loads((out / "folds" / "fold1" / "model_v1_s0" / "config.json").read_text())["options"]
    recipe = json.loads((out / "folds" / "fold1" / "model_s0" / "config.json").read_text())["options"]
    assert (variant["kmer_size"], recipe["kmer_size"]) == (4, 0) and variant["seed"] == recipe["seed"] == 3
    assert pd.read_csv(out / "comparison.tsv", sep="\t")["fold"].tolist()[:1] == ["fold1"]
    run_ok(*args)  # the remaining folds
    oof = pd.read_csv(out / "oof_predictions.tsv", sep="\t", dtype={"sample_id": str})
    assert sorted(oof["sample_id"]) == sorted(partial["sample_id"])
    left_out = set(folds["sample_id"].iloc[:4])
    for fold in ("fold0", "fold1", "fold2"):
        for run in ("model_s0", "model_v1_s0"):
            trained = _ids(out / "folds" / fold / run / "train_samples.txt")
            assert left_out.isdisjoint(trained + _ids(out / "folds" / fold / run / "val_samples.txt"))
    bad = invoke(*args[:-2], "--variant", "--bogus 1", "--output-dir", tmp_path / "bad")
    assert bad.exit_code == 2 and "--variant" in bad.output and not (tmp_path / "bad").exists()
    bad = invoke(*args, "--only-folds", "fold9", "--output-dir", tmp_path / "bad")
    assert bad.exit_code == 2 and "fold9" in bad.output and not (tmp_path / "bad").exists()


# ----------------------------------------------------------------------------- aam predict --forest
@pytest.mark.parametrize("task", ["target", "label"])
def test_predict_averages_the_model_with_a_forest_of_the_same_split(synthetic_dir, tmp_path, task):
    classifier = ["--classifier"] if task == "label" else []
    run_ok("train", "--table", synthetic_dir["table"], "--metadata", synthetic_dir["metadata"], "--metadata-column",
           task, *classifier, "--output-dir", tmp_path / "run", "--epochs", 1, *TINY)
    run = tmp_path / "run"
    run_ok("rf-baseline", "--table", synthetic_dir["table"], "--metadata", synthetic_dir["metadata"],
           "--metadata-column", task, *classifier, "--train-samples", run / "train_samples.txt", "--val-samples",
           run / "val_samples.txt", "--n-estimators", 20, "--n-jobs", 1, "--output", tmp_path / "rf.tsv",
           "--save-model", tmp_path / "forest.joblib", "--quiet")
    model = ["--model", run / "checkpoints" / "best_model.pt", "--table", synthetic_dir["table"], "--device", "cpu"]
    run_ok("predict", *model, "--output", tmp_path / "alone.tsv", "--quiet")
    run_ok("predict", *model, "--forest", tmp_path / "forest.joblib", "--forest-weight", 0.25, "--output",
           tmp_path / "both.tsv", "--quiet")
    alone = pd.read_csv(tmp_path / "alone.tsv", sep="\t", dtype={"sample_id": str}).set_index("sample_id")
    both = pd.read_csv(tmp_path / "both.tsv", sep="\t", dtype={"sample_id": str}).set_index("sample_id")
    forest = pd.read_csv(tmp_path / "rf.tsv", sep="\t", dtype={"sample_id": str}).set_index("sample_id")
    assert len(both) == 48
    # the saved forest predicts the validation samples exactly as rf-baseline scored them
    if task == "target":
        np.testing.assert_allclose(both.loc[forest.index, "forest_prediction"], forest["prediction"], rtol=1e-5)
        np.testing.assert_allclose(both["aam_prediction"], alone["prediction"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(both["prediction"], 0.75 * both["aam_prediction"] + 0.25
                                   * both["forest_prediction"], rtol=1e-5)
    else:
        columns = [c for c in alone.columns if c.startswith("prob_")]
        np.testing.assert_allclose(both.loc[forest.index, columns].to_numpy() - 0.75
                                   * alone.loc[forest.index, columns].to_numpy(),
                                   0.25 * forest[columns].to_numpy(), atol=1e-5)
        assert (both["prediction"] == [columns[k][5:] for k in both[columns].to_numpy().argmax(1)]).all()
        assert (both.loc[forest.index, "forest_prediction"] == forest["prediction"]).all()
    other = "label" if task == "target" else "target"
    run_ok("rf-baseline", "--table", synthetic_dir["table"], "--metadata", synthetic_dir["metadata"],
           "--metadata-column", other, *(["--classifier"] if other == "label" else []), "--n-estimators", 5,
           "--n-jobs", 1, "--output", tmp_path / "other.tsv", "--save-model", tmp_path / "other.joblib", "--quiet")
    wrong = invoke("predict", *model, "--forest", tmp_path / "other.joblib", "--output", tmp_path / "x.tsv")
    assert wrong.exit_code == 2 and "--metadata-column" in wrong.output and not (tmp_path / "x.tsv").exists()


def test_save_model_needs_one_fit(synthetic_dir, grouped_run, tmp_path):
    result = invoke("rf-baseline", "--table", synthetic_dir["table"], "--metadata", synthetic_dir["metadata"],
                    "--metadata-column", "target", "--folds", grouped_run / "folds.tsv", "--output",
                    tmp_path / "rf.tsv", "--save-model", tmp_path / "f.joblib")
    assert result.exit_code == 2 and "--save-model" in result.output and not (tmp_path / "f.joblib").exists()


def test_pretraining_per_fold_never_sees_the_fold(synthetic_dir, subjects, tmp_path):
    out = tmp_path / "pre"
    args = _cv(synthetic_dir, subjects[0], out, "--metadata-column", "target", "--group-column", "subject",
               "--n-folds", 3, "--epochs", 1, "--baselines", "none", "--tree", synthetic_dir["tree"], "--freeze-base")
    run_ok(*args, "--pretrain-epochs", 1, "--only-folds", "fold0")
    fold = out / "folds" / "fold0"
    test = set(pd.read_csv(out / "folds.tsv", sep="\t", dtype=str).query("fold == 'fold0'")["sample_id"])
    seen = _ids(fold / "pretrain" / "train_samples.txt") + _ids(fold / "pretrain" / "val_samples.txt")
    assert test.isdisjoint(seen) and len(seen) == 48 - len(test)
    options = json.loads((fold / "model" / "config.json").read_text())["options"]
    assert options["pretrained_encoder"] == str(fold / "pretrain" / "pretrained_encoder.pt")
    assert "loaded pretrained encoder" in (fold / "model" / "training.log").read_text()
    no_tree = invoke(*[a for a in args if a not in ("--tree", synthetic_dir["tree"])], "--pretrain-epochs", 1,
                     "--output-dir", tmp_path / "x")
    assert no_tree.exit_code == 2 and "--pretrain-epochs" in no_tree.output


def test_a_rerun_without_seed_keeps_the_first_runs_seed(synthetic_dir, subjects, tmp_path):
    out = tmp_path / "unseeded"
    args = [a for a in _cv(synthetic_dir, subjects[0], out, "--metadata-column", "target", "--n-folds", 2,
                           "--epochs", 1, "--baselines", "none") if a not in ("--seed", "3")]
    run_ok(*args, "--only-folds", "fold0")
    first = json.loads((out / "cv_config.json").read_text())["seed"]
    run_ok(*args, "--only-folds", "fold1")
    assert json.loads((out / "cv_config.json").read_text())["seed"] == first
    for fold in ("fold0", "fold1"):
        assert json.loads((out / "folds" / fold / "model" / "config.json").read_text())["options"]["seed"] == first


def test_group_means_score_one_call_per_group():
    """A classifier's group call is its samples' mean probabilities; groups with mixed labels have no call."""
    rng = np.random.default_rng(0)
    groups = np.repeat([f"P{i}" for i in range(10)], 5)
    labels = np.where(np.arange(10) % 2 == 0, "CD", "control").repeat(5)
    p_cd = rng.uniform(size=50)
    frame = pd.DataFrame({"sample_id": [f"s{i}" for i in range(50)], "group": groups, "actual": labels,
                          "prob_CD": p_cd, "prob_control": 1 - p_cd,
                          "prediction": np.where(p_cd > 0.5, "CD", "control")})
    means = scoring.group_means(frame, classifier=True)
    assert len(means) == 10 and list(means["group"]) == sorted(set(groups))
    per_person = frame.groupby("group")["prob_CD"].mean()
    np.testing.assert_allclose(means["prob_CD"], per_person.to_numpy())
    assert list(means["prediction"]) == list(np.where(per_person > 0.5, "CD", "control"))
    truth = frame.groupby("group")["actual"].first() == "CD"
    assert scoring.score_predictions(means, True)["auroc"] == pytest.approx(roc_auc_score(truth, per_person))
    mixed = frame.assign(actual=np.where(np.arange(50) % 2 == 0, "CD", "control"))
    assert scoring.group_means(mixed, classifier=True) is None
