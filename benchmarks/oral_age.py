"""Oral microbiome -> host age: cross-validated accuracy of AAM next to a random forest and simple baselines.

Protocols (on the dev split in ../shared/data):

* ``random``: 5-fold KFold, shuffled with a fixed seed. Optimistic: the same studies (and the same people,
  sampled daily) are on both sides of the split.
* ``loso``: leave-one-study-out; train on 8 studies, predict the 9th. The honest protocol.

Methods, each fold:

* ``rf``: ``aam rf-baseline`` (500 trees, relative abundances) on the fold's train/val sample lists (the same
  as ``aam rf-baseline --folds OUT/folds_random.tsv`` or ``folds_loso.tsv``, which the script writes too).
* ``train_mean``: predict the mean age of the training samples (reference floor).
* ``study_mean`` (random only): predict each validation sample's age as the mean age of the training samples of
  its study. Uses ``study``, so it measures leakage; it is not a model.
* ``nearest``: the age of the single most similar training sample (1-nearest neighbour, cosine distance on
  log1p(1e4 x relative abundance)). A re-identification yardstick: it wins when the same people or studies are
  on both sides of the split, and it has nothing to transfer to an unseen study.
* ``aam``: ``aam cross-validate --folds folds_<protocol>.tsv --only-folds <fold> --baselines none`` with the recipe:
  it trains on the other folds' samples (early stopping on its own ``--aam-test-size`` split of them, grouped
  by study with ``--inner-group``) and predicts the fold, which is never seen in training or checkpoint
  selection. The metadata it gets has only ``sample_id`` and ``age`` (and ``study`` with ``--inner-group``,
  used only to split), so ``study`` cannot reach the model.
* ``aam_pre`` (optional, ``--pretrain``): as ``aam``, after ``aam pretrain --exclude-samples`` the fold.

With ``--members N`` an AAM method trains the recipe N times (seeds ``--seed``, ``--seed``+1, ...; or the
consecutive seeds of ``--member-seeds``) and averages them (cross-validate's ``--members``); its name gets
``_xN``. ``--variant SUFFIX=FLAGS`` also trains each member seed with the recipe + FLAGS (cross-validate's
``--variant``) into the same average: ``--variant '_k6=--kmer-size 6'`` averages the recipe with and without a
k-mer bag. Each fold's cross-validate folder keeps its finished member runs, so an interrupted fold resumes.

Finished (fold, method) results are kept in OUT and skipped when the command is rerun, so a long run can be
continued; a summary (summary.md, summary.json, oof_predictions.tsv) is rewritten from all results in OUT at
the end of every run. Example::

    .venv/bin/python benchmarks/oral_age.py --methods rf,train_mean,study_mean    # all folds, minutes
    .venv/bin/python benchmarks/oral_age.py --methods aam --folds-limit 1         # time one AAM fold
    .venv/bin/python benchmarks/oral_age.py --methods aam --recipe cpu-fast-long --suffix _long
    .venv/bin/python benchmarks/oral_age.py --summary-only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from aam.baselines import FOREST_TREES

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"

# Named AAM recipes (flags for `aam train`, and the model flags reused by `aam pretrain`). Chosen for CPU time,
# not tuned on validation folds.
RECIPES = {
    # Default: ~1-2 min per fold on 2 shared CPU cores (~250 training samples/s when the machine is quiet).
    # --dropout 0: before 6e14387, scaled_dot_product_attention with dropout_p > 0 was ~10x slower on CPU.
    "cpu-fast": (
        "--embedding-dim 32 --attention-heads 4 --attention-layers 1 --max-bp 100 --token-limit 32 "
        "--batch-size 64 --lr 1e-3 --dropout 0 --count-embedding --loss-type huber --epochs 6 --patience 6 "
        "--nuc-penalty 0"
    ),
    # cpu-fast trained 5x longer: ~3.5 min per fold on 2 CPU cores at ~250 training samples/s.
    "cpu-fast-long": (
        "--embedding-dim 32 --attention-heads 4 --attention-layers 1 --max-bp 100 --token-limit 32 "
        "--batch-size 64 --lr 1e-3 --dropout 0 --count-embedding --loss-type huber --epochs 30 --patience 8 "
        "--nuc-penalty 0"
    ),
    # cpu-fast-long with 4x the optimizer steps (batch 16) and abundance-weighted target pooling: the best of
    # the single-split tuning runs in BENCHMARKS.md (inner split of random fold 0's training samples only).
    "cpu-b16-abundance": (
        "--embedding-dim 32 --attention-heads 4 --attention-layers 1 --max-bp 100 --token-limit 32 "
        "--batch-size 16 --lr 1e-3 --dropout 0 --count-embedding --loss-type huber --epochs 30 --patience 8 "
        "--nuc-penalty 0 --target-pooling abundance"
    ),
    # Session 3 (inner split of random fold 0 only): cpu-b16-abundance with an EMA of the weights (smooth
    # validation curves, no lucky-epoch selection), the L1 loss (the MAE it is scored on) and lr 3e-3.
    "cpu-l1-ema": (
        "--embedding-dim 32 --attention-heads 4 --attention-layers 1 --max-bp 100 --token-limit 32 "
        "--batch-size 16 --lr 3e-3 --dropout 0 --count-embedding --loss-type mae --epochs 30 --patience 8 "
        "--nuc-penalty 0 --target-pooling abundance --ema-decay 0.99"
    ),
    # The starting point of issue #7 (~3 training samples/s on 2 CPU cores: ~7 min per epoch; GPU-sized).
    "cpu-small": (
        "--embedding-dim 64 --attention-heads 4 --attention-layers 2 --max-bp 100 --token-limit 128 "
        "--batch-size 16 --lr 5e-4 --count-embedding --loss-type huber --epochs 30 --patience 8 --nuc-penalty 0"
    ),
}
# Flags of a recipe that `aam pretrain` also takes (model shape and input); the rest are fine-tuning only.
PRETRAIN_SHARED = {"--embedding-dim", "--attention-heads", "--attention-layers", "--max-bp", "--token-limit",
                   "--batch-size", "--lr", "--count-embedding", "--nuc-penalty", "--ffn-ratio", "--dropout",
                   "--no-count-embedding"}
METHODS = ("rf", "train_mean", "study_mean", "nearest", "aam", "aam_pre")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", default=str(DATA / "oral_dev.biom"))
    p.add_argument("--metadata", default=str(DATA / "oral_dev_metadata.tsv"))
    p.add_argument("--tree", default=str(DATA / "oral.upgma.nwk"), help="for --pretrain (UniFrac targets)")
    p.add_argument("--target", default="age")
    p.add_argument("--group", default="study", help="grouping column (never a model input)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "oral_age"))
    p.add_argument("--protocols", default="random,loso", help="comma list of random, loso")
    p.add_argument("--methods", default="rf,train_mean,study_mean,aam",
                   help=f"comma list of {', '.join(METHODS)}")
    p.add_argument("--folds-limit", type=int, default=None, help="run only the first N folds of each protocol")
    p.add_argument("--only-folds", default=None,
                   help="comma list of fold names to run (e.g. fold3,qiita_550), to split a grid over processes")
    p.add_argument("--n-folds", type=int, default=5, help="folds of the random protocol")
    p.add_argument("--seed", type=int, default=42, help="fold shuffling, forest and AAM seed")
    p.add_argument("--recipe", default="cpu-fast", help=f"named AAM recipe: {', '.join(RECIPES)}")
    p.add_argument("--suffix", default="",
                   help="appended to the aam/aam_pre method names (e.g. _long), to keep several recipes apart")
    p.add_argument("--aam-args", default="", help="extra `aam train` flags appended to the recipe (win)")
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's --epochs")
    p.add_argument("--members", type=int, default=1,
                   help="AAM ensemble size: train with seeds --seed, --seed+1, ... and average their predictions")
    p.add_argument("--member-seeds", default=None,
                   help="comma list of AAM member seeds (e.g. 44,45), instead of --members; the method name gets "
                        "_s44-45")
    p.add_argument("--variant", action="append", default=[], metavar="SUFFIX=FLAGS",
                   help="also train each member seed with the recipe + FLAGS (run dirs get SUFFIX) and average "
                        "all runs, e.g. --variant '_k6=--kmer-size 6'; repeatable")
    p.add_argument("--aam-test-size", type=float, default=0.1,
                   help="aam train's own early-stopping split of the fold's training samples")
    p.add_argument("--inner-group", action="store_true",
                   help="group aam's early-stopping split by --group (study), so early stopping rewards what "
                        "transfers to a new study; the column is never a model input")
    p.add_argument("--pretrain", action="store_true", help="also run aam_pre (pretrain on fold train samples)")
    p.add_argument("--pretrain-epochs", type=int, default=10)
    p.add_argument("--pretrain-args", default="",
                   help="extra `aam pretrain` flags after the recipe's shared ones (e.g. '--batch-size 64')")
    p.add_argument("--rf-jobs", type=int, default=-1)
    p.add_argument("--force", action="store_true", help="rerun (fold, method) results already in --out")
    p.add_argument("--summary-only", action="store_true", help="only rewrite the summary from --out")
    args = p.parse_args(argv)
    args.member_seeds = ([int(x) for x in args.member_seeds.split(",") if x] if args.member_seeds
                         else [args.seed + i for i in range(args.members)])
    try:
        args.variant = [(suffix, flags) for suffix, flags in (v.split("=", 1) for v in args.variant)]
    except ValueError:
        p.error("--variant takes SUFFIX=FLAGS, e.g. --variant '_k6=--kmer-size 6'")
    return args


def code_version() -> str:
    """Commit of the repository and whether aam/ has uncommitted changes (results depend on the code)."""
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "aam"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("+dirty-aam" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def aam_exe() -> list[str]:
    exe = Path(sys.executable).parent / "aam"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "aam"]


# ---------------------------------------------------------------- data and folds

def load_metadata(path: str, target: str, group: str) -> pd.DataFrame:
    meta = pd.read_csv(path, sep="\t", dtype={"sample_id": str})
    return meta.set_index("sample_id")[[target, group]]


def table_ids(path: str) -> list[str]:
    import biom
    return list(biom.load_table(path).ids(axis="sample"))


def make_folds(ids: list[str], meta: pd.DataFrame, group: str, protocols: list[str], n_folds: int,
               seed: int) -> pd.DataFrame:
    from sklearn.model_selection import KFold
    rows = []
    ids = np.asarray(ids)
    if "random" in protocols:
        kf = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
        for k, (_, val) in enumerate(kf.split(ids)):
            rows += [(s, "random", f"fold{k}") for s in ids[val]]
    if "loso" in protocols:
        studies = meta.loc[ids, group].astype(str).to_numpy()
        for study in sorted(set(studies)):
            rows += [(s, "loso", study) for s in ids[studies == study]]
    return pd.DataFrame(rows, columns=["sample_id", "protocol", "fold"])


# ---------------------------------------------------------------- metrics

def metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    err = p - y
    ss_res = float(np.sum(err ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return {"n": int(len(y)), "mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err ** 2))),
            "r2": (1.0 - ss_res / ss_tot) if ss_tot > 0 else float("nan")}


# ---------------------------------------------------------------- methods

def run_logged(cmd: list[str], log_path: Path) -> None:
    with open(log_path, "w") as fh:
        fh.write("$ " + shlex.join(cmd) + "\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log_path.read_text().splitlines()[-15:]
        raise RuntimeError(f"command failed ({proc.returncode}): {shlex.join(cmd)}\n" + "\n".join(tail))


def method_rf(args, fold_dir: Path, train: list[str], val: list[str], meta) -> pd.DataFrame:
    out = fold_dir / "rf_predictions.tsv"
    cmd = aam_exe() + ["rf-baseline", "--table", args.table, "--metadata", args.metadata,
                       "--metadata-column", args.target, "--train-samples", str(fold_dir / "train_samples.txt"),
                       "--val-samples", str(fold_dir / "val_samples.txt"), "--output", str(out),
                       "--n-estimators", str(FOREST_TREES), "--random-seed", str(args.seed),
                       "--n-jobs", str(args.rf_jobs)]
    run_logged(cmd, fold_dir / "rf.log")
    pred = pd.read_csv(out, sep="\t", dtype={"sample_id": str})
    return pred[["sample_id", "prediction"]]


def method_train_mean(args, fold_dir, train, val, meta) -> pd.DataFrame:
    return pd.DataFrame({"sample_id": val, "prediction": float(meta.loc[train, args.target].mean())})


def method_nearest(args, fold_dir, train, val, meta) -> pd.DataFrame:
    """The age of the most similar training sample (cosine on log1p(1e4 x relative abundance))."""
    import biom
    from sklearn.neighbors import KNeighborsRegressor
    table = biom.load_table(args.table)
    counts = pd.DataFrame(table.matrix_data.toarray().T, index=table.ids(axis="sample"))
    features = np.log1p(1e4 * counts.div(counts.sum(axis=1), axis=0))
    model = KNeighborsRegressor(n_neighbors=1, metric="cosine").fit(features.loc[train].to_numpy(),
                                                                     meta.loc[train, args.target].to_numpy())
    return pd.DataFrame({"sample_id": val, "prediction": model.predict(features.loc[val].to_numpy())})


def method_study_mean(args, fold_dir, train, val, meta) -> pd.DataFrame:
    means = meta.loc[train].groupby(args.group)[args.target].mean()
    fallback = float(meta.loc[train, args.target].mean())
    pred = [float(means.get(meta.at[s, args.group], fallback)) for s in val]
    return pd.DataFrame({"sample_id": val, "prediction": pred})


def recipe_args(args) -> list[str]:
    flags = shlex.split(RECIPES[args.recipe]) if args.recipe in RECIPES else shlex.split(args.recipe)
    flags += shlex.split(args.aam_args)
    if args.epochs is not None:
        flags += ["--epochs", str(args.epochs)]
    return flags


def pretrain_args(flags: list[str]) -> list[str]:
    """The recipe's flags that `aam pretrain` shares (model shape, input, optimisation)."""
    out, i = [], 0
    while i < len(flags):
        name = flags[i]
        takes_value = i + 1 < len(flags) and not flags[i + 1].startswith("--")
        if name in PRETRAIN_SHARED:
            out += flags[i:i + 2] if takes_value else [name]
        i += 2 if takes_value else 1
    return out


