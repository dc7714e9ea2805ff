"""Training and inference throughput (samples/s) and peak memory: AAM's batch path against a per-slot baseline.

    .venv/bin/python benchmarks/throughput.py [--quick] [--configs small reference] [--threads 1]
                                              [--thread-study 1 2] [--device cpu|cuda]

Two implementations of the same model (same config, same initial weights, same samples), on the oral data:

- ``aam``: the project's path. `BatchCollator` pads a batch to its longest sample and hands the model each
  distinct ASV of the batch once (``tokens`` [U, L], trimmed to the longest sequence), gathered back into the
  sample slots.
- ``baseline``: the reference tool's approach. Every sample is padded to exactly ``token_limit`` slots and every
  slot's sequence is encoded separately (``tokens`` [B * token_limit, max_bp + 1], ``asv_index`` = arange): no
  de-duplication, no dynamic padding.

Modes: ``pretrain`` (SequenceEncoder, UniFrac + masked-nucleotide loss, AdamW step), ``train`` (SequencePredictor,
target + count loss), ``frozen`` (SequencePredictor with a frozen base; ``aam`` reads the ASV embedding cache
built once by `encode_all_asvs`, the baseline re-encodes every slot under no_grad), ``predict`` (eval mode,
no_grad). Each (config, mode, path, threads) runs in a fresh subprocess so its memory figure is its own: on CPU
the peak RSS of the worker minus its RSS just before the first step (model built, batches collated); on CUDA
``torch.cuda.max_memory_allocated``. Batches are collated before timing (collation time is reported apart);
the timed region is forward + loss + backward + optimizer step. One warm-up step is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"  # ../shared/data
MODES = ("pretrain", "train", "frozen", "predict")
PATHS = ("aam", "baseline")


@dataclass(frozen=True)
class BenchConfig:
    """One model size and its run lengths."""

    name: str
    dim: int
    heads: int
    layers: int
    token_limit: int
    max_bp: int
    batch: int
    steps: int  # timed steps (after one warm-up step)
    baseline_batch: int  # the baseline's batch in training modes (memory); its per-sample cost does not depend on it
    baseline_predict_batch: int
    baseline_steps: int
    baseline_train_slots: int | None = None  # slots per sample of the baseline in training modes, if not token_limit


CONFIGS = {
    # the reference tool's defaults. The baseline's batch is cut to 1 (training) and 2 (predict), and in training
    # modes it pads to 256 slots, not 1,024: one sample of 1,024 x 151 positions at D=128 needs ~15 GiB of
    # activations. Its per-slot cost is constant, so its figure at 1,024 slots is extrapolated (x 256/1024).
    "reference": BenchConfig("reference", 128, 4, 4, 1024, 150, 8, 3, 1, 2, 1, 256),
    # the reference tool's small CPU configuration (4.55 samples/s pretrain, 4.4 train, 13.7 predict, ~5 GB)
    "small": BenchConfig("small", 32, 4, 2, 256, 100, 8, 5, 8, 8, 3),
}
QUICK = {
    "reference": BenchConfig("reference", 128, 4, 4, 1024, 150, 2, 1, 1, 1, 1, 256),
    "small": BenchConfig("small", 32, 4, 2, 256, 100, 8, 1, 8, 8, 1),
}


# --------------------------------------------------------------------------- machine facts
def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration, subprocess.CalledProcessError):
        return platform.processor() or "unknown"


def current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- inputs (parent process)
def prepare_inputs(config: BenchConfig, n_batches: int, seed: int, out: Path) -> Path:
    """Pickle the table's tokens, the batches' `SampleDataset` items, UniFrac blocks and targets for workers.

    Workers then load a few MiB instead of the table and tree, so their RSS high-water mark before the first
    step is the model's and not the BIOM reader's.
    """
    from aam.data.dataset import SampleDataset
    from aam.data.metadata import read_metadata
    from aam.workflows.inputs import load_amplicon_data, load_distance_targets

    data = load_amplicon_data(DATA / "oral_dev.biom", max_bp=config.max_bp)
    ages = read_metadata(DATA / "oral_dev_metadata.tsv")["age"].astype(float)
    age = ages.reindex(data.sample_ids).to_numpy(np.float32)
    targets = (age - np.nanmean(age)) / np.nanstd(age)
    distances = load_distance_targets(data, unifrac_matrix=None, tree=str(DATA / "oral.upgma.nwk"),
                                      metric="unifrac")
    rng = np.random.default_rng(seed)
    rows = rng.choice(data.n_samples, size=n_batches * config.batch, replace=False)
    dataset = SampleDataset(data, rows, targets[rows], token_limit=config.token_limit, asv_sampling="abundance",
                            seed=seed)
    batches = []
    for b in range(n_batches):
        items = [dataset[i] for i in range(b * config.batch, (b + 1) * config.batch)]
        sample_index = np.array([item["sample_index"] for item in items])
        batches.append({"items": items, "distances": distances.lookup(sample_index).astype(np.float32)})
    path = out / f"inputs_{config.name}.pkl"
    with open(path, "wb") as f:
        pickle.dump({"tokens": data.tokens, "sample_ids": data.sample_ids, "batches": batches}, f)
    return path


# --------------------------------------------------------------------------- batches (worker)
def aam_batch(items, distances, tokens, sample_ids):
    """The project's batch: distinct ASVs once, padded to the longest sample."""
    import torch

    from aam.data.dataset import collate_samples

    batch = collate_samples(items, tokens, sample_ids)
    batch.targets = torch.tensor([item["target"] for item in items], dtype=torch.float32)
    batch.distances = torch.from_numpy(distances)
    return batch


