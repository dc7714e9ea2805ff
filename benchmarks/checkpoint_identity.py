"""Does a change leave training unchanged? Train the same small run at a fixed seed with two versions of the
code and compare their checkpoints field by field (weights, optimizer, scheduler, random streams, history,
the weight average), ignoring what is expected to differ (paths, dates, versions, timings, fields a version
added).

    python benchmarks/checkpoint_identity.py --before 0decd35            # a git revision against this tree
    python benchmarks/checkpoint_identity.py --before REV --after REV2 --work /tmp/identity

Each revision is checked out with ``git worktree`` and imported through ``PYTHONPATH``; the data are the
synthetic dataset of ``aam demo --data-only``. Exit 1 when a checkpoint differs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
IGNORED = ("created", "versions", "elapsed", "train_samples_per_s", "output_dir")
RUNS = {"plain": [], "ema-steps-fusion": ["--ema-decay", "0.9", "--checkpoint-every-steps", "3",
                                          "--categorical-columns", "site", "--categorical-fusion", "gmu"]}
MODEL = ["--epochs", "4", "--embedding-dim", "16", "--attention-heads", "2", "--attention-layers", "1",
         "--token-limit", "24", "--max-bp", "150", "--batch-size", "8", "--device", "cpu", "--seed", "5"]


def differences(a, b, path: str = "") -> list[str]:
    """Where two checkpoint payloads differ (fields only one side has are listed as such)."""
    if path.rsplit("/", 1)[-1] in IGNORED:
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        found = [f"{path}/{k} only on one side" for k in sorted(set(a) ^ set(b), key=str)]
        return found + [d for k in a if k in b for d in differences(a[k], b[k], f"{path}/{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} items"]
        return [d for i, (u, v) in enumerate(zip(a, b)) for d in differences(u, v, f"{path}[{i}]")]
    if torch.is_tensor(a) and torch.is_tensor(b):
        return [] if torch.equal(a, b) else [f"{path}: tensors differ"]
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return [] if np.array_equal(a, b) else [f"{path}: arrays differ"]
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return []
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


def tree_of(revision: str | None, work: Path) -> Path:
    if revision is None:
        return ROOT
    target = work / f"tree_{revision.replace('/', '_')}"
    if not target.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(target), revision], check=True,
                       capture_output=True)
    return target


def train(tree: Path, data: dict, out: Path, extra: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    subprocess.run([sys.executable, "-m", "aam", "train", "--table", str(data["table"]), "--metadata",
                    str(data["metadata"]), "--metadata-column", "target", "--output-dir", str(out), *MODEL, *extra,
                    "--quiet"], check=True, env=env, cwd=str(out.parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="git revision of the reference code")
    parser.add_argument("--after", default=None, help="git revision to compare (default: this working tree)")
    parser.add_argument("--work", type=Path, default=None, help="folder for worktrees, data and runs")
    args = parser.parse_args(argv)
    from aam.data.synthetic import write_synthetic_dataset

    work = args.work or Path(tempfile.mkdtemp(prefix="aam_identity_"))
    work.mkdir(parents=True, exist_ok=True)
    data = write_synthetic_dataset(work / "data", n_samples=48, n_asvs=30, seed=7)
    trees = {"before": tree_of(args.before, work), "after": tree_of(args.after, work)}
    failed = False
    for name, extra in RUNS.items():
        for side, tree in trees.items():
            train(tree, data, work / f"{name}_{side}", extra)
        for checkpoint in ("best_model.pt", "last_model.pt"):
            a, b = (torch.load(work / f"{name}_{side}" / "checkpoints" / checkpoint, weights_only=False)
                    for side in trees)
            found = differences(a, b)
            unexpected = [d for d in found if "only on one side" not in d]
            failed |= bool(unexpected)
            print(f"{name:18s} {checkpoint:15s} {'identical' if not unexpected else 'DIFFERS'}"
                  + (f"  (fields on one side only: {', '.join(d.split(' ')[0] for d in found if d not in unexpected)})"
                     if len(found) > len(unexpected) else "")
                  + "".join(f"\n    {d}" for d in unexpected[:10]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
