"""benchmarks/real_suite.py on a toy copy of the real-data layout (tests never read ../shared/data): cells run
through the CLI, resume, are scored like scikit-learn scores them, and the leave-one-task-out choice never
looks at the task it reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import mean_absolute_error, roc_auc_score


@pytest.fixture(scope="module")
def suite(load_benchmark):
    return load_benchmark("real_suite")


@pytest.fixture(scope="module")
def toy_data(synthetic_dir, tmp_path_factory):
    """``DATA/real/`` with a classification task (label, grouped folds) and a regression task (target)."""
    root = tmp_path_factory.mktemp("data")
    meta = pd.read_csv(synthetic_dir["metadata"], sep="\t", dtype={"sample_id": str})
    rows = []
    for name, column, kind in (("toy_label", "label", "classification"), ("toy_target", "target", "regression")):
        folder = root / "real" / name
        folder.mkdir(parents=True)
        (folder / "table.biom").write_bytes(Path(synthetic_dir["table"]).read_bytes())
        frame = pd.DataFrame({"sample_id": meta["sample_id"], "target": meta[column],
                              "subject": [f"P{i // 4}" for i in range(len(meta))]})
        frame.to_csv(folder / "metadata.tsv", sep="\t", index=False)
        pd.DataFrame({"sample_id": meta["sample_id"], "fold": [(i // 4) % 3 for i in range(len(meta))]}).to_csv(
            folder / "folds.tsv", sep="\t", index=False)
        positive = sorted(meta[column].astype(str))[0] if kind == "classification" else ""
        rows.append({"task": name, "kind": kind, "positive_class": positive,
                     "group_column": "subject" if kind == "classification" else ""})
    pd.DataFrame(rows).to_csv(root / "real" / "tasks.tsv", sep="\t", index=False)
    (root / "real" / "tree.nwk").write_bytes(Path(synthetic_dir["tree"]).read_bytes())
    return root


def test_cells_run_resume_and_score_like_sklearn(suite, toy_data, tmp_path):
    out, results = tmp_path / "runs", tmp_path / "results"
    args = ["--data", str(toy_data), "--tasks", "toy_label,toy_target", "--methods",
            "forest,clr-linear,boosted,baselines-average", "--seeds", "0", "--out", str(out), "--results", str(results)]
    suite.main(args)
    cell = out / "toy_label" / "forest" / "s0"
    first = (cell / "oof.tsv").stat().st_mtime_ns
    suite.main(args)  # finished cells are kept
    assert (cell / "oof.tsv").stat().st_mtime_ns == first
    info = json.loads((cell / "cell.json").read_text())
    assert info["cpu_s"] > 0 and info["command"][:4] == ["aam", "rf-baseline", "--baseline", "forest"]

    folds = pd.read_csv(results / "fold_scores.tsv", sep="\t", dtype={"fold": str})
    oof = pd.read_csv(cell / "oof.tsv", sep="\t", dtype={"sample_id": str, "fold": str})
    positive = pd.read_csv(toy_data / "real" / "tasks.tsv", sep="\t").set_index("task").loc["toy_label",
                                                                                          "positive_class"]
    for fold, part in oof.groupby("fold"):
        ours = folds[(folds["task"] == "toy_label") & (folds["method"] == "forest") & (folds["fold"] == fold)]
        ours = ours["auroc"].item()
        assert ours == pytest.approx(roc_auc_score(part["actual"].astype(str) == positive, part["score"]), abs=1e-4)
    parts = [pd.read_csv(out / "toy_target" / m / "s0" / "oof.tsv", sep="\t", dtype={"sample_id": str})
             .set_index("sample_id") for m in ("forest", "clr-linear", "boosted")]
    mean = sum(p["score"].loc[parts[0].index] for p in parts) / 3  # the derived equal average
    pooled = folds.query("task == 'toy_target' and method == 'baselines-average' and fold == 'pooled'")["mae"].item()
    assert pooled == pytest.approx(mean_absolute_error(parts[0]["actual"], mean), rel=1e-4)
    ranks = pd.read_csv(results / "ranks.tsv", sep="\t")
    assert set(ranks["method"]) == {"forest", "clr-linear", "boosted", "baselines-average"}
    assert (results / "report.md").read_text().count("| toy_") == 2
    assert json.loads((results / "run.json").read_text())["command"].startswith("python benchmarks/real_suite.py")


def test_tree_baselines_run_with_the_tree_and_the_recipes_are_scored_against_all_five(suite, toy_data, tmp_path):
    out, results = tmp_path / "runs", tmp_path / "results"
    five = list(suite.CLASSICAL)
    suite.main(["--data", str(toy_data), "--tasks", "toy_label", "--methods", ",".join([*five, "baselines-average"]),
                "--seeds", "0", "--out", str(out), "--results", str(results)])
    for name in suite.TREE_BASELINES:
        command = json.loads((out / "toy_label" / name / "s0" / "cell.json").read_text())["command"]
        assert command[command.index("--tree") + 1] == str(toy_data / "real" / "tree.nwk")
    per_task = pd.read_csv(results / "task_scores.tsv", sep="\t").set_index("method")
    means = per_task["mean"]
    best3, best5 = max(suite.BASELINES, key=means.get), max(five, key=means.get)
    assert (per_task["best_baseline"] == best3).all() and (per_task["best_of_5"] == best5).all()
    average = per_task.loc["baselines-average"]
    assert average["beats_best_of_5"] == (average["mean"] > means[best5])
    assert average["rank_vs_5"] == 1 + sum(means[m] > average["mean"] for m in five) + 0.5 * sum(
        means[m] == average["mean"] for m in five)
    ranks = pd.read_csv(results / "ranks.tsv", sep="\t").set_index("method")
    assert ranks.loc["baselines-average", "tasks_with_5"] == 1
    assert ranks.loc["baselines-average", "tasks_beating_best_of_5"] == int(average["beats_best_of_5"])
    assert "best of 5" in (results / "report.md").read_text()


def test_leave_one_task_out_choice_ignores_the_reported_task(suite):
    rows = []
    ranks = {"a": {"t1": 1.0, "t2": 1.0, "t3": 3.0}, "b": {"t1": 2.0, "t2": 2.0, "t3": 1.0}}
    for method, per_task in ranks.items():
        for task, rank in per_task.items():
            rows.append({"task": task, "seed": 0, "method": method, "rank_vs_baselines": rank, "mean": rank,
                         "metric": "auroc"})
    rows.append({"task": "t4", "seed": 0, "method": "a", "rank_vs_baselines": 1.0, "mean": 1.0, "metric": "mae"})
    rows.append({"task": "t4", "seed": 0, "method": "b", "rank_vs_baselines": 2.0, "mean": 2.0, "metric": "mae"})
    chosen = suite.leave_one_task_out(pd.DataFrame(rows), ["a", "b"]).set_index("task")
    # t3: chosen on t1 and t2, where a ranks better; a's own poor rank on t3 is what gets reported
    assert chosen.loc["t3", "chosen"] == "a" and chosen.loc["t3", "rank_vs_baselines"] == 3.0
    assert chosen.loc["t1", "chosen"] == "b"  # on t2 and t3: a (1 + 3) / 2 = 2.0, b (2 + 1) / 2 = 1.5
    assert np.isfinite(chosen["mean"]).all()
    assert "t4" not in chosen.index  # the only task of its kind: no other task to choose on


def test_recommended_reports_the_recipe_of_each_kind_of_task(suite):
    rows = [{"task": task, "seed": 0, "method": method, "metric": metric, "mean": value}
            for task, metric in (("c", "auroc"), ("r", "mae"))
            for value, method in enumerate(suite.RECOMMENDED.values())]
    every = suite.recommended(pd.DataFrame(rows))
    # a variant shares a recipe with the recommendation only where it names the same one (the earlier recipes)
    for name, recipes in suite.RECOMMENDED_VARIANTS.items():
        shared = {t for t, m in (("c", "auroc"), ("r", "mae")) if recipes.get(m) == suite.RECOMMENDED[m]}
        assert set(every.loc[every["method"] == name, "task"]) == shared
    picked = every[every["method"] == "recommended"].set_index("task")
    assert picked.loc["c", "chosen"] == suite.RECOMMENDED["auroc"] and picked.loc["c", "mean"] == 0
    assert picked.loc["r", "chosen"] == suite.RECOMMENDED["mae"] and picked.loc["r", "mean"] == 1


def test_a_one_command_cell_is_scored_against_the_baselines_of_its_own_run(suite, toy_data, tmp_path):
    """``recommended-command`` reads the blend and baseline columns of its own `aam cross-validate` table."""
    task = suite.tasks(toy_data).loc["toy_label"]
    rng = np.random.default_rng(0)
    n = 40
    actual = np.where(np.arange(n) % 2 == 0, task.positive, "other")
    truth = actual == task.positive
    columns = {"blend": truth + rng.normal(0, 0.4, n), "forest": truth + rng.normal(0, 0.8, n),
               "clr-linear": rng.normal(size=n), "boosted": truth + rng.normal(0, 1.5, n)}
    frame = pd.DataFrame({"sample_id": [f"s{i}" for i in range(n)], "fold": [str(i // 2 % 4) for i in range(n)],
                          "actual": actual, **{f"{m}_prob_{task.positive}": v for m, v in columns.items()}})
    cell = tmp_path / "toy_label" / "recommended-command" / "s0"
    (cell / "cv").mkdir(parents=True)
    frame.to_csv(cell / "cv" / "oof_predictions.tsv", sep="\t", index=False)
    (cell / "oof.tsv").write_text("finished\n")
    scored = suite.one_command_scores(suite.tasks(toy_data).loc[["toy_label"]], tmp_path, [0]).iloc[0]
    expected = {m: np.mean([roc_auc_score(truth[frame["fold"] == f], v[frame["fold"] == f]) for f in "0123"])
                for m, v in columns.items()}
    for method, value in expected.items():
        assert scored[f"{method}_mean"] == pytest.approx(value)
    assert scored["best_baseline"] == max(suite.BASELINES, key=expected.get)
    assert scored["ahead_of_best"] == (expected["blend"] > max(expected[b] for b in suite.BASELINES))
    assert scored["rank"] == 1 + sum(expected[b] > expected["blend"] for b in suite.BASELINES)


def test_methods_give_flags_per_kind_of_task_and_every_flag_set_parses(suite, toy_data):
    """A method's flags may differ by kind of task or leave a kind out (the boosted read-out's regression loss);
    every flag set parses as `aam cross-validate` options (names and values)."""
    import shlex

    import click

    from aam.cli import cli

    tasks = suite.tasks(toy_data)
    classification, regression = tasks.loc["toy_label"], tasks.loc["toy_target"]
    assert suite.method_flags("sequence-groups-boosted-l1", classification) is None
    assert "--group-boosted-loss absolute-error" in suite.method_flags("sequence-groups-boosted-l1", regression)
    assert suite.method_flags("sequence-groups-boosted", regression) == suite.METHODS["sequence-groups-boosted"]
    assert suite.recipe_column("recommended-command", classification) == "blend"  # cross-validate's average
    assert suite.recipe_column("recommended-command", regression) == "aam"  # the model is the average
    assert suite.method_flags("recommended-command-before22", classification) is None
    assert classification.tree == toy_data / "real" / "tree.nwk"  # a method's {tree}: the task's phylogeny
    command = cli.get_command(click.Context(cli), "cross-validate")
    for method in list(suite.METHODS) + list(suite.ONE_COMMAND):
        for task in (classification, regression):
            flags = suite.method_flags(method, task)
            if flags is None:
                continue
            args = ["--table", str(task.table), "--metadata", str(task.metadata), "--metadata-column", "target",
                    "--output-dir", "unused", *shlex.split(flags.format(encoder=task.table, tree=task.tree))]
            context = command.make_context("cross-validate", args)
            assert context.params["model_type"] in ("sequence-groups", "transformer")


def test_previous_results_fill_in_cells_not_on_disk_and_fresh_cells_replace_them(suite, tmp_path):
    """``--previous``: rows of an earlier results folder stand for cells that are no longer on disk; a cell run
    again replaces its old rows; derived rows (recommended, chosen) of the old table are not taken as cells."""
    previous = tmp_path / "previous"
    previous.mkdir()
    old = [{"task": "t", "method": m, "seed": 0, "fold": f, "n": 10, "mae": v}
           for m, v in (("forest", 2.0), ("boosted", 3.0)) for f in ("0", "pooled")]
    pd.DataFrame(old).to_csv(previous / "fold_scores.tsv", sep="\t", index=False)
    pd.DataFrame([{"task": "t", "method": m, "seed": 0, "cpu_min": c}
                  for m, c in (("forest", 1.0), ("boosted", 2.0), ("recommended", 3.0))]).to_csv(
        previous / "task_scores.tsv", sep="\t", index=False)
    pd.DataFrame([{"method": "recommended-command", "task": "t", "seed": s, "rank": s} for s in (0, 1)]).to_csv(
        previous / "one_command.tsv", sep="\t", index=False)
    fresh = pd.DataFrame([{"task": "t", "method": "forest", "seed": 0, "fold": f, "n": 10, "mae": 1.0}
                          for f in ("0", "pooled")])
    cost = pd.DataFrame([{"task": "t", "method": "forest", "seed": 0, "cpu_min": 0.5, "wall_min": 0.5}])
    own = pd.DataFrame([{"method": "recommended-command", "task": "t", "seed": 1, "rank": 9}])
    folds, cost, own = suite.with_previous(previous, fresh, cost, own)
    assert folds.groupby("method")["mae"].unique().map(list).to_dict() == {"forest": [1.0], "boosted": [3.0]}
    assert cost.set_index("method")["cpu_min"].to_dict() == {"forest": 0.5, "boosted": 2.0}
    assert own.set_index("seed")["rank"].to_dict() == {0: 0, 1: 9}
