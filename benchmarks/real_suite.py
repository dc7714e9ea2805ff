"""The real-data suite: every method on every real task's fixed outer folds, through the CLI a user types.

Tasks: the ten MLRepo tasks of ``DATA/real/`` (``tasks.tsv``: table, metadata with ``target`` and, where people
or families repeat, ``subject``; fixed ``folds.tsv``) and ``oral_age`` (``DATA/oral_dev.biom``, age; the suite
writes KFold(5, shuffle=True, random_state=0) folds: new samples of the studies trained on, the protocol of the
cohort's held-out check). Methods (``METHODS``): the classical baselines run ``aam rf-baseline --baseline NAME
--folds``; AAM recipes run ``aam cross-validate --folds ... --baselines none`` with the flags of the recipe.
Inner splits (penalties, early stopping) are grouped by ``subject`` where the task has it.

Each (task, method, seed) cell writes ``OUT/<task>/<method>/s<seed>/`` and ends with ``oof.tsv`` (sample_id,
fold, actual, score: the positive class's probability or the prediction) and ``cell.json`` (CPU and wall
seconds, the command); finished cells are skipped, so rerunning the same command resumes. The report goes to
``--results`` (default ``benchmarks/results/real``):

- ``fold_scores.tsv``: task, method, seed, fold, n, auroc or mae and r2;
- ``task_scores.tsv``: per task, method and seed: mean and sd over folds, pooled, folds won against the task's
  best classical baseline at that seed (the baseline with the best fold mean), rank among the methods run;
- ``ranks.tsv``: per method and seed: mean rank over tasks, tasks where it beat the best classical baseline,
  CPU minutes in all; ``report.md``: the same as tables; ``run.json``: command, commit, machine.

Example (baselines and the sequence-groups recipe at three seeds, all tasks)::

    python benchmarks/real_suite.py --methods forest,clr-linear,boosted,sequence-groups --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from aam.baselines import TREE_BASELINES

REPO = Path(__file__).resolve().parent.parent
BASELINES = ("forest", "clr-linear", "boosted")
# with the product's baselines that also read the tree's clades (TREE_BASELINES: ``aam rf-baseline --baseline NAME
# --tree {tree}``; session 24): the five baselines the recipes for users with a tree are scored against
CLASSICAL = BASELINES + TREE_BASELINES
# AAM recipes: the flags after `aam cross-validate --table ... --folds ... --output-dir ...`
OLD = " --no-group-diversity"  # cells run before session 20 made diversity features a default (they ran without)
# a method's flags are one string, or one per kind of task ("auroc", "mae"; a kind left out: not run there)
METHODS: dict[str, str | dict[str, str]] = {
    # the product's defaults (since session 20 with the diversity features, --group-diversity)
    "sequence-groups": "--model-type sequence-groups --max-bp 100",
    "sequence-groups-boosted": "--model-type sequence-groups --max-bp 100 --group-readout boosted",
    # session 21 candidate: the boosted read-out fits the absolute error on regression (rule in
    # _design_plan/real_suite.md)
    "sequence-groups-boosted-l1": {"mae": "--model-type sequence-groups --max-bp 100 --group-readout boosted "
                                          "--group-boosted-loss absolute-error"},
    # the same before session 20 (no diversity features): the recipes of sessions 16-19
    "sequence-groups-nodiversity": "--model-type sequence-groups --max-bp 100" + OLD,
    "sequence-groups-boosted-nodiversity": "--model-type sequence-groups --max-bp 100 --group-readout boosted" + OLD,
    "sequence-groups-forest": "--model-type sequence-groups --max-bp 100 --forest-blend" + OLD,
    # session 18: the defaults chosen on synthetic cohorts (anchors 512, position profiles) against the
    # alternatives, for both read-outs (rule in _design_plan/real_suite.md)
    "sequence-groups-anchors0": "--model-type sequence-groups --max-bp 100 --group-anchors 0" + OLD,
    "sequence-groups-boosted-anchors0": "--model-type sequence-groups --max-bp 100 --group-readout boosted "
                                        "--group-anchors 0" + OLD,
    "sequence-groups-kmers": "--model-type sequence-groups --max-bp 100 --no-group-positions" + OLD,
    "sequence-groups-boosted-kmers": "--model-type sequence-groups --max-bp 100 --group-readout boosted "
                                     "--no-group-positions" + OLD,
    # session 18 candidate: up to 4096 anchor ASVs (every ASV of two or more groups, in practice) beside the
    # k-means groups: the boosted read-out sees per-ASV shares as well as group shares
    "sequence-groups-boosted-a4096": "--model-type sequence-groups --max-bp 100 --group-readout boosted "
                                     "--group-anchors 4096" + OLD,
    # session 19 candidate: a random forest (the forest baseline's settings) reads the group shares (rule in
    # _design_plan/real_suite.md)
    "sequence-groups-forest-readout": "--model-type sequence-groups --max-bp 100 --group-readout forest" + OLD,
    # session 20 candidate: the boosted read-out reads the groups' log shares uncentred (the shares themselves,
    # to trees), as the boosted baseline reads relative abundances (rule in _design_plan/real_suite.md)
    "sequence-groups-boosted-uncentred": "--model-type sequence-groups --max-bp 100 --group-readout boosted "
                                         "--no-group-centred" + OLD,
    # the default before session 15 (4 k-means++ starts per clustering; now 1): kept to compare
    "sequence-groups-4starts": "--model-type sequence-groups --max-bp 100 --group-kmeans-starts 4" + OLD,
    # session 23 candidate: the read-outs also read the log shares of the clades of the task's phylogeny
    # (--group-clades --tree; rule in _design_plan/real_suite.md). {tree}: real/tree.nwk, or oral.upgma.nwk
    "sequence-groups-clades": {"auroc": "--model-type sequence-groups --max-bp 100 --group-clades --tree {tree}"},
    "sequence-groups-boosted-clades": {"auroc": "--model-type sequence-groups --max-bp 100 --group-readout boosted "
                                                "--group-clades --tree {tree}"},
    "sequence-groups-boosted-l1-clades": {"mae": "--model-type sequence-groups --max-bp 100 --group-readout boosted "
                                                 "--group-boosted-loss absolute-error --group-clades --tree {tree}"},
    # the attention model from scratch, and from an encoder pretrained on the corpus and the suite's tables
    # (no labels; --encoder, built by the command in BENCHMARKS.md), fine-tuned or frozen (issue #27)
    "transformer": "--preset small-data --max-bp 100",
    "transformer-corpus": "--preset small-data --max-bp 100 --pretrained-encoder {encoder}",
    "transformer-corpus-frozen": "--preset small-data --max-bp 100 --pretrained-encoder {encoder} --freeze-base",
}
ENCODER = REPO / "runs" / "corpus_encoder" / "pretrained_encoder.pt"  # --encoder
# The README's recommended recipes as one command each, the way a user runs them: AAM and the default baselines
# in one `aam cross-validate` (per kind of task), scored by its ``blend`` column. Same folds and seeds as the
# cells the ``recommended`` row averages; the AAM members come out identical, the baselines are drawn afresh
# (they see the training samples in the order of the run's own folds.tsv). Its cost is the recipe's whole cost.
ONE_COMMAND: dict[str, dict[str, str]] = {
    # since session 22 the regression recipe is one model: the absolute-error read-out averaged with the boosted
    # baseline inside every fold (scored by the run's aam column, which is that average; rule in
    # _design_plan/real_suite.md)
    "recommended-command": {"auroc": METHODS["sequence-groups"] + " --variant '--group-readout boosted'",
                            "mae": METHODS["sequence-groups-boosted-l1"]["mae"]
                            + " --blend-baselines boosted --blend-weights equal"},
    # session 23: the classification recipe for users with a tree, as one command (both read-outs read the
    # clades: --variant inherits --group-clades and --tree); not run yet
    "recommended-command-clades": {"auroc": METHODS["sequence-groups-clades"]["auroc"]
                                   + " --variant '--group-readout boosted'"},
    # session 25: the recipes for users with a tree (``recommended-tree``) as one command each: the read-outs with
    # clades and the tree-aware baselines (the run's blend; regression: the model averaged with boosted-clades,
    # scored by the run's aam column), compared with the run's forest, clr-linear-clades and boosted-clades
    "recommended-command-tree": {
        "auroc": METHODS["sequence-groups-clades"]["auroc"] + " --variant '--group-readout boosted'"
        " --baselines forest," + ",".join(TREE_BASELINES),
        "mae": METHODS["sequence-groups-boosted-l1-clades"]["mae"] + " --blend-baselines boosted-clades"
        " --blend-weights equal --baselines forest," + ",".join(TREE_BASELINES)},
    # the regression recipe of sessions 16-21 as one command (the read-out and the 3 baselines: the run's blend)
    "recommended-command-before22": {"mae": METHODS["sequence-groups-boosted"]},
    "recommended-command-nodiversity": {"auroc": METHODS["sequence-groups-nodiversity"]
                                        + " --variant '--group-readout boosted'",
                                        "mae": METHODS["sequence-groups-boosted-nodiversity"]},
}

# Averages of finished cells at the same seed, equal weights: exactly the ``blend`` column of
# ``aam cross-validate <recipe>`` with the default ``--baselines`` (the mean of the out-of-fold predictions of
# AAM and each baseline, which are ``aam rf-baseline`` on the same folds and seed). The deployable model is
# ``aam train <recipe> --blend-baselines forest,clr-linear,boosted --blend-weights equal`` + ``aam predict
# --forest RUN/forest.joblib``. Costs add up.
OLD_SG, OLD_BOOSTED = "sequence-groups-nodiversity", "sequence-groups-boosted-nodiversity"
DERIVED: dict[str, tuple[str, ...]] = {
    # the current defaults' recipes
    "sequence-groups+baselines": ("sequence-groups",) + BASELINES,
    "sequence-groups+forest": ("sequence-groups", "forest"),
    "sequence-groups-boosted+baselines": ("sequence-groups-boosted",) + BASELINES,
    "sequence-groups+boosted+baselines": ("sequence-groups", "sequence-groups-boosted") + BASELINES,
    # the recipes of sessions 16-19 (no diversity features) and the candidates measured against them, whose
    # members all ran without diversity features
    "sequence-groups+boosted-nodiversity+baselines": (OLD_SG, OLD_BOOSTED) + BASELINES,
    "sequence-groups-boosted-nodiversity+baselines": (OLD_BOOSTED,) + BASELINES,
    "sequence-groups-4starts+baselines": ("sequence-groups-4starts",) + BASELINES,
    "sequence-groups-boosted-a4096+baselines": ("sequence-groups-boosted-a4096",) + BASELINES,
    "sequence-groups+boosted-a4096+baselines": (OLD_SG, "sequence-groups-boosted-a4096") + BASELINES,
    "sequence-groups+boosted-anchors0+baselines": ("sequence-groups-anchors0", "sequence-groups-boosted-anchors0")
                                                  + BASELINES,
    "sequence-groups-boosted-anchors0+baselines": ("sequence-groups-boosted-anchors0",) + BASELINES,
    "sequence-groups+boosted-kmers+baselines": ("sequence-groups-kmers", "sequence-groups-boosted-kmers") + BASELINES,
    "sequence-groups-boosted-kmers+baselines": ("sequence-groups-boosted-kmers",) + BASELINES,
    "sequence-groups+boosted+forest-readout+baselines": (OLD_SG, OLD_BOOSTED, "sequence-groups-forest-readout")
                                                        + BASELINES,
    "sequence-groups+forest-readout+baselines": (OLD_SG, "sequence-groups-forest-readout") + BASELINES,
    "sequence-groups-boosted+forest-readout+baselines": (OLD_BOOSTED, "sequence-groups-forest-readout") + BASELINES,
    "sequence-groups-forest-readout+baselines": ("sequence-groups-forest-readout",) + BASELINES,
    "sequence-groups+boosted-uncentred+baselines": (OLD_SG, "sequence-groups-boosted-uncentred") + BASELINES,
    "sequence-groups-boosted-uncentred+baselines": ("sequence-groups-boosted-uncentred",) + BASELINES,
    "sequence-groups-boosted-l1+baselines": ("sequence-groups-boosted-l1",) + BASELINES,
    # session 22 candidate: the two members that fit the absolute error (rule in _design_plan/real_suite.md)
    "sequence-groups-boosted-l1+boosted": ("sequence-groups-boosted-l1", "boosted"),
    # session 23 candidate: the recipes with their AAM members reading the tree's clades too
    "sequence-groups+boosted-clades+baselines": ("sequence-groups-clades", "sequence-groups-boosted-clades")
                                                + BASELINES,
    "sequence-groups-boosted-l1-clades+boosted": ("sequence-groups-boosted-l1-clades", "boosted"),
    "baselines-average": BASELINES,
    # session 24's tree-recipe-v2 (``recommended-tree``): the with-tree recipes' AAM members averaged with the
    # tree-aware baselines in place of the plain ones (rule in _design_plan/real_suite.md)
    "sequence-groups+boosted-clades+tree-baselines": ("sequence-groups-clades", "sequence-groups-boosted-clades",
                                                      "forest") + TREE_BASELINES,
    "sequence-groups-boosted-l1-clades+boosted-clades": ("sequence-groups-boosted-l1-clades", "boosted-clades"),
}
# The README's recommendation, one recipe per kind of task (chosen in session 16 by the mean rank against the
# baselines over the suite's tasks of that kind, at each of seeds 0-2; since session 20 its members read the
# diversity features): method ``recommended`` reports it.
RECOMMENDED: dict[str, str] = {"auroc": "sequence-groups+boosted+baselines",
                               "mae": "sequence-groups-boosted-l1+boosted"}  # since session 22 (was ...-boosted+baselines)
# The same per-kind recipes with one default of the sequence-groups family changed (session 18's rule): rows
# ``recommended-<variant>`` when their cells are finished. Candidates before session 20 were measured against
# ``recommended-nodiversity`` (the recipes of sessions 16-19).
RECOMMENDED_VARIANTS: dict[str, dict[str, str]] = {
    "recommended-nodiversity": {"auroc": "sequence-groups+boosted-nodiversity+baselines",
                                "mae": "sequence-groups-boosted-nodiversity+baselines"},
    "recommended-anchors0": {"auroc": "sequence-groups+boosted-anchors0+baselines",
                             "mae": "sequence-groups-boosted-anchors0+baselines"},
    "recommended-kmers": {"auroc": "sequence-groups+boosted-kmers+baselines",
                          "mae": "sequence-groups-boosted-kmers+baselines"},
    # session 19: (a) the forest read-out added to each recipe; (b) in place of the boosted read-out
    "recommended-forest-added": {"auroc": "sequence-groups+boosted+forest-readout+baselines",
                                 "mae": "sequence-groups-boosted+forest-readout+baselines"},
    "recommended-forest-swapped": {"auroc": "sequence-groups+forest-readout+baselines",
                                   "mae": "sequence-groups-forest-readout+baselines"},
    # session 21: the regression recipe with the boosted read-out fitting the absolute error
    "recommended-l1": {"mae": "sequence-groups-boosted-l1+baselines"},
    # the recipes of sessions 16-21 (the regression one averaged the default read-out with the 3 baselines)
    "recommended-before22": {"auroc": "sequence-groups+boosted+baselines", "mae": "sequence-groups-boosted+baselines"},
    # session 23: the recipes' AAM members also read the clades of the task's phylogeny (--group-clades)
    "recommended-clades": {"auroc": "sequence-groups+boosted-clades+baselines",
                           "mae": "sequence-groups-boosted-l1-clades+boosted"},
    # session 24 (tree-recipe-v2): the recipes for users with a tree since then, scored against all five baselines
    "recommended-tree": {"auroc": "sequence-groups+boosted-clades+tree-baselines",
                         "mae": "sequence-groups-boosted-l1-clades+boosted-clades"},
    # session 20: the boosted read-out on uncentred log shares in place of the default one
    "recommended-uncentred": {"auroc": "sequence-groups+boosted-uncentred+baselines",
                              "mae": "sequence-groups-boosted-uncentred+baselines"},
}


# ----------------------------------------------------------------------------- tasks
def tasks(data: Path) -> pd.DataFrame:
    """One row per task: name, kind, positive class, table, metadata, folds, target and group columns, and the
    phylogeny of its sequences."""
    listed = pd.read_csv(data / "real" / "tasks.tsv", sep="\t", dtype=str, keep_default_na=False)
    rows = [{"task": r.task, "classifier": r.kind == "classification", "positive": r.positive_class or None,
             "table": data / "real" / r.task / "table.biom", "metadata": data / "real" / r.task / "metadata.tsv",
             "folds": data / "real" / r.task / "folds.tsv", "target": "target", "group": r.group_column or None,
             "tree": data / "real" / "tree.nwk"}
            for r in listed.itertuples()]
    rows.append({"task": "oral_age", "classifier": False, "positive": None, "table": data / "oral_dev.biom",
                 "metadata": data / "oral_dev_metadata.tsv", "folds": None, "target": "age", "group": None,
                 "tree": data / "oral.upgma.nwk"})
    return pd.DataFrame(rows).set_index("task")


def oral_folds(data: Path, out: Path) -> Path:
    """KFold(5, shuffle=True, random_state=0) over the oral table's samples, written once."""
    from sklearn.model_selection import KFold

    from aam.data.biom_table import load_table

    path = out / "oral_age" / "folds.tsv"
    if not path.is_file():
        ids = [str(s) for s in load_table(str(data / "oral_dev.biom")).ids(axis="sample")]
        fold = np.zeros(len(ids), dtype=int)
        for k, (_, test) in enumerate(KFold(5, shuffle=True, random_state=0).split(ids)):
            fold[test] = k
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"sample_id": ids, "fold": fold}).to_csv(path, sep="\t", index=False)
    return path


