"""Speed and exactness of aam's UniFrac engine against scikit-bio on the oral benchmark data.

    .venv/bin/python benchmarks/unifrac_speed.py [--samples N] [--skbio-samples N] [--metrics ...] [--threads N]

For each metric: our engine on the first ``--samples`` samples, then scikit-bio's ``beta_diversity`` and our
engine again on the first ``--skbio-samples`` (default: the same samples), in one process; reports the
largest absolute difference, both wall times and their ratio, the peak RSS of our runs, and an extrapolation to
30,000 samples (time ~ N^2; memory = features [N, K] + one block + the [N, N] output).
"""

from __future__ import annotations

import argparse
import platform
import resource
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
from skbio import TreeNode
from skbio.diversity import beta_diversity

from aam.data.biom_table import load_table
from aam.unifrac import UniFracEngine

DATA = str(Path(__file__).resolve().parents[1].parent / "shared" / "data")  # ../shared/data
SKBIO = {
    "unweighted": ("unweighted_unifrac", {}),
    "weighted-normalized": ("weighted_unifrac", {"normalized": True}),
    "weighted-unnormalized": ("weighted_unifrac", {}),
}
TARGET_SAMPLES = 30_000


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration, subprocess.CalledProcessError):
        return platform.processor() or "unknown"


def run_ours(tree: TreeNode, asv_ids: list[str], counts, metric: str, block_size: int):
    """Tree indexing + features, then the full matrix; returns (matrix, setup seconds, matrix seconds, prepared)."""
    start = time.perf_counter()
    prepared = UniFracEngine(tree, asv_ids).prepare(counts, metric)
    setup = time.perf_counter() - start
    distances = prepared.pairwise(block_size=block_size)
    return distances, setup, time.perf_counter() - start - setup, prepared


def feature_bytes(prepared) -> int:
    kernel = prepared.kernel
    if hasattr(kernel, "presence"):
        return kernel.presence.data.nbytes + kernel.presence.indices.nbytes + kernel.presence.indptr.nbytes
    return kernel.dense.nbytes + kernel.sparse.data.nbytes + kernel.sparse.indices.nbytes


def extrapolate(n: int, setup: float, seconds: float, prepared, block_size: int) -> str:
    """Setup grows like N, the matrix like N^2."""
    scale = TARGET_SAMPLES / n
    features_gib = feature_bytes(prepared) * scale / 2**30
    block_gib = 3 * block_size * TARGET_SAMPLES * 8 / 2**30  # a block row and its temporaries
    output_gib = TARGET_SAMPLES**2 * 8 / 2**30
    return (f"extrapolated to {TARGET_SAMPLES:,} samples: {(setup * scale + seconds * scale**2) / 60:.1f} min, memory "
            f"{features_gib:.2f} GiB features + {block_gib:.2f} GiB block + {output_gib:.1f} GiB output "
            f"(float64; half with --float32)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=None, help="first N samples (default: all)")
    parser.add_argument("--skbio-samples", type=int, default=None,
                        help="samples for the scikit-bio comparison (default: --samples)")
    parser.add_argument("--metrics", nargs="+", default=["unweighted", "weighted-normalized"],
                        choices=list(SKBIO))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--block-size", type=int, default=1024)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    table = load_table(f"{DATA}/oral_dev.biom")
    asv_ids = [str(i) for i in table.ids(axis="observation")]
    counts = table.matrix_data.T.tocsr()[: args.samples]  # [N, T]
    n = counts.shape[0]
    n_skbio = min(args.skbio_samples or n, n)
    tree = TreeNode.read(f"{DATA}/oral.upgma.nwk")
    print(f"machine: {cpu_model()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print(f"data: {n} samples x {len(asv_ids)} ASVs; scikit-bio comparison on the first {n_skbio}")
    print(f"peak RSS after loading: {peak_rss_mib():.0f} MiB")

    for metric in args.metrics:
        ours, setup, seconds, prepared = run_ours(tree, asv_ids, counts, metric, args.block_size)
        print(f"\n[{metric}] ours, {n} samples: {setup + seconds:.2f} s ({setup:.2f} s tree + features, "
              f"{seconds:.2f} s matrix), peak RSS {peak_rss_mib():.0f} MiB")
        print(f"[{metric}] {extrapolate(n, setup, seconds, prepared, args.block_size)}")
        subset = counts[:n_skbio]
        ours_subset, setup, seconds, _ = run_ours(tree, asv_ids, subset, metric, args.block_size)
        ours_seconds = setup + seconds
        name, options = SKBIO[metric]
        start = time.perf_counter()
        reference = beta_diversity(name, subset.toarray().astype(np.int64), taxa=asv_ids, tree=tree,
                                   **options).data
        skbio_seconds = time.perf_counter() - start
        difference = np.abs(ours_subset - reference).max()
        consistent = np.abs(ours[:n_skbio, :n_skbio] - ours_subset).max()
        print(f"[{metric}] {n_skbio} samples: scikit-bio {skbio_seconds:.1f} s, ours {ours_subset.shape[0]} "
              f"samples {ours_seconds:.2f} s -> {skbio_seconds / ours_seconds:.0f}x faster; max |diff| "
              f"{difference:.2e} ({'ok' if difference <= 1e-9 else 'FAIL'}); subset vs full {consistent:.1e}")


if __name__ == "__main__":
    main()