def _target_metadata(args, fold_dir: Path, meta) -> Path:
    """Metadata with only sample_id, the target and (with ``--inner-group``) the grouping column: nothing else
    can reach the model, and the grouping column only shapes the early-stopping split."""
    path = fold_dir / "train_metadata.tsv"
    columns = [args.target] + ([args.group] if args.inner_group else [])
    meta[columns].rename_axis("sample_id").to_csv(path, sep="\t")
    return path


def aam_method_name(kind: str, args) -> str:
    """``aam``/``aam_pre`` + ``--suffix``, ``+SUFFIX`` per ``--variant``, then ``_xN`` for the N seeds ``--seed``,
    ``--seed``+1, ... (nothing for one) or ``_s`` and the seeds otherwise: ``aam_l1ema_x3``, ``aam_l1ema+k6_s44-45``."""
    seeds = args.member_seeds
    if seeds == list(range(args.seed, args.seed + len(seeds))):
        tag = f"_x{len(seeds)}" if len(seeds) > 1 else ""
    else:
        tag = "_s" + "-".join(map(str, seeds))
    return kind + args.suffix + "".join("+" + suffix.lstrip("_") for suffix, _ in args.variant) + tag


def cross_validate_seeds(args) -> list[str]:
    """``--seed`` and ``--members`` of aam cross-validate for the member seeds (consecutive seeds only)."""
    seeds = args.member_seeds
    if seeds != list(range(seeds[0], seeds[0] + len(seeds))):
        sys.exit("--member-seeds must be consecutive (aam cross-validate trains seeds S, S+1, ...)")
    return ["--seed", str(seeds[0]), "--members", str(len(seeds))]


