"""Pretraining at corpus scale: start-up time, steady samples/s and peak memory of `aam pretrain --tables`
on synthetic corpora of growing size, in one run.

    .venv/bin/python benchmarks/pretrain_scale.py [--sizes 2000,20000,100000,500000] [--tables 4]
        [--asvs-per-sample 130] [--steps 40] [--warmup 10] [--batch-size 32] [--out runs/pretrain_scale]
        [--pool N] [--on-disk] [--results benchmarks/results/pretrain_scale.json] [-- extra aam pretrain flags]

Each corpus is ``--tables`` BIOM 2.1 tables (HDF5) whose feature ids are the ASV sequences (100 nt), joined
by sequence, and one tree over every sequence. Sharing across samples is realistic in shape: the number of
distinct ASVs grows sublinearly with the samples (3,000 at 2k samples, x10^0.6 per x10 samples: about 83,000
at 500k), each sample draws ``--asvs-per-sample`` of them by a Zipf popularity (about 85 distinct remain, as in the
real corpus) (abundant ASVs are
shared by many samples, most are rare), with log-normal counts. Every table holds all of its corpus's
popularity ranks, so the tables overlap as studies of one environment do.

Per size, the command a user types runs in its own process (``python -m aam pretrain --tables MANIFEST --tree
TREE --preset small-data --progress-interval 0``, UniFrac of every batch from the tree). The parent reads its
progress lines as they come: start-up is the time from launch to the first optimizer step (reading and joining
the tables, tokenising the distinct sequences, the tree, the split, the first batch); steady samples/s is
measured between step ``--warmup`` and step ``--warmup + --steps`` from the lines' arrival times. Then it sends
SIGTERM (the run writes its resumable checkpoint and stops, as under a scheduler) and reads the process's peak
resident memory (``wait4``; it counts the pages of memory-mapped files too) and, sampled every 0.2 s, its peak
anonymous resident memory (``RssAnon``: what the run needs of the RAM; file pages can be dropped and re-read). Corpora are cached in ``--out``; building them is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SEQUENCE_LENGTH = 100
PROGRESS = re.compile(r"batch (\d+)/(\d+)\s+step (\d+)")
# Counts fall with popularity rank as rank^-0.5: chosen (session 18) so that a batch of 32 samples' 32 most
# abundant ASVs holds as many distinct ASVs as in the real corpus (../shared/data/corpus: hmp_v35 314, pgp 323,
# both joined 362; the corpora with counts independent of popularity held 520-671, sharing far less)
ABUNDANCE_OCCUPANCY = 0.5


# ----------------------------------------------------------------------------- corpus
def n_asvs_for(n_samples: int) -> int:
    """Distinct ASVs of a corpus: 3,000 at 2,000 samples, growing as samples^0.6."""
    return int(round(3000 * (n_samples / 2000) ** 0.6))


def random_sequences(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` distinct random sequences of SEQUENCE_LENGTH nucleotides."""
    letters = np.frombuffer(b"ACGT", dtype=np.uint8)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        block = letters[rng.integers(0, 4, size=(n - len(out), SEQUENCE_LENGTH))]
        for row in block:
            text = row.tobytes().decode()
            if text not in seen:
                seen.add(text)
                out.append(text)
    return out


def sample_counts(n_samples: int, n_asvs: int, per_sample: float, rng: np.random.Generator,
                  coupling: float = ABUNDANCE_OCCUPANCY):
    """[n_samples, n_asvs] CSR counts: each sample draws ~``per_sample`` ASVs by Zipf popularity; an ASV's
    log-normal count falls with its popularity rank as ``rank^-coupling`` (abundance-occupancy: the ASVs most
    samples carry are also the abundant ones; 0: counts independent of popularity, the corpora before session
    18)."""
    from scipy import sparse

    popularity = 1.0 / np.arange(1, n_asvs + 1) ** 1.1
    cdf = np.cumsum(popularity / popularity.sum())
    draws = np.clip(rng.poisson(per_sample, size=n_samples), 5, None)
    rows = np.repeat(np.arange(n_samples, dtype=np.int64), draws)
    columns = np.minimum(np.searchsorted(cdf, rng.random(rows.size)), n_asvs - 1)
    keys = np.unique(rows * n_asvs + columns)  # one entry per (sample, ASV)
    rows, columns = keys // n_asvs, keys % n_asvs
    # columns are popularity ranks; the location rises with the coupling so that rare ASVs keep counts of a few
    # reads instead of all rounding to 1 (ties would order a sample's ASVs by popularity, not by count)
    scale = np.exp(-coupling * np.log1p(columns.astype(np.float64)))
    counts = rng.lognormal(2.0 + 6.0 * coupling, 1.5, size=keys.size) * scale
    counts = np.maximum(1, np.round(counts)).astype(np.float64)
    return sparse.csr_matrix((counts, (rows, columns)), shape=(n_samples, n_asvs))


