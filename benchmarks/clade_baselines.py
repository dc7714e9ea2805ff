"""Clade-aware classical baselines on the real-data suite: a fairness check of the recipe that reads the tree.

``aam cross-validate --group-clades --tree TREE`` gives the sequence-groups read-outs one log-share feature per
clade of the phylogeny; the product's baselines read ASV abundances only. This script gives two classical
models the same kind of features, with the baselines' own settings and inner searches, on the suite's fixed
folds, seeds and groups (rule: ``_design_plan/real_suite.md``, session 24):

- ``boosted-clades``: the ``boosted`` baseline's trees on relative abundances plus the clades' log shares;
- ``clr-linear-clades``: the ``clr-linear`` baseline (inner-CV penalty and scaling) on CLR abundances plus the
  clades' log shares.

Clades are chosen per outer fold as ``--group-clades`` chooses them (:func:`aam.data.clades.select_clades`,
prevalence over the fold's training samples) but over every ASV of the table, so a test ASV counts in each
clade it descends from (the baseline reads the whole tree). Each cell's out-of-fold predictions
go to ``--out`` (resumable); the fold scores, and the with-tree recipes against the best of the five baselines
(the three of ``benchmarks/results/real`` and these two), go to ``--results``::

    python benchmarks/clade_baselines.py --seeds 0,1,2 --results benchmarks/results/clade_baselines
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import real_suite  # noqa: E402  (the suite's tasks, folds and scoring)

METHODS = ("boosted-clades", "clr-linear-clades")
BASELINES = real_suite.BASELINES + METHODS
# the recommended recipes for a user with a tree (session 23): classification with clades, regression pair
WITH_TREE = {"auroc": "sequence-groups+boosted-clades+baselines", "mae": "sequence-groups-boosted-l1+boosted"}
# the follow-up candidate (rule of session 24): the with-tree recipes with their baselines replaced by the
# tree-aware ones; equal averages of finished cells (suite cells under --suite-out, these under --out)
TREE_RECIPE_V2 = {"auroc": ("sequence-groups-clades", "sequence-groups-boosted-clades", "forest", "clr-linear-clades",
                            "boosted-clades"),
                  "mae": ("sequence-groups-boosted-l1-clades", "boosted-clades")}


def clade_log_shares(counts: sparse.csr_matrix, incidence: sparse.csr_matrix, train: np.ndarray) -> np.ndarray:
    """[N, F] counts and the tree's [F, M] incidence -> [N, C] log shares of the clades that ``select_clades``
    keeps on the training rows (the pseudo-share of the sequence-groups model)."""
    from aam.data.clades import select_clades
    from aam.models.config import SequenceGroupsConfig

    clades = select_clades(incidence, counts[train])  # [F, C]
    totals = np.asarray(counts.sum(axis=1)).ravel()
    shares = sparse.diags(1.0 / np.maximum(totals, 1.0)) @ counts
    return np.log(np.asarray((shares @ clades).todense()) + SequenceGroupsConfig.pseudo_share)


def _split_clr(features: np.ndarray, n_asvs: int) -> np.ndarray:
    from aam.baselines.estimators import centred_log_ratio

    return np.hstack([centred_log_ratio(features[:, :n_asvs]), features[:, n_asvs:]])


def _split_relative(features: np.ndarray, n_asvs: int) -> np.ndarray:
    from aam.baselines.estimators import dense_relative_abundance

    return np.hstack([dense_relative_abundance(features[:, :n_asvs]), features[:, n_asvs:]])


def baseline(method: str, n_asvs: int):
    """The ``ClassicalBaseline`` of ``method``: the product's estimator with its first step reading the counts'
    ``n_asvs`` columns as the product does and passing the clade columns through."""
    from dataclasses import replace

    from sklearn.preprocessing import FunctionTransformer

    from aam.baselines.estimators import BOOSTED, CLR_LINEAR

    if method == "boosted-clades":
        def build(**kwargs):
            pipeline = BOOSTED.build(**kwargs)
            return pipeline.set_params(functiontransformer=FunctionTransformer(_split_relative,
                                                                                kw_args={"n_asvs": n_asvs}))
        return replace(BOOSTED, name=method, build=build)

    def build(**kwargs):
        search = CLR_LINEAR.build(**kwargs)
        return search.set_params(estimator__clr=FunctionTransformer(_split_clr, kw_args={"n_asvs": n_asvs}))
    return replace(CLR_LINEAR, name=method, build=build)


def task_data(task: pd.Series, folds_path: Path):
    """Counts [N, F] (table order), ASV ids, targets, folds and groups of the task's samples with a fold."""
    from aam.data.biom_table import load_table, table_to_csr

    table = table_to_csr(load_table(str(task.table)))
    metadata = pd.read_csv(task.metadata, sep="\t", dtype=str, index_col=0)
    folds = pd.read_csv(folds_path, sep="\t", dtype=str).set_index("sample_id")["fold"]
    keep = [i for i, s in enumerate(table.sample_ids) if s in folds.index and s in metadata.index
            and isinstance(metadata.loc[s, task.target], str)]
    ids = [table.sample_ids[i] for i in keep]
    group = task.group if isinstance(task.group, str) and task.group else None
    return (table.counts[keep].astype(np.float64).tocsr(), table.feature_ids, ids,
            metadata.loc[ids, task.target].to_numpy(), folds.loc[ids].to_numpy(),
            None if group is None else metadata.loc[ids, group].to_numpy())