def method_aam(args, fold_dir: Path, train: list[str], val: list[str], meta, pretrain: bool = False):
    """One fold of ``aam cross-validate`` over the protocol's folds file (``--only-folds``): it trains on the
    other folds' samples (early stopping on its own ``--aam-test-size`` split of them, grouped by study with
    ``--inner-group``) and predicts this fold; finished runs are reused."""
    kind = "aam_pre" if pretrain else "aam"
    name = aam_method_name(kind, args)
    protocol, fold = fold_dir.parent.name, fold_dir.name
    train_meta = _target_metadata(args, fold_dir, meta)
    flags = recipe_args(args)
    extra = []
    if pretrain:
        pre_dir = fold_dir / f"aam_pretrain{args.suffix}"
        if args.force or not (pre_dir / "pretrained_encoder.pt").is_file():
            cmd = aam_exe() + ["pretrain", "--table", args.table, "--tree", args.tree,
                               "--exclude-samples", str(fold_dir / "val_samples.txt"),
                               "--output-dir", str(pre_dir), "--test-size", str(args.aam_test_size),
                               "--seed", str(args.seed), "--quiet"] + pretrain_args(flags) + \
                shlex.split(args.pretrain_args) + ["--epochs", str(args.pretrain_epochs)]
            run_logged(cmd, fold_dir / f"aam_pretrain{args.suffix}.log")
        extra = ["--pretrained-encoder", str(pre_dir / "pretrained_encoder.pt")]
    cv_dir = fold_dir / f"cv_{name}"
    done = cv_dir / "folds" / fold / "predictions.tsv"
    if args.force and done.exists():
        done.unlink()
    variants = [arg for _, variant in args.variant for arg in ("--variant", variant)]
    cmd = aam_exe() + ["cross-validate", "--table", args.table, "--metadata", str(train_meta),
                       "--metadata-column", args.target, "--folds", str(fold_dir.parent.parent /
                                                                           f"folds_{protocol}.tsv"),
                       "--only-folds", fold, "--baselines", "none", "--output-dir", str(cv_dir),
                       "--test-size", str(args.aam_test_size), "--quiet", *cross_validate_seeds(args), *variants,
                       *(["--group-column", args.group] if args.inner_group else [])] + flags + extra
    run_logged(cmd, fold_dir / f"{name}_cross_validate.log")
    pred = pd.read_csv(done, sep="\t", dtype={"sample_id": str})
    return pred[["sample_id", "prediction"]]