def baseline_batch(items, distances, tokens, sample_ids, token_limit: int):
    """The per-slot batch: every sample padded to ``token_limit`` slots, each slot's sequence its own row.

    tokens [B * token_limit, max_bp + 1] (all-PAD rows on padding slots), asv_index [B, token_limit] = arange.
    """
    import torch

    from aam.data.dataset import Batch

    n = len(items)
    slot_tokens = np.zeros((n * token_limit, tokens.shape[1]), dtype=np.int64)
    counts = np.zeros((n, token_limit), dtype=np.float32)
    mask = np.zeros((n, token_limit), dtype=bool)
    for b, item in enumerate(items):
        k = len(item["asv_index"])
        slot_tokens[b * token_limit:b * token_limit + k] = tokens[item["asv_index"]]
        counts[b, :k] = item["counts"]
        mask[b, :k] = True
    sample_index = np.array([item["sample_index"] for item in items], dtype=np.int64)
    return Batch(tokens=torch.from_numpy(slot_tokens),
                 asv_index=torch.arange(n * token_limit).view(n, token_limit),
                 asv_mask=torch.from_numpy(mask), counts=torch.from_numpy(counts),
                 sample_index=torch.from_numpy(sample_index), sample_ids=[sample_ids[i] for i in sample_index],
                 targets=torch.tensor([item["target"] for item in items], dtype=torch.float32),
                 distances=torch.from_numpy(distances))


# --------------------------------------------------------------------------- one measurement (worker)
def build_model(config: BenchConfig, mode: str):
    import torch

    from aam.models import EncoderConfig, PredictorConfig, SequenceEncoder, SequencePredictor

    encoder = EncoderConfig(max_bp=config.max_bp, embedding_dim=config.dim, attention_heads=config.heads,
                            attention_layers=config.layers, token_limit=config.token_limit)
    torch.manual_seed(0)  # same weights in every worker, for both paths
    if mode == "pretrain":
        return SequenceEncoder(encoder)
    return SequencePredictor(PredictorConfig(encoder=encoder, freeze_base=mode == "frozen"))


def build_loss(mode: str):
    from aam.objectives.losses import MultiTaskLoss, build_target_loss

    if mode == "pretrain":  # UniFrac + masked nucleotides
        return MultiTaskLoss(target_penalty=0.0, penalty=1.0, nuc_penalty=1.0, count_penalty=0.0)
    return MultiTaskLoss(target_penalty=1.0, penalty=0.0, nuc_penalty=0.0, count_penalty=1.0,
                         target_loss=build_target_loss("huber"))


