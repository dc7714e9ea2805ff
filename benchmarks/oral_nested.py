"""Oral age, nested: the recipe is chosen inside each outer fold, on its training samples only.

Issue #14 asks for a recommendation that "cannot flatter it": chosen on inner splits of the training folds and
reported on outer folds it never saw. For each outer fold of ``benchmarks/oral_age.py`` (same folds files, same
forest predictions) this script

1. sets aside an inner validation split of the fold's *training* samples (20%; whole studies under
   leave-one-study-out, so the choice is made on a study the candidates never trained on, as the outer fold is);
2. trains the two halves of the README's pair on the inner training samples (``R`` = ``--preset small-data``'s
   flags, ``k6`` = the same with ``--kmer-size 6``) with ``aam cross-validate`` and fits the forest there too;
3. scores the candidate recipes on the inner validation split: forest, R, k6, the pair (R and k6 averaged,
   as ``aam predict --model R --model k6`` does) and each of the three averaged with the forest at weight 0.5
   (``aam predict --forest``); the lowest inner MAE is the fold's choice;
4. trains R and k6 on all of the fold's training samples and reports every candidate on the outer fold, and the
   one chosen in step 3 as "nested".

Every training is one ``aam cross-validate`` call (resumable: a finished call is skipped on a rerun). Two run at
a time (``--jobs``), each on one torch thread. Outputs go to ``--out`` (summary.md, summary.json, choices.tsv).

    .venv/bin/python benchmarks/oral_nested.py --protocols random --seed 42
    .venv/bin/python benchmarks/oral_nested.py --protocols loso --seed 42
    .venv/bin/python benchmarks/oral_nested.py --combine OUT_S42,OUT_S43,OUT_S44   # the seeds side by side
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO / "benchmarks"))

from oral_age import RECIPES  # noqa: E402

RECIPE = RECIPES["cpu-l1-ema"]  # = `aam train --preset small-data --max-bp 100`
HALVES = {"R": "", "k6": "--kmer-size 6"}
CANDIDATES = ("forest", "R", "k6", "pair", "R+forest", "k6+forest", "pair+forest")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--table", default=str(DATA / "oral_dev.biom"))
    p.add_argument("--metadata", default=str(DATA / "oral_dev_metadata.tsv"))
    p.add_argument("--folds-dir", default=str(REPO / "benchmarks" / "results" / "oral_age"),
                   help="benchmarks/oral_age.py's --out: folds_<protocol>.tsv and each fold's rf_predictions.tsv")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "oral_nested"))
    p.add_argument("--protocols", default="random,loso")
    p.add_argument("--seed", type=int, default=42, help="inner split and AAM seed")
    p.add_argument("--jobs", type=int, default=2, help="trainings at a time")
    p.add_argument("--inner-size", type=float, default=0.2)
    p.add_argument("--summary-only", action="store_true")
    p.add_argument("--combine", default="",
                   help="comma list of finished --out folders (one per seed): print their summaries side by side")
    return p.parse_args(argv)


def aam(cmd: list[str], log: Path) -> None:
    full = [sys.executable, "-m", "aam"] + cmd
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with open(log, "w") as fh:
        fh.write("$ " + shlex.join(full) + "\n")
        fh.flush()
        code = subprocess.run(full, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO).returncode
    if code:
        raise RuntimeError(f"failed ({code}): see {log}")


def inner_split(train: list[str], meta: pd.DataFrame, protocol: str, seed: int, size: float) -> list[str]:
    """The inner validation ids: a random share of ``train``, or whole studies under LOSO."""
    from aam.data.split import make_folds
    n = round(1 / size)
    groups = meta.loc[train, "study"].astype(str).to_numpy() if protocol == "loso" else None
    return next(iter(make_folds(train, n, seed, groups=groups).values()))


def cv_job(args, meta_path: Path, folds_file: Path, fold: str, out: Path, half: str, forest: bool):
    """One ``aam cross-validate`` fold (one training of the recipe half, the forest optionally)."""
    done = out / "folds" / fold / "predictions.tsv"
    if done.is_file() and (not forest or (out / "oof_predictions.tsv").is_file()):
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = ["cross-validate", "--table", args.table, "--metadata", str(meta_path), "--metadata-column", "age",
           "--folds", str(folds_file), "--only-folds", fold, "--output-dir", str(out), "--test-size", "0.1",
           "--seed", str(args.seed), "--quiet"] + shlex.split(RECIPE) + shlex.split(HALVES[half])
    if not forest:
        cmd.append("--no-forest")
    aam(cmd, out.parent / f"{out.name}.log")


def candidates(r: pd.Series, k6: pd.Series, forest: pd.Series) -> dict[str, pd.Series]:
    pair = (r + k6) / 2
    return {"forest": forest, "R": r, "k6": k6, "pair": pair, "R+forest": (r + forest) / 2,
            "k6+forest": (k6 + forest) / 2, "pair+forest": (pair + forest) / 2}


def read_pred(path: Path) -> pd.Series:
    frame = pd.read_csv(path, sep="\t", dtype={"sample_id": str})
    return frame.set_index("sample_id")["prediction"]


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.combine:
        print(combine([Path(d) for d in args.combine.split(",") if d]))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = pd.read_csv(args.metadata, sep="\t", dtype={"sample_id": str}).set_index("sample_id")
    meta_path = out / "age_only_metadata.tsv"  # the target only: the study cannot reach the model
    meta[["age"]].to_csv(meta_path, sep="\t")
    folds_dir = Path(args.folds_dir)
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    jobs, plan = [], []
    for protocol in protocols:
        folds = pd.read_csv(folds_dir / f"folds_{protocol}.tsv", sep="\t", dtype={"sample_id": str, "fold": str})
        for fold in sorted(folds["fold"].unique()):
            held = set(folds.loc[folds["fold"] == fold, "sample_id"])
            train = [s for s in folds["sample_id"] if s not in held]
            fdir = out / protocol / fold
            fdir.mkdir(parents=True, exist_ok=True)
            inner_file = fdir / "inner_folds.tsv"
            if not inner_file.is_file():
                inner_val = set(inner_split(train, meta, protocol, args.seed, args.inner_size))
                pd.DataFrame({"sample_id": train, "fold": ["inner_val" if s in inner_val else "inner_train"
                                                           for s in train]}).to_csv(inner_file, sep="\t",
                                                                                    index=False)
            plan.append((protocol, fold, fdir))
            for half in HALVES:
                jobs.append((inner_file, "inner_val", fdir / f"inner_{half}", half, half == "R"))
                jobs.append((folds_dir / f"folds_{protocol}.tsv", fold, fdir / f"outer_{half}", half, False))
    if not args.summary_only:
        started = time.time()
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = [pool.submit(cv_job, args, meta_path, *job) for job in jobs]
            for f in futures:
                f.result()
        print(f"trainings done in {(time.time() - started) / 60:.1f} min", flush=True)
    summarise(args, out, meta, plan, folds_dir)
    return 0


def summarise(args, out: Path, meta: pd.DataFrame, plan, folds_dir: Path) -> None:
    rows, oof = [], []
    for protocol, fold, fdir in plan:
        try:
            inner_oof = pd.read_csv(fdir / "inner_R" / "oof_predictions.tsv", sep="\t", dtype={"sample_id": str})
            inner_oof = inner_oof[inner_oof["fold"].astype(str) == "inner_val"].set_index("sample_id")
            inner = candidates(inner_oof["aam_prediction"],
                               read_pred(fdir / "inner_k6" / "folds" / "inner_val" / "predictions.tsv"),
                               inner_oof["forest_prediction"])
            outer = candidates(read_pred(fdir / "outer_R" / "folds" / fold / "predictions.tsv"),
                               read_pred(fdir / "outer_k6" / "folds" / fold / "predictions.tsv"),
                               read_pred(folds_dir / protocol / fold / "rf_predictions.tsv"))
        except FileNotFoundError:
            continue
        y_in = meta.loc[inner["R"].index, "age"]
        inner_mae = {k: float(np.mean(np.abs(v.loc[y_in.index] - y_in))) for k, v in inner.items()}
        choice = min(CANDIDATES, key=lambda k: (inner_mae[k], CANDIDATES.index(k)))
        ids = outer["R"].index
        y = meta.loc[ids, "age"]
        row = {"protocol": protocol, "fold": fold, "n": len(ids), "inner_n": len(y_in), "choice": choice}
        for k, v in outer.items():
            pred = v.loc[ids]
            row[k] = float(np.mean(np.abs(pred - y)))
            row[f"inner_{k}"] = inner_mae[k]
            oof.append(pd.DataFrame({"sample_id": ids, "protocol": protocol, "fold": fold, "method": k,
                                     "prediction": pred.to_numpy(), "actual": y.to_numpy()}))
        row["nested"] = row[choice]
        oof.append(pd.DataFrame({"sample_id": ids, "protocol": protocol, "fold": fold, "method": "nested",
                                 "prediction": outer[choice].loc[ids].to_numpy(), "actual": y.to_numpy()}))
        rows.append(row)
    if not rows:
        print("no finished fold yet")
        return
    table = pd.DataFrame(rows)
    table.to_csv(out / "choices.tsv", sep="\t", index=False)
    oof_frame = pd.concat(oof)
    oof_frame.to_csv(out / "oof_predictions.tsv", sep="\t", index=False)
    methods = ("nested",) + CANDIDATES
    lines = [f"seed {args.seed}; MAE per outer fold (the inner choice in the `choice` column)", ""]
    summary = {}
    for protocol, part in table.groupby("protocol", sort=False):
        lines += [f"### {protocol} ({len(part)} folds)", "",
                  "| fold | n | choice | " + " | ".join(methods) + " |",
                  "| --- | --- | --- | " + " | ".join("---" for _ in methods) + " |"]
        for _, r in part.iterrows():
            lines.append(f"| {r['fold']} | {r['n']} | {r['choice']} | "
                         + " | ".join(f"{r[m]:.2f}" for m in methods) + " |")
        pooled = {}
        for m in methods:
            sub = oof_frame[(oof_frame["protocol"] == protocol) & (oof_frame["method"] == m)]
            pooled[m] = float(np.mean(np.abs(sub["prediction"] - sub["actual"])))
        mean = {m: float(part[m].mean()) for m in methods}
        wins = int((part["nested"] < part["forest"]).sum())
        lines.append("| **mean** | | | " + " | ".join(f"{mean[m]:.2f}" for m in methods) + " |")
        lines.append("| **pooled** | | | " + " | ".join(f"{pooled[m]:.2f}" for m in methods) + " |")
        lines += ["", f"nested beats the forest on {wins}/{len(part)} folds; choices: "
                  + ", ".join(f"{k} x{v}" for k, v in part["choice"].value_counts().items()), ""]
        summary[protocol] = {"folds": len(part), "mean": mean, "pooled": pooled, "nested_wins": wins,
                             "choices": part["choice"].value_counts().to_dict()}
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(json.dumps({"seed": args.seed, "protocols": summary}, indent=1) + "\n")
    print("\n".join(lines))


def combine(folders: list[Path]) -> str:
    """One row per seed and protocol: nested vs forest, pooled and mean over folds, the wins and the choices;
    then the mean over the seeds that finished every fold of the protocol."""
    rows = []
    for folder in folders:
        summary = json.loads((folder / "summary.json").read_text())
        for protocol, part in summary["protocols"].items():
            rows.append({"protocol": protocol, "seed": summary["seed"], "folds": part["folds"],
                         "nested pooled": part["pooled"]["nested"], "forest pooled": part["pooled"]["forest"],
                         "nested mean": part["mean"]["nested"], "forest mean": part["mean"]["forest"],
                         "pair+forest pooled": part["pooled"]["pair+forest"], "wins": part["nested_wins"],
                         "choices": ", ".join(f"{k} x{v}" for k, v in part["choices"].items())})
    table = pd.DataFrame(rows)
    numbers = ["nested pooled", "forest pooled", "nested mean", "forest mean", "pair+forest pooled"]
    lines = ["| protocol | seed | folds | " + " | ".join(numbers) + " | nested wins | inner choices |",
             "| --- " * (len(numbers) + 5) + "|"]
    for protocol, part in table.groupby("protocol", sort=False):
        for _, values in part.iterrows():
            lines.append(f"| {protocol} | {values['seed']} | {values['folds']} | "
                         + " | ".join(f"{values[c]:.2f}" for c in numbers)
                         + f" | {values['wins']}/{values['folds']} | {values['choices']} |")
        full = part[part["folds"] == part["folds"].max()]
        lines.append(f"| {protocol} | **mean of {len(full)}** | | "
                     + " | ".join(f"**{full[c].mean():.2f}**" for c in numbers)
                     + f" | {int(full['wins'].sum())}/{int(full['folds'].sum())} | |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