RUNNERS = {"rf": method_rf, "train_mean": method_train_mean, "study_mean": method_study_mean,
           "nearest": method_nearest, "aam": method_aam, "aam_pre": lambda *a: method_aam(*a, pretrain=True)}


# ---------------------------------------------------------------- summary

def summarise(out: Path, meta: pd.DataFrame, args) -> str:
    records, oof = [], []
    for res in sorted(out.glob("*/*/result_*.json")):
        r = json.loads(res.read_text())
        records.append(r)
        pred = pd.read_csv(res.parent / f"oof_{r['method']}.tsv", sep="\t", dtype={"sample_id": str})
        pred["protocol"], pred["fold"], pred["method"] = r["protocol"], r["fold"], r["method"]
        oof.append(pred)
    if not records:
        return "no results yet\n"
    oof = pd.concat(oof, ignore_index=True)
    oof["actual"] = meta.loc[oof["sample_id"], args.target].to_numpy()
    oof["study"] = meta.loc[oof["sample_id"], args.group].astype(str).to_numpy()
    oof.to_csv(out / "oof_predictions.tsv", sep="\t", index=False)
    folds = pd.read_csv(out / "folds.tsv", sep="\t", dtype={"sample_id": str})
    n_folds = folds.groupby("protocol")["fold"].nunique().to_dict()

    res = pd.DataFrame(records)
    lines, rows = [], []
    base_order = {m: i for i, m in enumerate(METHODS)}

    def order(m: str) -> tuple:
        base = "aam_pre" if m.startswith("aam_pre") else "aam" if m.startswith("aam") else m
        return base_order.get(base, 99), m
    for protocol in ("random", "loso"):
        sub = res[res.protocol == protocol]
        if sub.empty:
            continue
        lines.append(f"\n### {protocol} ({n_folds.get(protocol, '?')} folds)\n")
        lines.append("| method | folds run | MAE (mean +/- sd over folds) | RMSE | R^2 | pooled OOF MAE | pooled R^2 "
                     "| wall time per fold (mean) | total wall time |")
        lines.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for method in sorted(sub.method.unique(), key=order):
            m = sub[sub.method == method]
            o = oof[(oof.protocol == protocol) & (oof.method == method)]
            pooled = metrics(o.actual.to_numpy(), o.prediction.to_numpy())
            f = lambda c: f"{m[c].mean():.2f} +/- {m[c].std(ddof=1) if len(m) > 1 else float('nan'):.2f}"  # noqa
            lines.append(f"| {method} | {len(m)}/{n_folds.get(protocol, '?')} ({', '.join(sorted(m.fold))}) | "
                         f"{f('mae')} | {f('rmse')} | {f('r2')} | {pooled['mae']:.2f} | {pooled['r2']:.2f} | "
                         f"{m.wall_s.mean():.0f} s | {m.wall_s.sum() / 60:.1f} min |")
            rows.append({"protocol": protocol, "method": method, "folds": sorted(m.fold),
                         **{f"{c}_mean": float(m[c].mean()) for c in ("mae", "rmse", "r2")},
                         **{f"{c}_sd": float(m[c].std(ddof=1)) if len(m) > 1 else None
                            for c in ("mae", "rmse", "r2")},
                         "pooled": pooled, "wall_s_total": float(m.wall_s.sum())})
        # per-fold table
        lines.append(f"\nPer fold ({protocol}): MAE / R^2 (n validation samples)\n")
        methods = sorted(sub.method.unique(), key=order)
        lines.append("| fold | n | " + " | ".join(methods) + " |")
        lines.append("| --- | --- | " + " | ".join("---" for _ in methods) + " |")
        for fold in sorted(sub.fold.unique()):
            cells = []
            for method in methods:
                r = sub[(sub.fold == fold) & (sub.method == method)]
                cells.append(f"{r.mae.iloc[0]:.2f} / {r.r2.iloc[0]:.2f}" if len(r) else "not run")
            n = int(sub[sub.fold == fold].n.iloc[0])
            lines.append(f"| {fold} | {n} | " + " | ".join(cells) + " |")
        # per-study MAE on concatenated out-of-fold predictions
        lines.append(f"\nPer-study MAE ({protocol}, out-of-fold predictions concatenated; "
                     "only samples of folds that the method ran)\n")
        studies = sorted(oof[oof.protocol == protocol].study.unique())
        lines.append("| study | n | age mean (range) | " + " | ".join(methods) + " |")
        lines.append("| --- | --- | --- | " + " | ".join("---" for _ in methods) + " |")
        for study in studies:
            ages = meta[meta[args.group].astype(str) == study][args.target]
            cells = []
            for method in methods:
                o = oof[(oof.protocol == protocol) & (oof.method == method) & (oof.study == study)]
                cells.append(f"{(o.prediction - o.actual).abs().mean():.2f} ({len(o)})" if len(o) else "-")
            lines.append(f"| {study} | {len(ages)} | {ages.mean():.1f} ({ages.min():.0f}-{ages.max():.0f}) | "
                         + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    (out / "summary.json").write_text(json.dumps({"rows": rows, "folds": records}, indent=1))
    return text


# ---------------------------------------------------------------- main

def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = load_metadata(args.metadata, args.target, args.group)
    if args.summary_only:
        print(summarise(out, meta, args))
        return 0
    protocols = [p for p in args.protocols.split(",") if p]
    methods = [m for m in args.methods.split(",") if m]
    if args.pretrain and "aam_pre" not in methods:
        methods.append("aam_pre")
    bad = [m for m in methods if m not in METHODS] + [p for p in protocols if p not in ("random", "loso")]
    if bad:
        sys.exit(f"unknown method/protocol: {bad}")
    if args.recipe not in RECIPES and not args.recipe.startswith("--"):
        sys.exit(f"--recipe: a name ({', '.join(RECIPES)}) or a quoted string of aam train flags")

    ids = [s for s in table_ids(args.table) if s in meta.index]
    meta = meta.loc[ids]
    folds_path = out / "folds.tsv"
    folds = make_folds(ids, meta, args.group, ["random", "loso"], args.n_folds, args.seed)
    if folds_path.exists():
        old = pd.read_csv(folds_path, sep="\t", dtype={"sample_id": str})
        if not old.sort_values(list(old.columns)).reset_index(drop=True).equals(
                folds.sort_values(list(folds.columns)).reset_index(drop=True)):
            sys.exit(f"{folds_path} differs from the folds of this --seed/--n-folds; use another --out")
    folds.to_csv(folds_path, sep="\t", index=False)
    for protocol, part in folds.groupby("protocol"):  # one file per protocol, for `aam rf-baseline --folds`
        part[["sample_id", "fold"]].to_csv(out / f"folds_{protocol}.tsv", sep="\t", index=False)

    env = {"python": platform.python_version(), "argv": sys.argv, "recipe": shlex.join(recipe_args(args)),
           "cpus": os.cpu_count()}
    try:
        import torch
        env.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    except Exception:  # noqa: BLE001
        pass
    with open(out / "runs.jsonl", "a") as fh:
        fh.write(json.dumps({"started": time.strftime("%Y-%m-%d %H:%M:%S"), **env}) + "\n")

    for protocol in protocols:
        pf = folds[folds.protocol == protocol]
        fold_names = list(dict.fromkeys(pf.fold))[: args.folds_limit]
        if args.only_folds:
            fold_names = [f for f in fold_names if f in args.only_folds.split(",")]
        for fold in fold_names:
            val = pf[pf.fold == fold].sample_id.tolist()
            vset = set(val)
            train = [s for s in ids if s not in vset]
            fold_dir = out / protocol / fold
            fold_dir.mkdir(parents=True, exist_ok=True)
            (fold_dir / "train_samples.txt").write_text("\n".join(train) + "\n")
            (fold_dir / "val_samples.txt").write_text("\n".join(val) + "\n")
            for base in methods:
                method = aam_method_name(base, args) if base.startswith("aam") else base
                if method == "study_mean" and protocol == "loso":
                    continue  # the held-out study has no training samples
                result_path = fold_dir / f"result_{method}.json"
                if result_path.exists() and not args.force:
                    print(f"[skip] {protocol}/{fold} {method}: done", flush=True)
                    continue
                print(f"[run ] {protocol}/{fold} {method} ({len(train)} train, {len(val)} val) "
                      f"{time.strftime('%H:%M:%S')}", flush=True)
                version = code_version()
                t0 = time.perf_counter()
                try:
                    pred = RUNNERS[base](args, fold_dir, train, val, meta)
                except RuntimeError as exc:
                    print(f"[FAIL] {protocol}/{fold} {method}: {exc}", flush=True)
                    continue
                wall = time.perf_counter() - t0
                pred = pred.set_index("sample_id").loc[val].reset_index()
                pred.to_csv(fold_dir / f"oof_{method}.tsv", sep="\t", index=False)
                score = metrics(meta.loc[val, args.target].to_numpy(), pred.prediction.to_numpy())
                result = {"protocol": protocol, "fold": fold, "method": method, "wall_s": wall, **score,
                          "code": version, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
                if base.startswith("aam"):
                    result.update(recipe=shlex.join(recipe_args(args)), member_seeds=args.member_seeds,
                                  variants=dict(args.variant))
                result_path.write_text(json.dumps(result, indent=1))
                print(f"[done] {protocol}/{fold} {method}: MAE {score['mae']:.2f} RMSE {score['rmse']:.2f} "
                      f"R2 {score['r2']:.3f} in {wall:.0f} s", flush=True)
    print(summarise(out, meta, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