def run_task(task: pd.Series, folds_path: Path, seeds: list[int], out: Path) -> None:
    """Every method and seed of one task not yet on disk: ``out/TASK/METHOD/sSEED/oof.tsv`` and ``cell.json``."""
    from aam.unifrac.tree import TreeIncidence, load_tree

    todo = [(m, s) for m in METHODS for s in seeds if not (out / task.name / m / f"s{s}" / "oof.tsv").is_file()]
    if not todo:
        return
    counts, asv_ids, ids, actual, folds, groups = task_data(task, folds_path)
    incidence = TreeIncidence.build(load_tree(task.tree), asv_ids, source=task.tree).incidence
    targets = actual if task.classifier else actual.astype(float)
    for method, seed in todo:
        start, cpu = time.time(), time.process_time()
        parts = []
        for fold in sorted(set(folds)):
            train, test = folds != fold, folds == fold
            features = np.hstack([counts.toarray(), clade_log_shares(counts, incidence, train)])
            model = baseline(method, counts.shape[1]).fit(
                features[train], targets[train], classifier=bool(task.classifier), seed=seed,
                groups=None if groups is None else groups[train], n_jobs=1)
            if task.classifier:
                classes = list(model.classes_)
                probability = model.predict_proba(features[test])
                score = probability[:, classes.index(task.positive)] if task.positive in classes else 0.0
            else:
                score = model.predict(features[test])
            parts.append(pd.DataFrame({"sample_id": np.asarray(ids)[test], "fold": fold, "actual": actual[test],
                                       "score": score}))
        cell = out / task.name / method / f"s{seed}"
        cell.mkdir(parents=True, exist_ok=True)
        pd.concat(parts).to_csv(cell / "oof.tmp", sep="\t", index=False)
        (cell / "cell.json").write_text(json.dumps({"cpu_s": time.process_time() - cpu,
                                                    "wall_s": time.time() - start}, indent=1))
        os.replace(cell / "oof.tmp", cell / "oof.tsv")
        print(f"{task.name} / {method} / seed {seed}: {time.time() - start:.0f} s", flush=True)


def fold_rows(suite: pd.DataFrame, out: Path, seeds: list[int]) -> pd.DataFrame:
    rows = []
    for name, task in suite.iterrows():
        for method in METHODS:
            for seed in seeds:
                cell = out / name / method / f"s{seed}"
                if (cell / "oof.tsv").is_file():
                    oof = pd.read_csv(cell / "oof.tsv", sep="\t", dtype={"sample_id": str, "fold": str})
                    scores = real_suite.fold_scores(task, oof)
                    cost = json.loads((cell / "cell.json").read_text())["cpu_s"] / 60
                    rows.append(scores.assign(task=name, method=method, seed=seed, cpu_min=cost))
    return pd.concat(rows, ignore_index=True)


