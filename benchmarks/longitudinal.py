"""Synthetic longitudinal classification: few people, many samples each, disease carried by a few clades.

Reproduces the failure of a gut cohort (24 people x ~20 time points, ~150 ASVs per sample, label constant per
person): person-specific ASVs dominate each sample, the disease signal sits in two minor clades, partly in
ASVs no other person carries. Every run is ``aam cross-validate --classifier --group-column subject`` (5 folds
grouped by person, stratified by class; the forest on the same folds), so test people are never seen in
training or early stopping.

Cohorts (``aam.data.synthetic_longitudinal``, generated into ``--out``): choose recipes on the development
cohort (``--cohort dev``, data seed 0; since session 12 also ``dev11`` to ``dev14``, data seeds 11-14) and
report them on cohorts never used for choosing (``--cohort test``, data seed 1; ``--cohort test2``, data seed 2;
``--cohort test3``, data seed 3, first run in session 12; ``--cohort test4``, data seed 4, first run in session 13
after the position profiles were chosen). Each ``--seeds`` value is one replicate of the whole protocol
(fold assignment, forest and AAM seeds). Finished runs are reused. Example::

    .venv/bin/python benchmarks/longitudinal.py --name preset --recipe "--preset small-data" --cohort dev
    .venv/bin/python benchmarks/longitudinal.py --name all_asvs \
        --recipe "--preset small-data --token-limit 256" --cohort test --seeds 1,2,3
    .venv/bin/python benchmarks/longitudinal.py --summary-only
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from aam.baselines import FOREST_TREES

REPO = Path(__file__).resolve().parent.parent
COHORTS = {"dev": 0, "test": 1, "test2": 2, "test3": 3, "test4": 4, "dev11": 11, "dev12": 12, "dev13": 13, "dev14": 14}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "longitudinal"))
    p.add_argument("--cohort", default="dev", choices=sorted(COHORTS), help="which synthetic cohort (data seed)")
    p.add_argument("--name", default="preset", help="name of the recipe's runs")
    p.add_argument("--recipe", default="--preset small-data",
                   help="aam train flags; {tree} stands for the cohort's tree (e.g. '--tree {tree}')")
    p.add_argument("--seeds", default="1", help="comma list of replicate seeds")
    p.add_argument("--n-folds", type=int, default=5)
    p.add_argument("--rf-n-estimators", type=int, default=FOREST_TREES)
    p.add_argument("--summary-only", action="store_true")
    return p.parse_args(argv)


def cohort_data(out: Path, cohort: str) -> dict[str, Path]:
    from aam.data.synthetic_longitudinal import write_longitudinal_dataset

    folder = out / f"cohort_{cohort}"
    paths = {role: folder / "data" / name for role, name in
             (("table", "table.biom"), ("tree", "tree.nwk"), ("metadata", "metadata.tsv"))}
    if not all(p.is_file() for p in paths.values()):
        paths = write_longitudinal_dataset(folder, seed=COHORTS[cohort])
    return paths


def run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    data = cohort_data(out, args.cohort)
    exe = Path(sys.executable).parent / "aam"
    for seed in [int(s) for s in args.seeds.split(",") if s]:
        run_dir = out / f"cohort_{args.cohort}" / args.name / f"seed{seed}"
        if (run_dir / "summary.json").is_file():
            print(f"[skip] {args.cohort} {args.name} seed {seed}", flush=True)
            continue
        cmd = [str(exe), "cross-validate", "--table", str(data["table"]), "--metadata", str(data["metadata"]),
               "--metadata-column", "disease", "--classifier", "--group-column", "subject", "--n-folds",
               str(args.n_folds), "--max-bp", "100", "--rf-n-estimators", str(args.rf_n_estimators), "--seed",
               str(seed), "--output-dir", str(run_dir), "--quiet",
               *shlex.split(args.recipe.replace("{tree}", str(data["tree"])))]
        print(f"[run ] {args.cohort} {args.name} seed {seed} {time.strftime('%H:%M:%S')}\n  $ {shlex.join(cmd)}",
              flush=True)
        start = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - start
        (run_dir / "wall_seconds.json").write_text(json.dumps({"wall_s": wall, "recipe": args.recipe}))
        print(f"[done] {args.cohort} {args.name} seed {seed} in {wall / 60:.1f} min", flush=True)


def summarise(out: Path) -> str:
    """One row per (cohort, recipe, seed): mean fold AUROC of AAM and forest, pooled AUROC, fold wins."""
    rows = []
    for path in sorted(out.glob("cohort_*/*/seed*/summary.json")):
        summary = json.loads(path.read_text())
        wall = path.parent / "wall_seconds.json"
        meta = json.loads(wall.read_text()) if wall.is_file() else {}
        rows.append({
            "cohort": path.parts[-4].removeprefix("cohort_"), "recipe": path.parts[-3], "seed": path.parts[-2][4:],
            "aam_auroc": summary["aam"]["fold_mean"]["auroc"], "aam_sd": summary["aam"]["fold_sd"]["auroc"],
            "forest_auroc": summary["forest"]["fold_mean"]["auroc"],
            "forest_sd": summary["forest"]["fold_sd"]["auroc"],
            "aam_pooled": summary["aam"]["pooled"]["auroc"], "forest_pooled": summary["forest"]["pooled"]["auroc"],
            "blend_auroc": summary.get("blend", {}).get("fold_mean", {}).get("auroc", float("nan")),
            "wins": f"{summary['aam_fold_wins']}/{summary['n_folds']}",
            "minutes": round(meta.get("wall_s", float("nan")) / 60, 1), "flags": meta.get("recipe", ""),
        })
    if not rows:
        return "no results yet\n"
    frame = pd.DataFrame(rows)
    lines = ["| cohort | recipe | seed | AAM AUROC (folds) | forest AUROC (folds) | AAM pooled | forest pooled | "
             "AAM+forest (folds) | AAM wins | minutes | flags |", "| --- " * 11 + "|"]
    for r in frame.itertuples():
        lines.append(f"| {r.cohort} | {r.recipe} | {r.seed} | {r.aam_auroc:.3f} +/- {r.aam_sd:.3f} | "
                     f"{r.forest_auroc:.3f} +/- {r.forest_sd:.3f} | {r.aam_pooled:.3f} | {r.forest_pooled:.3f} | "
                     f"{r.blend_auroc:.3f} | {r.wins} | {r.minutes} | `{r.flags}` |")
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    frame.to_csv(out / "summary.tsv", sep="\t", index=False)
    return text


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.summary_only:
        run(args)
    print(summarise(Path(args.out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
