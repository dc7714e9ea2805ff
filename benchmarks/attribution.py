"""Which attribution method finds the ASVs that truly drive a target? Evidence for ``aam explain``'s default.

Two synthetic tasks with known drivers, each at several seeds:

- ``regression``: ``make_clade_driven_dataset`` (the demo generator's ASVs evolved along a tree in 6 clades;
  clade 0's share drawn independently of the community, target = 20 + 100 x that share + noise): the clade-0
  ASVs drive it, and they are neither the most nor the least abundant.
- ``classification``: the longitudinal cohort (``aam/data/synthetic_longitudinal.py``, 24 people x 10 time
  points): cases are enriched in every ASV of the disease clades.

On each, a transformer (``aam train``) and a sequence-groups model are trained on all samples and explained on
them with ``aam explain`` (occlusion; gradient for the transformer). Scores per run: the AUROC of the ASV
importance for "in a driving clade" (over the ASVs the model read), precision among the top 10, and the deletion
check at k = 5 (top-attributed vs random ASVs removed). The ranking by mean relative abundance is the floor.

    python benchmarks/attribution.py --seeds 1,2,3 [--out benchmarks/results/attribution]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
TRANSFORMER = ["--preset", "small-data", "--token-limit", "256", "--device", "cpu", "--quiet"]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--tasks", default="regression,classification")
    parser.add_argument("--models", default="transformer,sequence-groups", help="comma list of the models to run")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "attribution")
    return parser.parse_args(argv)


def make_task(task: str, seed: int, folder: Path) -> tuple[dict[str, Path], set[str], list[str]]:
    """Write the task's table and metadata; return their paths, the driving ASV ids and the target flags."""
    folder.mkdir(parents=True, exist_ok=True)
    if task == "regression":
        from aam.data.synthetic import make_clade_driven_dataset, write_synthetic_dataset

        dataset = make_clade_driven_dataset(n_samples=160, n_asvs=60, seed=seed)
        paths = write_synthetic_dataset(folder, dataset)
        drivers = {a for a, c in zip(dataset.asv_ids, dataset.clades) if c == 0}
        return paths, drivers, ["--metadata-column", "target"]
    from aam.data.synthetic_longitudinal import make_longitudinal_dataset, write_longitudinal_dataset

    dataset = make_longitudinal_dataset(n_subjects=24, samples_per_subject=10, seed=seed)
    paths = write_longitudinal_dataset(folder, n_subjects=24, samples_per_subject=10, seed=seed)
    drivers = {a for a, c in zip(dataset.asv_ids, dataset.clades) if c in dataset.disease_clades}
    return paths, drivers, ["--metadata-column", "disease", "--classifier"]


def aam(*args) -> None:
    subprocess.run([sys.executable, "-m", "aam", *map(str, args)], check=True, stdout=subprocess.DEVNULL)


def score(explained: Path, drivers: set[str]) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    table = pd.read_csv(explained / "asv_importance.tsv", sep="\t")
    driving = table["feature_id"].isin(drivers).to_numpy()
    deletion = pd.read_csv(explained / "deletion_check.tsv", sep="\t")
    at5 = deletion[deletion["k"] == 5].set_index("measure")
    return {"auroc": roc_auc_score(driving, table["importance"]),
            "abundance_auroc": roc_auc_score(driving, table["mean_relative_abundance"]),
            "precision_at_10": float(driving[:10].mean()),
            "size_ratio_k5": float(at5.loc["mean |change|", "ratio"]),
            "drop_top_k5": float(at5.loc["mean drop of the answer", "top"]),
            "drop_random_k5": float(at5.loc["mean drop of the answer", "random"])}


def main(argv=None) -> int:
    args = parse_args(argv)
    rows = []
    for task in args.tasks.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            folder = args.out / f"{task}_seed{seed}"
            paths, drivers, target = make_task(task, seed, folder / "data")
            common = ["--table", paths["table"], "--metadata", paths["metadata"], *target, "--seed", seed]
            for model in args.models.split(","):
                run = folder / model
                if not (run / "checkpoints" / "best_model.pt").exists():
                    extra = TRANSFORMER if model == "transformer" else ["--model-type", "sequence-groups",
                                                                        "--quiet"]
                    aam("train", *common, "--output-dir", run, *extra)
                for method in ("occlusion", "gradient") if model == "transformer" else ("occlusion",):
                    explained = folder / f"explain_{model}_{method}"
                    if not (explained / "summary.json").exists():
                        aam("explain", "--model", run / "checkpoints" / "best_model.pt", "--table", paths["table"],
                            "--output-dir", explained, "--method", method, "--device", "cpu", "--quiet")
                    rows.append({"task": task, "seed": seed, "model": model, "method": method,
                                 **score(explained, drivers)})
                    print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out / "summary.tsv", sep="\t", index=False, float_format="%.4g")
    means = frame.groupby(["task", "model", "method"]).agg(["mean", "std"]).drop(columns="seed")
    print(means.round(3).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