def balanced_newick(tips: list[str], rng: np.random.Generator) -> str:
    """A random balanced binary tree over ``tips`` (shuffled), branch lengths uniform in [0.01, 0.1]."""
    order = [tips[i] for i in rng.permutation(len(tips))]

    def build(lo: int, hi: int) -> str:
        length = f":{rng.uniform(0.01, 0.1):.4f}"
        if hi - lo == 1:
            return order[lo] + length
        mid = (lo + hi) // 2
        return f"({build(lo, mid)},{build(mid, hi)}){length}"

    return build(0, len(order)) + ";\n"


def build_corpus(folder: Path, n_samples: int, n_tables: int, per_sample: float, seed: int,
                 pool: int | None = None, coupling: float = ABUNDANCE_OCCUPANCY) -> dict:
    """Write the corpus (tables, manifest, tree) once; return its description."""
    info_path = folder / "corpus.json"
    if info_path.is_file():
        return json.loads(info_path.read_text())
    import biom
    import h5py

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_asvs = pool or n_asvs_for(n_samples)
    sequences = random_sequences(n_asvs, rng)
    counts = sample_counts(n_samples, n_asvs, per_sample, rng, coupling)
    bounds = np.linspace(0, n_samples, n_tables + 1).astype(int)
    lines = ["table"]
    for t, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        part = counts[a:b]
        used = np.flatnonzero(part.getnnz(axis=0))
        part = part[:, used].T.tocsr()  # observations x samples
        table = biom.Table(part, [sequences[i] for i in used], [f"study{t}_s{i}" for i in range(a, b)])
        with h5py.File(folder / f"study{t}.biom", "w") as handle:
            table.to_hdf5(handle, "aam benchmarks/pretrain_scale.py")
        lines.append(f"study{t}.biom")
    (folder / "manifest.tsv").write_text("\n".join(lines) + "\n")
    (folder / "tree.nwk").write_text(balanced_newick(sequences, rng))
    info = {"samples": n_samples, "tables": n_tables, "distinct_asvs": n_asvs, "nonzeros": int(counts.nnz),
            "asvs_per_sample": round(counts.nnz / n_samples, 1), "abundance_occupancy": coupling,
            "disk_mb": round(sum(p.stat().st_size for p in folder.iterdir()) / 2**20, 1)}
    info_path.write_text(json.dumps(info, indent=1))
    return info


# ----------------------------------------------------------------------------- measurement
def distinct_per_batch(table: Path, batch_size: int, token_limit: int, draws: int = 50) -> float:
    """Mean distinct ASVs in a random batch of a BIOM 2.1 ``table`` (each sample's ``token_limit`` most
    abundant, as the small-data preset reads them): the ASV encoder's work per step."""
    import h5py

    with h5py.File(table, "r") as handle:
        indptr = handle["sample/matrix/indptr"][:]
        indices, data = handle["sample/matrix/indices"][:], handle["sample/matrix/data"][:]
    rng = np.random.default_rng(0)
    sizes = []
    for _ in range(draws):
        picked = rng.choice(len(indptr) - 1, size=batch_size, replace=False)
        kept = [indices[indptr[i]:indptr[i + 1]][np.argsort(-data[indptr[i]:indptr[i + 1]],
                                                            kind="stable")[:token_limit]] for i in picked]
        sizes.append(len(np.unique(np.concatenate(kept))))
    return float(np.mean(sizes))