def derived_rows(suite: pd.DataFrame, out: Path, suite_out: Path, seeds: list[int]) -> pd.DataFrame:
    """Fold scores of ``tree-recipe-v2`` where every member's cell is on disk: the equal average of the members'
    out-of-fold scores, sample by sample."""
    rows = []
    for name, task in suite.iterrows():
        members = TREE_RECIPE_V2["auroc" if task.classifier else "mae"]
        for seed in seeds:
            cells = [(out if m in METHODS else suite_out) / name / m / f"s{seed}" / "oof.tsv" for m in members]
            if not all(c.is_file() for c in cells):
                continue
            frames = [pd.read_csv(c, sep="\t", dtype={"sample_id": str, "fold": str}).set_index("sample_id")
                      for c in cells]
            first = frames[0]
            average = sum(f["score"].loc[first.index] for f in frames) / len(frames)
            oof = pd.DataFrame({"sample_id": first.index, "fold": first["fold"], "actual": first["actual"],
                                "score": average}).reset_index(drop=True)
            rows.append(real_suite.fold_scores(task, oof).assign(task=name, method="tree-recipe-v2", seed=seed))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def compare(suite: pd.DataFrame, folds: pd.DataFrame, previous: pd.DataFrame) -> pd.DataFrame:
    """Per task and seed: each baseline's mean fold score and the with-tree recipe's, its rank among the six,
    and whether it beats the best of the three and of the five baselines."""
    every = pd.concat([previous, folds], ignore_index=True)
    every = every[every["fold"].astype(str) != "pooled"]
    rows = []
    for (name, seed), part in every.groupby(["task", "seed"], sort=False):
        metric = "auroc" if suite.loc[name, "classifier"] else "mae"
        sign = 1.0 if metric == "auroc" else -1.0
        recipe = WITH_TREE[metric]
        means = part.groupby("method")[metric].mean()
        if recipe not in means or not all(m in means for m in BASELINES):
            continue
        field = means[[recipe, *BASELINES]]
        best3 = max(real_suite.BASELINES, key=lambda m: sign * means[m])
        best5 = max(BASELINES, key=lambda m: sign * means[m])
        v2 = {}
        if "tree-recipe-v2" in means:
            v2_field = means[["tree-recipe-v2", *BASELINES]]
            v2 = {"v2": round(means["tree-recipe-v2"], 4),
                  "v2_ahead_of_5": bool(sign * means["tree-recipe-v2"] > sign * means[best5]),
                  "v2_rank_of_6": float((-sign * v2_field).rank(method="average")["tree-recipe-v2"])}
        rows.append({"task": name, "seed": seed, "metric": metric, **{m: round(means[m], 4) for m in BASELINES},
                     "recipe": round(means[recipe], 4), **v2, "best_of_3": best3, "best_of_5": best5,
                     "ahead_of_3": bool(sign * means[recipe] > sign * means[best3]),
                     "ahead_of_5": bool(sign * means[recipe] > sign * means[best5]),
                     "rank_of_6": float((-sign * field).rank(method="average")[recipe]),
                     "ranks": {m: float(r) for m, r in (-sign * field).rank(method="average").items()}})
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    if "v2" not in table:
        table = table.assign(v2=np.nan, v2_ahead_of_5=False, v2_rank_of_6=np.nan)
    lines = ["| task | seed | metric | " + " | ".join(BASELINES) + " | with-tree recipe | tree-recipe-v2 | best of 5 | "
             "recipe ahead of 3 | recipe ahead of 5 | v2 ahead of 5 |", "|" + "---|" * (len(BASELINES) + 9)]
    for _, r in table.iterrows():
        lines.append(f"| {r.task} | {r.seed} | {r.metric} | " + " | ".join(f"{r[m]}" for m in BASELINES)
                     + f" | {r.recipe} | {r.v2} | {r.best_of_5} | {r.ahead_of_3} | {r.ahead_of_5} | {r.v2_ahead_of_5} |")
    lines += ["", "| seed | tasks | recipe ahead of best of 3 | recipe ahead of best of 5 | recipe mean rank of 6 | "
              "v2 ahead of best of 5 | v2 mean rank of 6 | " + " | ".join(f"{m} mean rank of 6" for m in BASELINES)
              + " |", "|" + "---|" * (len(BASELINES) + 7)]
    for seed, part in table.groupby("seed"):
        ranks = pd.DataFrame(list(part["ranks"])).mean()
        lines.append(f"| {seed} | {len(part)} | {int(part['ahead_of_3'].sum())} | {int(part['ahead_of_5'].sum())} | "
                     f"{part['rank_of_6'].mean():.2f} | {int(part['v2_ahead_of_5'].sum())} | "
                     f"{part['v2_rank_of_6'].mean():.2f} | " + " | ".join(f"{ranks[m]:.2f}" for m in BASELINES) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--tasks", default="all")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "clade_baselines")
    parser.add_argument("--previous", type=Path, default=REPO / "benchmarks" / "results" / "real",
                        help="the suite's results (fold_scores.tsv of the three baselines and the recipes)")
    parser.add_argument("--suite-out", type=Path, default=REPO / "runs" / "real_suite",
                        help="the suite's cells (out-of-fold predictions of the members of tree-recipe-v2)")
    parser.add_argument("--results", type=Path, default=None)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    suite = real_suite.tasks(args.data)
    if args.tasks != "all":
        suite = suite.loc[args.tasks.split(",")]
    if not args.report_only:
        for seed in seeds:  # every task at the first seed first
            for name, task in suite.iterrows():
                folds = (real_suite.oral_folds(args.data, REPO / "runs" / "real_suite") if name == "oral_age"
                         else task.folds)
                run_task(task, Path(folds), [seed], args.out)
    folds = pd.concat([fold_rows(suite, args.out, seeds), derived_rows(suite, args.out, args.suite_out, seeds)],
                      ignore_index=True)
    previous = pd.read_csv(args.previous / "fold_scores.tsv", sep="\t", dtype={"fold": str})
    table = compare(suite, folds, previous[previous["task"].isin(suite.index) & previous["seed"].isin(seeds)])
    text = markdown(table)
    print(text)
    if args.results:
        args.results.mkdir(parents=True, exist_ok=True)
        folds.to_csv(args.results / "fold_scores.tsv", sep="\t", index=False)
        table.drop(columns="ranks").to_csv(args.results / "comparison.tsv", sep="\t", index=False)
        (args.results / "report.md").write_text(text)
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        (args.results / "run.json").write_text(json.dumps({
            "command": "python benchmarks/clade_baselines.py " + " ".join(argv or sys.argv[1:]), "commit": commit,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
            "written": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1))


if __name__ == "__main__":
    main()