# ----------------------------------------------------------------------------- running a cell
def command(task: pd.Series, method: str, seed: int, cell: Path) -> list[str]:
    group = task.group if isinstance(task.group, str) and task.group else None
    common = ["--table", str(task.table), "--metadata", str(task.metadata), "--metadata-column", task.target,
              "--folds", str(task.folds)] + (["--classifier"] if task.classifier else []) + (
              ["--group-column", group] if group else [])
    if method in CLASSICAL:
        tree = ["--tree", str(task.tree)] if method in TREE_BASELINES else []
        return ["rf-baseline", "--baseline", method, *common, *tree, "--random-seed", str(seed),
                "--output", str(cell / "predictions.tsv"), "--quiet"]
    flags = shlex.split(method_flags(method, task).format(encoder=ENCODER, tree=task.tree))
    if method in ONE_COMMAND:
        return ["cross-validate", *common, *flags, "--seed", str(seed), "--output-dir", str(cell / "cv"), "--quiet"]
    return ["cross-validate", *common, *flags, "--baselines", "none", "--seed", str(seed),
            "--output-dir", str(cell / "cv"), "--quiet"]


def method_flags(method: str, task: pd.Series) -> str | None:
    """The flags of an AAM method or one command on ``task``'s kind; None where it is not run on that kind."""
    flags = ONE_COMMAND[method] if method in ONE_COMMAND else METHODS[method]
    return flags if isinstance(flags, str) else flags.get("auroc" if task.classifier else "mae")