def run_worker(spec: dict) -> dict:
    """Time ``spec['steps']`` steps after one warm-up; returns the figures as a dict."""
    if spec.get("memory_cap_gib"):  # address-space cap: a run that would swamp the shared machine fails instead
        cap = int(spec["memory_cap_gib"] * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    import torch

    torch.set_num_threads(spec["threads"])
    from aam.training.asv_cache import encode_all_asvs
    from aam.training.trainer import forward_batch

    config = BenchConfig(**spec["config"])
    mode, path, device = spec["mode"], spec["path"], torch.device(spec["device"])
    with open(spec["inputs"], "rb") as f:
        inputs = pickle.load(f)
    tokens, sample_ids = inputs["tokens"], inputs["sample_ids"]
    batch_size = spec["batch"]
    items = [item for b in inputs["batches"] for item in b["items"]]
    n_batches = spec["steps"] + 1
    aam_batch(items[:batch_size], _distance_block(inputs["batches"], items[:batch_size]), tokens, sample_ids)  # imports
    start = time.perf_counter()
    batches = []
    for b in range(n_batches):
        chunk = items[b * batch_size:(b + 1) * batch_size]
        distances = _distance_block(inputs["batches"], chunk)
        if path == "aam":
            batches.append(aam_batch(chunk, distances, tokens, sample_ids))
        else:
            batches.append(baseline_batch(chunk, distances, tokens, sample_ids, spec.get("slots") or config.token_limit))
    collate_ms = (time.perf_counter() - start) / n_batches * 1e3
    batches = [batch.to(device) for batch in batches]

    model = build_model(config, mode).to(device)
    if spec.get("attention_dropout") is not None:  # probe: dropout on attention probabilities only
        from aam.models.layers import MultiHeadAttention

        for module in model.modules():
            if isinstance(module, MultiHeadAttention):
                module.dropout = spec["attention_dropout"]
    loss_fn = build_loss(mode)
    training = mode != "predict"
    model.train(training)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4) if training else None
    cache = cache_s = None
    if mode == "frozen" and path == "aam":
        start = time.perf_counter()
        cache = encode_all_asvs(model, tokens, device)  # [N_asvs, D], once per run
        cache_s = time.perf_counter() - start

    def step(batch) -> None:
        kwargs = {"asv_embeddings": cache[batch.asv_ids]} if cache is not None else {}
        if not training:
            with torch.no_grad():
                forward_batch(model, batch, **kwargs)
            return
        outputs = forward_batch(model, batch, mask_nucleotides=mode == "pretrain", **kwargs)
        loss_fn(outputs, batch)["total"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base_mem = torch.cuda.memory_allocated() / 2**20
    rss_before, hw_before = current_rss_mib(), peak_rss_mib()
    step(batches[0])  # warm-up
    sync()
    start = time.perf_counter()
    for batch in batches[1:]:
        step(batch)
    sync()
    elapsed = time.perf_counter() - start
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20 - base_mem
    else:
        peak = peak_rss_mib() - rss_before
    result = {
        "config": config.name, "mode": mode, "path": path, "threads": torch.get_num_threads(), "batch": batch_size,
        "steps": spec["steps"], "seconds": elapsed, "samples_per_s": spec["steps"] * batch_size / elapsed,
        "peak_mib": peak, "hw_before_mib": hw_before, "rss_before_mib": rss_before, "collate_ms": collate_ms,
        "encoded_rows": float(np.mean([len(b.tokens) for b in batches])),
        "width": float(np.mean([b.tokens.shape[1] for b in batches])),
        "slots": float(np.mean([b.asv_index.shape[1] for b in batches])),
        "cache_s": cache_s, "slot_scale": config.token_limit / float(np.mean([b.asv_index.shape[1] for b in batches]))
        if path == "baseline" else 1.0,
    }
    if mode == "predict":  # the warm-up batch's predictions, to check both paths compute the same thing
        with torch.no_grad():
            values = forward_batch(model, batches[0])["prediction"].float().cpu().reshape(-1).tolist()
        result["prediction"] = dict(zip(batches[0].sample_ids, values))
    return result


def _distance_block(all_batches, chunk) -> np.ndarray:
    """UniFrac [b, b] block for ``chunk`` (a slice of the prepared batches' items, possibly a smaller batch)."""
    lookup = {}
    for prepared in all_batches:
        rows = [item["sample_index"] for item in prepared["items"]]
        for i, r in enumerate(rows):
            for j, c in enumerate(rows):
                lookup[(r, c)] = prepared["distances"][i, j]
    rows = [item["sample_index"] for item in chunk]
    return np.array([[lookup.get((r, c), 0.0) for c in rows] for r in rows], dtype=np.float32)


# --------------------------------------------------------------------------- orchestration (parent)
def spawn(spec: dict) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]), MKL_NUM_THREADS=str(spec["threads"]))
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True,
                          text=True, env=env)
    if proc.returncode != 0:
        return {**{k: spec[k] for k in ("mode", "path", "threads", "batch", "steps")}, "config": spec["config"]["name"],
                "error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def plan(args) -> list[dict]:
    """Every worker run: both paths for each config and mode, plus aam at the other thread counts (small)."""
    configs = QUICK if args.quick else CONFIGS
    runs = []
    for name in args.configs:
        config = configs[name]
        for mode in args.modes:
            for path in PATHS:
                base = path == "baseline"
                batch = config.batch
                if base:
                    batch = config.baseline_predict_batch if mode == "predict" else config.baseline_batch
                steps = config.baseline_steps if base else config.steps
                slots = config.baseline_train_slots if base and mode in ("pretrain", "train") else None
                runs.append(dict(config=config.__dict__, mode=mode, path=path, threads=args.threads, batch=batch,
                                 steps=steps, device=args.device, memory_cap_gib=args.memory_cap_gib, slots=slots,
                                 attention_dropout=args.attention_dropout))
            if name == "small":
                for threads in args.thread_study:
                    if threads != args.threads and mode != "frozen":
                        runs.append(dict(config=config.__dict__, mode=mode, path="aam", threads=threads,
                                         batch=config.batch, steps=config.steps, device=args.device,
                                         memory_cap_gib=args.memory_cap_gib))
    return runs


def print_table(results: list[dict]) -> None:
    print("| config | mode | path | threads | batch | timed steps | samples/s | aam / baseline | "
          "peak memory (MiB) | rows encoded / batch | slots / sample | collate ms |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    key = {(r["config"], r["mode"], r["path"], r["threads"]): r for r in results}
    for r in results:
        if "error" in r:
            print(f"| {r['config']} | {r['mode']} | {r['path']} | {r['threads']} | {r['batch']} | {r['steps']} | "
                  f"failed: {r['error']} | | | | | |")
            continue
        ratio = ""
        other = key.get((r["config"], r["mode"], "baseline", r["threads"]))
        if r["path"] == "aam" and other is not None and "error" not in other:
            estimated = other["slot_scale"] != 1.0
            ratio = f"{'~' if estimated else ''}{r['samples_per_s'] * other['slot_scale'] / other['samples_per_s']:.1f}x"
        rate, peak = f"{r['samples_per_s']:.2f}", f"{r['peak_mib']:.0f}"
        if r["slot_scale"] != 1.0:  # measured at fewer slots: add the per-slot extrapolation to token_limit
            rate += f" (~{r['samples_per_s'] / r['slot_scale']:.3f} at {r['slots'] * r['slot_scale']:.0f} slots)"
            peak += f" (~{r['peak_mib'] * r['slot_scale']:.0f})"
        print(f"| {r['config']} | {r['mode']} | {r['path']} | {r['threads']} | {r['batch']} | {r['steps']} | "
              f"{rate} | {ratio} | {peak} | {r['encoded_rows']:.0f} x "
              f"{r['width']:.0f} | {r['slots']:.0f} | {r['collate_ms']:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="smoke run: one timed step, small batches")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=["small", "reference"])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads of the main comparison")
    parser.add_argument("--thread-study", type=int, nargs="*", default=[1, 2],
                        help="thread counts also measured for the aam path at the small config")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--attention-dropout", type=float, default=None,
                        help="override the dropout on attention probabilities (default: the model's, 0.1)")
    parser.add_argument("--memory-cap-gib", type=float, default=12.0,
                        help="address-space limit of each CPU worker (a run above it is reported as failed)")
    parser.add_argument("--json", help="also write every figure to this JSON file")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return

    import torch

    configs = QUICK if args.quick else CONFIGS
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, device {args.device}")
    results = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        inputs = {}
        for name in args.configs:
            config = configs[name]
            inputs[name] = str(prepare_inputs(config, max(config.steps, config.baseline_steps) + 1, args.seed,
                                              Path(tmp)))
        for spec in plan(args):
            spec["inputs"] = inputs[spec["config"]["name"]]
            result = spawn(spec)
            results.append(result)
            summary = (result.get("error") or f"{result['samples_per_s']:.2f} samples/s, "
                       f"peak {result['peak_mib']:.0f} MiB")
            print(f"  {spec['config']['name']:9s} {spec['mode']:8s} {spec['path']:8s} threads={spec['threads']} "
                  f"batch={spec['batch']}: {summary}", flush=True)
    print(f"\ntotal {time.perf_counter() - started:.0f} s\n")
    print_table(results)
    for r in results:
        if r.get("cache_s") is not None:
            print(f"\n{r['config']}: ASV embedding cache of all 4,521 ASVs built in {r['cache_s']:.2f} s "
                  f"(threads={r['threads']}, once per run, not in the frozen figure)")
    for name in args.configs:
        pair = [r for r in results if r["config"] == name and r["mode"] == "predict" and "prediction" in r
                and r["threads"] == args.threads]
        if len(pair) == 2:
            common = sorted(set(pair[0]["prediction"]) & set(pair[1]["prediction"]))
            diff = max(abs(pair[0]["prediction"][s] - pair[1]["prediction"][s]) for s in common)
            print(f"{name}: predict, aam vs baseline on the same {len(common)} samples: max abs difference "
                  f"{diff:.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