def measure(folder: Path, run_dir: Path, batch_size: int, warmup: int, steps: int, extra: list[str]) -> dict:
    """One `aam pretrain` process on the corpus in ``folder``: start-up s, steady samples/s, peak RSS."""
    command = [sys.executable, "-m", "aam", "pretrain", "--tables", str(folder / "manifest.tsv"),
               "--tree", str(folder / "tree.nwk"), "--max-bp", str(SEQUENCE_LENGTH), "--preset", "small-data",
               "--batch-size", str(batch_size), "--epochs", "1", "--progress-interval", "0", "--device", "cpu",
               "--seed", "0", "--output-dir", str(run_dir), *extra]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               cwd=REPO)
    arrivals: dict[int, float] = {}
    tail: list[str] = []
    enough = threading.Event()

    def read() -> None:
        for line in process.stderr:
            tail.append(line)
            del tail[:-20]
            found = PROGRESS.search(line)
            if found:
                arrivals.setdefault(int(found.group(3)), time.perf_counter())
                if int(found.group(3)) >= warmup + steps:
                    enough.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    anonymous = 0  # peak of the process's anonymous resident memory (RssAnon): what it needs of the RAM
    while not enough.is_set() and process.poll() is None:
        anonymous = max(anonymous, _rss_anon_kb(process.pid))
        enough.wait(0.2)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # the run saves its checkpoint and exits
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    reader.join(timeout=10)
    if warmup + steps not in arrivals or 1 not in arrivals:
        raise RuntimeError(f"the run stopped early (exit {process.returncode}):\n{''.join(tail)}")
    first, a, b = arrivals[1], arrivals[warmup], arrivals[warmup + steps]
    return {"startup_s": round(first - started, 1), "samples_per_s": round(steps * batch_size / (b - a), 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "peak_anon_mb": round(anonymous / 1024, 1),
            "exit_code": process.returncode}


def _rss_anon_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            return next((int(line.split()[1]) for line in status if line.startswith("RssAnon:")), 0)
    except OSError:
        return 0


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1:]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="2000,20000,100000,500000", help="comma list of corpus sizes")
    parser.add_argument("--tables", type=int, default=4, help="tables per corpus")
    parser.add_argument("--asvs-per-sample", type=float, default=130.0,
                        help="ASV draws per sample (repeats merge: about 85 distinct ASVs per sample remain, as in the real corpus of ../shared/data)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=10, help="optimizer steps before timing")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps timed")
    parser.add_argument("--pool", type=int, default=None,
                        help="distinct ASVs of every corpus (default: 3,000 at 2k samples, growing as samples^0.6); "
                             "a fixed pool keeps the batches' content alike across sizes, so only the corpus grows")
    parser.add_argument("--on-disk", action="store_true",
                        help="pretrain with --on-disk (the union's arrays built in OUT/arrays_<corpus>, memory-mapped); "
                             "start-up includes building them")
    parser.add_argument("--abundance-occupancy", type=float, default=ABUNDANCE_OCCUPANCY,
                        help="how fast an ASV's counts fall with its popularity rank (rank^-x); the default matches "
                             "the real corpus's distinct ASVs per batch (--real-tables); 0: the pre-session-18 corpora")
    parser.add_argument("--real-tables", default="",
                        help="comma list of real BIOM 2.1 tables whose distinct ASVs per batch are printed beside "
                             "the corpora's (e.g. ../shared/data/corpus/hmp_v35.biom)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "pretrain_scale", help="corpora and runs")
    parser.add_argument("--results", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        pool = f"_p{args.pool}" if args.pool else ""
        coupled = f"_c{args.abundance_occupancy:g}" if args.abundance_occupancy else ""
        folder = args.out / f"corpus_{size}_t{args.tables}_a{args.asvs_per_sample:g}{pool}{coupled}_s{args.seed}"
        built = time.perf_counter()
        info = build_corpus(folder, size, args.tables, args.asvs_per_sample, args.seed, args.pool,
                            args.abundance_occupancy)
        print(f"corpus of {size} samples ready ({time.perf_counter() - built:.0f} s): {info}", flush=True)
        run_dir = args.out / f"run_{folder.name[7:]}"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        arrays = args.out / f"arrays_{folder.name[7:]}"
        if arrays.exists():
            shutil.rmtree(arrays)
        flags = extra + (["--on-disk", str(arrays)] if args.on_disk else [])
        row = info | measure(folder, run_dir, args.batch_size, args.warmup, args.steps, flags)
        row["on_disk"] = args.on_disk
        row["distinct_asvs_per_batch"] = round(distinct_per_batch(folder / "study0.biom", args.batch_size, 32), 1)
        row["rss_per_million_nonzeros_mb"] = round(row["peak_rss_mb"] / (row["nonzeros"] / 1e6), 1)
        print(json.dumps(row), flush=True)
        rows.append(row)
    base = rows[0]["samples_per_s"]
    print("\n| samples | tables | distinct ASVs | non-zeros | distinct ASVs per batch | start-up s | samples/s | "
          "vs first | peak RSS MB | peak anonymous MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['samples']:,} | {r['tables']} | {r['distinct_asvs']:,} | {r['nonzeros']:,} | "
              f"{r['distinct_asvs_per_batch']:,.0f} | {r['startup_s']} | {r['samples_per_s']} | "
              f"{r['samples_per_s'] / base:.2f} | {r['peak_rss_mb']:,.0f} | {r['peak_anon_mb']:,.0f} |")
    real = {path: round(distinct_per_batch(Path(path), args.batch_size, 32, draws=200), 1)
            for path in (p.strip() for p in args.real_tables.split(",")) if path}
    for path, distinct in real.items():
        print(f"real table {path}: {distinct:.0f} distinct ASVs per batch of {args.batch_size}")
    if args.results is not None:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps({
            "command": "python benchmarks/pretrain_scale.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
            "rows": rows, "real_distinct_asvs_per_batch": real}, indent=1))


if __name__ == "__main__":
    main()