def run_cell(task: pd.Series, method: str, seed: int, cell: Path) -> None:
    """Run one method on one task at one seed (skipped when finished) and write ``oof.tsv`` and ``cell.json``."""
    if (cell / "oof.tsv").is_file():
        return
    cell.mkdir(parents=True, exist_ok=True)
    args = command(task, method, seed, cell)
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.time()
    with open(cell / "run.log", "a", encoding="utf-8") as log:
        done = subprocess.run([sys.executable, "-m", "aam", *args], stdout=log, stderr=subprocess.STDOUT, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{task.name} / {method} / seed {seed} failed (exit {done.returncode}); see {cell}/run.log")
    previous = json.loads((cell / "cell.json").read_text()) if (cell / "cell.json").is_file() else {}
    cpu = previous.get("cpu_s", 0.0) + (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    wall = previous.get("wall_s", 0.0) + time.time() - start
    oof = out_of_fold(task, method, cell)
    oof.to_csv(cell / "oof.tmp", sep="\t", index=False)
    (cell / "cell.json").write_text(json.dumps({"cpu_s": cpu, "wall_s": wall, "command": ["aam", *args]}, indent=1))
    os.replace(cell / "oof.tmp", cell / "oof.tsv")


def out_of_fold(task: pd.Series, method: str, cell: Path) -> pd.DataFrame:
    """sample_id, fold, actual, score (positive-class probability, or the prediction) of a finished cell."""
    if method in CLASSICAL:
        frame, prefix = pd.read_csv(cell / "predictions.tsv", sep="\t", dtype={"sample_id": str, "fold": str}), ""
    else:
        frame = pd.read_csv(cell / "cv" / "oof_predictions.tsv", sep="\t", dtype={"sample_id": str, "fold": str})
        prefix = f"{recipe_column(method, task)}_" if method in ONE_COMMAND else "aam_"
    return scored_column(task, frame, prefix)


def recipe_column(method: str, task: pd.Series) -> str:
    """The prediction column of a one-command cell that holds its recipe: ``aam`` where the AAM model is itself
    averaged with baselines (``--blend-baselines``), else ``blend`` (the run's average of AAM and its baselines)."""
    return "aam" if "--blend-baselines" in method_flags(method, task) else "blend"


def scored_column(task: pd.Series, frame: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """sample_id, fold, actual, score of one model's columns (``prefix``: "", "aam_", "blend_", "forest_", ...)
    in a prediction table: its positive-class probability, or its prediction."""
    column = f"{prefix}prob_{task.positive}" if task.classifier else f"{prefix}prediction"
    score = frame[column] if column in frame else 0.0  # a class never predicted has probability 0
    return pd.DataFrame({"sample_id": frame["sample_id"], "fold": frame["fold"].astype(str),
                         "actual": frame["actual"], "score": score})


# ----------------------------------------------------------------------------- scoring
def fold_scores(task: pd.Series, oof: pd.DataFrame) -> pd.DataFrame:
    from sklearn.metrics import mean_absolute_error, r2_score, roc_auc_score

    rows = []
    for fold, part in list(oof.groupby("fold", sort=True)) + [("pooled", oof)]:
        if task.classifier:
            truth = part["actual"].astype(str) == task.positive
            auroc = roc_auc_score(truth, part["score"]) if truth.nunique() == 2 else np.nan
            rows.append({"fold": fold, "n": len(part), "auroc": auroc})
        else:
            actual, predicted = part["actual"].astype(float), part["score"].astype(float)
            rows.append({"fold": fold, "n": len(part), "mae": mean_absolute_error(actual, predicted),
                         "r2": r2_score(actual, predicted)})
    return pd.DataFrame(rows)


def report(suite: pd.DataFrame, out: Path, methods: list[str], seeds: list[int], results: Path,
           argv: list[str], candidates: list[str] | None = None, previous: Path | None = None) -> None:
    """Collect every finished cell into the result tables (cells not run yet are left out, and said so); with
    ``previous``, an earlier results folder's rows of cells not on disk are kept."""
    folds, cost = [], []
    for name, task in suite.iterrows():
        for method in methods:
            for seed in seeds:
                parts = [out / name / m / f"s{seed}" for m in DERIVED.get(method, (method,))]
                if not all((cell / "oof.tsv").is_file() for cell in parts):
                    continue
                tables = [pd.read_csv(cell / "oof.tsv", sep="\t", dtype={"sample_id": str}).set_index("sample_id")
                          for cell in parts]
                oof = tables[0].assign(score=sum(t.loc[tables[0].index, "score"] for t in tables) / len(tables))
                scores = fold_scores(task, oof.reset_index())
                folds.append(scores.assign(task=name, method=method, seed=seed))
                infos = [json.loads((cell / "cell.json").read_text()) for cell in parts]
                cost.append({"task": name, "method": method, "seed": seed,
                             "cpu_min": sum(i["cpu_s"] for i in infos) / 60,
                             "wall_min": sum(i["wall_s"] for i in infos) / 60})
    folds = pd.concat(folds, ignore_index=True) if folds else pd.DataFrame(columns=["task", "method", "seed"])
    cost = pd.DataFrame(cost, columns=["task", "method", "seed", "cpu_min", "wall_min"])
    own = one_command_scores(suite, out, seeds)
    if previous is not None:
        folds, cost, own = with_previous(previous, folds, cost, own)
    if folds.empty:
        print("no finished cell yet")
        return
    per_task = summarise_tasks(suite, folds, cost)
    per_task = pd.concat([per_task, recommended(per_task)] +
                         ([leave_one_task_out(per_task, candidates)] if candidates else []), ignore_index=True)
    ranks = summarise_methods(per_task, cost)
    results.mkdir(parents=True, exist_ok=True)
    folds[["task", "method", "seed", "fold", "n"] + [c for c in ("auroc", "mae", "r2") if c in folds]].to_csv(
        results / "fold_scores.tsv", sep="\t", index=False, float_format="%.5g")
    per_task.to_csv(results / "task_scores.tsv", sep="\t", index=False, float_format="%.5g")
    ranks.to_csv(results / "ranks.tsv", sep="\t", index=False, float_format="%.4g")
    text = markdown(per_task, ranks)
    if len(own):
        own.to_csv(results / "one_command.tsv", sep="\t", index=False, float_format="%.5g")
        summary = own.groupby(["method", "seed"]).agg(tasks=("task", "size"), mean_rank=("rank", "mean"),
                                                       ahead=("ahead_of_best", "sum")).reset_index()
        text += ("\nOne command per task (`ONE_COMMAND`), its blend against the baselines of the same run "
                 "(mean rank among the four; tasks ahead of the best):\n\n| method | seed | tasks | mean rank | "
                 "tasks ahead |\n|---|---|---|---|---|\n")
        text += "".join(f"| {r.method} | {r.seed} | {r.tasks} | {r.mean_rank:.2f} | {r.ahead} |\n"
                        for r in summary.itertuples())
    (results / "report.md").write_text(text, encoding="utf-8")
    (results / "run.json").write_text(json.dumps(provenance(argv), indent=1), encoding="utf-8")
    print(text)


def with_previous(previous: Path, folds: pd.DataFrame, cost: pd.DataFrame,
                  own: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Fold scores, costs and one-command rows of an earlier results folder (cells run on another machine, not
    kept) added to the fresh ones, for every (task, method, seed) the fresh ones do not have."""
    key = ["task", "method", "seed"]

    def unseen(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
        fresh = set(map(tuple, new[key].itertuples(index=False))) if len(new) else set()
        return old[[k not in fresh for k in map(tuple, old[key].itertuples(index=False))]]

    old_folds = pd.read_csv(previous / "fold_scores.tsv", sep="\t", dtype={"fold": str})
    old_cost = pd.read_csv(previous / "task_scores.tsv", sep="\t")[key + ["cpu_min"]]
    old_cost = old_cost.merge(old_folds[key].drop_duplicates(), on=key)  # cells, not the derived rows
    folds = pd.concat([folds, unseen(old_folds, folds)], ignore_index=True)
    cost = pd.concat([cost, unseen(old_cost, cost)], ignore_index=True)
    if (previous / "one_command.tsv").is_file():
        own = pd.concat([own, unseen(pd.read_csv(previous / "one_command.tsv", sep="\t"), own)], ignore_index=True)
    return folds, cost, own


def summarise_tasks(suite: pd.DataFrame, folds: pd.DataFrame, cost: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (name, seed), part in folds.groupby(["task", "seed"], sort=False):
        classifier = bool(suite.loc[name, "classifier"])
        metric = "auroc" if classifier else "mae"
        sign = 1.0 if classifier else -1.0  # higher is better after the sign
        by_fold = part[part["fold"] != "pooled"].pivot(index="fold", columns="method", values=metric)
        means = by_fold.mean()
        baselines = [m for m in BASELINES if m in means.index]
        best = max(baselines, key=lambda m: sign * means[m]) if baselines else None
        # with the tree-aware baselines too (only where all five ran): the bar of the recipes for users with a tree
        best5 = max(CLASSICAL, key=lambda m: sign * means[m]) if set(CLASSICAL) <= set(means.index) else None
        ranks = (-sign * means).rank(method="average")
        for method in by_fold.columns:
            field = [m for m in dict.fromkeys([method, *baselines]) if m in means.index]
            versus = (-sign * means[field]).rank(method="average")[method]
            pooled = part[(part["fold"] == "pooled") & (part["method"] == method)].iloc[0]
            row = {"task": name, "seed": seed, "method": method, "metric": metric, "mean": means[method],
                   "sd": by_fold[method].std(ddof=1), "pooled": pooled[metric], "rank": ranks[method],
                   "rank_vs_baselines": versus,
                   "n_methods": len(means), "best_baseline": best}
            if not classifier:
                row["r2_pooled"] = pooled["r2"]
            if best is not None:
                row["folds_won_vs_best"] = int((sign * by_fold[method] > sign * by_fold[best]).sum())
                row["beats_best"] = bool(sign * means[method] > sign * means[best])
            if best5 is not None:
                field5 = list(dict.fromkeys([method, *CLASSICAL]))
                row["best_of_5"] = best5
                row["rank_vs_5"] = (-sign * means[field5]).rank(method="average")[method]
                row["beats_best_of_5"] = bool(sign * means[method] > sign * means[best5])
            spent = cost[(cost["task"] == name) & (cost["seed"] == seed) & (cost["method"] == method)]
            row["cpu_min"] = float(spent["cpu_min"].sum())
            rows.append(row)
    return pd.DataFrame(rows)


def recommended(per_task: pd.DataFrame) -> pd.DataFrame:
    """Rows of method ``recommended`` (and of each ``RECOMMENDED_VARIANTS`` name): on each task, the row of the
    recipe for its metric."""
    parts = []
    for name, recipes in {"recommended": RECOMMENDED, **RECOMMENDED_VARIANTS}.items():
        picks = per_task["method"] == per_task["metric"].map(recipes)
        parts.append(per_task[picks].assign(chosen=per_task.loc[picks, "method"], method=name))
    return pd.concat(parts, ignore_index=True)


def leave_one_task_out(per_task: pd.DataFrame, candidates: list[str]) -> pd.DataFrame:
    """Rows of method ``chosen``: on each task, the candidate with the best mean rank against the baselines on
    the *other* tasks of the same kind (metric) at the same seed (ties: the first listed), so no task's score
    chose the recipe it reports."""
    rows = []
    for _, part in per_task.groupby("seed"):
        for name in part["task"].unique():
            metric = part.loc[part["task"] == name, "metric"].iloc[0]
            others = part[(part["task"] != name) & (part["metric"] == metric) & part["method"].isin(candidates)]
            means = others.groupby("method")["rank_vs_baselines"].mean()
            ranked = [c for c in candidates if c in means.index]
            if not ranked:
                continue
            pick = min(ranked, key=lambda c: (means[c], ranked.index(c)))
            row = part[(part["task"] == name) & (part["method"] == pick)]
            if len(row):
                rows.append(row.iloc[0].to_dict() | {"method": "chosen", "chosen": pick})
    return pd.DataFrame(rows)


def one_command_scores(suite: pd.DataFrame, out: Path, seeds: list[int]) -> pd.DataFrame:
    """Per task and seed of every finished ``ONE_COMMAND`` cell: its ``blend`` against the baselines of the
    same `aam cross-validate` run (the comparison its user reads: same folds, the baselines' own random draws),
    mean fold score of each, the best baseline, whether the blend is ahead, and its rank among the four."""
    rows = []
    for method in ONE_COMMAND:
        for name, task in suite.iterrows():
            for seed in seeds:
                cell = out / name / method / f"s{seed}"
                if not (cell / "oof.tsv").is_file():
                    continue
                frame = pd.read_csv(cell / "cv" / "oof_predictions.tsv", sep="\t", dtype={"sample_id": str,
                                                                                          "fold": str})
                metric = "auroc" if task.classifier else "mae"
                sign = 1.0 if task.classifier else -1.0
                means = {}
                ran = tuple(m for m in CLASSICAL if any(c.startswith(f"{m}_p") for c in frame.columns))
                for part in ("blend",) + ran:  # "blend": the recipe's column, whichever it is
                    column = recipe_column(method, task) if part == "blend" else part
                    scores = fold_scores(task, scored_column(task, frame, f"{column}_"))
                    means[part] = float(scores.loc[scores["fold"] != "pooled", metric].mean())
                best = max(ran, key=lambda m: sign * means[m])
                rank = (-sign * pd.Series(means)).rank(method="average")["blend"]
                rows.append({"method": method, "task": name, "seed": seed, "metric": metric,
                             **{f"{k}_mean": v for k, v in means.items()}, "best_baseline": best,
                             "ahead_of_best": bool(sign * (means["blend"] - means[best]) > 0), "rank": rank})
    return pd.DataFrame(rows)


def summarise_methods(per_task: pd.DataFrame, cost: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (method, seed), part in per_task.groupby(["method", "seed"], sort=False):
        rows.append({"method": method, "seed": seed, "tasks": len(part), "mean_rank": part["rank"].mean(),
                     "mean_rank_vs_baselines": part["rank_vs_baselines"].mean(),
                     "tasks_beating_best_baseline": int(part.get("beats_best", pd.Series(dtype=bool)).sum()),
                     # against the best of the five baselines (the three and the two tree-aware ones), on the tasks
                     # where all five ran
                     "tasks_with_5": int(part.get("best_of_5", pd.Series(dtype=object)).notna().sum()),
                     "mean_rank_vs_5": part.get("rank_vs_5", pd.Series(dtype=float)).mean(),
                     "tasks_beating_best_of_5": int(part.get("beats_best_of_5", pd.Series(dtype=object))
                                                    .fillna(False).astype(bool).sum()),
                     "cpu_min": float(part["cpu_min"].sum())})
    return pd.DataFrame(rows).sort_values(["seed", "mean_rank"])


def markdown(per_task: pd.DataFrame, ranks: pd.DataFrame) -> str:
    """Per task and method: mean +/- sd over folds (mean over seeds), folds won against the best baseline."""
    lines = ["| task | metric | " + " | ".join(sorted(per_task["method"].unique())) + " |",
             "|---|---|" + "---|" * per_task["method"].nunique()]
    for name, part in per_task.groupby("task", sort=False):
        cells = []
        for method in sorted(per_task["method"].unique()):
            mine = part[part["method"] == method]
            if mine.empty:
                cells.append("")
                continue
            won = (f" ({mine['folds_won_vs_best'].sum()}/{5 * len(mine)})"
                   if method not in CLASSICAL and "folds_won_vs_best" in mine else "")
            if method == "chosen" or method.startswith("recommended") and method not in ONE_COMMAND:
                won += " " + "/".join(sorted(set(mine["chosen"])))
            cells.append(f"{mine['mean'].mean():.3f} ± {mine['sd'].mean():.3f}{won}")
        lines.append(f"| {name} | {part['metric'].iloc[0]} | " + " | ".join(cells) + " |")
    lines += ["", "| method | seed | tasks | mean rank (all methods) | mean rank (with the 3 baselines) | "
              "tasks ahead of the best baseline | mean rank (with the 5 baselines) | tasks ahead of the best of 5 "
              "(of tasks with all 5) | CPU min |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r.method} | {r.seed} | {r.tasks} | {r.mean_rank:.2f} | {r.mean_rank_vs_baselines:.2f} | "
              f"{r.tasks_beating_best_baseline} | {r.mean_rank_vs_5:.2f} | {r.tasks_beating_best_of_5} "
              f"({r.tasks_with_5}) | {r.cpu_min:.1f} |" for r in ranks.itertuples()]
    return "\n".join(lines) + "\n"


def provenance(argv: list[str]) -> dict:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    return {"command": "python benchmarks/real_suite.py " + " ".join(shlex.quote(a) for a in argv),
            "commit": commit, "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
            "python": platform.python_version(), "written": time.strftime("%Y-%m-%d %H:%M:%S")}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data",
                        help="the shared data folder (holds real/ and oral_dev.biom)")
    parser.add_argument("--tasks", default="all", help="comma list of task names, or all")
    parser.add_argument("--methods", default=",".join(BASELINES + ("sequence-groups",)),
                        help=f"comma list of {', '.join(CLASSICAL + tuple(METHODS) + tuple(ONE_COMMAND) + tuple(DERIVED))}, or all "
                             "(derived methods average finished cells and run nothing)")
    parser.add_argument("--seeds", default="0", help="comma list of seeds")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "real_suite", help="where cells are run")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "real")
    parser.add_argument("--report-only", action="store_true", help="collect finished cells, run nothing")
    parser.add_argument("--candidates", default="",
                        help="comma list of AAM methods to choose among: adds method 'chosen', on each task the "
                             "candidate with the best mean rank against the baselines on the other tasks")
    parser.add_argument("--previous", type=Path, default=None,
                        help="an earlier results folder (e.g. benchmarks/results/real): its rows of cells not on "
                             "disk here are kept, those of cells run again are replaced")
    parser.add_argument("--encoder", type=Path, default=ENCODER,
                        help="the pretrained encoder of the transformer-corpus methods")
    args = parser.parse_args(argv)
    globals()["ENCODER"] = args.encoder.resolve()
    suite = tasks(args.data)
    chosen = list(suite.index) if args.tasks == "all" else [t.strip() for t in args.tasks.split(",")]
    known = CLASSICAL + tuple(METHODS) + tuple(ONE_COMMAND) + tuple(DERIVED)
    methods = list(known) if args.methods == "all" else [m.strip() for m in args.methods.split(",")]
    unknown = [t for t in chosen if t not in suite.index] + [m for m in methods if m not in known]
    if unknown:
        parser.error(f"unknown task or method {unknown[0]!r}")
    seeds = [int(s) for s in args.seeds.split(",")]
    suite = suite.loc[chosen]
    if "oral_age" in chosen:
        suite.loc["oral_age", "folds"] = oral_folds(args.data, args.out)
    if not args.report_only:
        for seed in seeds:
            for name, task in suite.iterrows():
                for method in [m for m in methods if m not in DERIVED
                               and (m in CLASSICAL or method_flags(m, task) is not None)]:
                    cell = args.out / name / method / f"s{seed}"
                    print(f"{name} / {method} / seed {seed}", flush=True)
                    run_cell(task, method, seed, cell)
    candidates = [c.strip() for c in args.candidates.split(",") if c.strip()]
    # with --previous, every task of the data is reported (the earlier rows cover tasks not run now)
    report(tasks(args.data) if args.previous else suite, args.out, methods, seeds, args.results, argv, candidates,
           args.previous)


if __name__ == "__main__":
    main()
