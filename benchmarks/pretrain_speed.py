"""Pretraining speed through ``aam pretrain``'s own Trainer and DataLoader (#29 point 1), on CPU or GPU.

    python benchmarks/pretrain_speed.py                                   # the oral cohort and its tree
    python benchmarks/pretrain_speed.py --data ../shared/data --batch-size 256 --steps 30 --device cuda \\
        --precision bf16
    python benchmarks/pretrain_speed.py --table T.biom --unifrac-matrix D.h5 --preset small-data

Runs ``run_pretrain`` (the command's workflow, one epoch capped at ``--warmup + --steps`` optimizer steps) with
a probe attached to the Trainer as one more callback, and the forward, backward and optimizer step timed
(synchronised on CUDA, so the parts add up). Prints and writes (``--results FILE.json``):

- samples/s over the timed steps (steady state, after ``--warmup`` steps);
- FLOP per sample, counted by ``torch.utils.flop_counter.FlopCounterMode`` over one step's forward and backward;
- achieved TFLOP/s and its share of the device's peak: on CUDA the dense bf16/fp32 peak given by ``--peak-tflops``
  (default: the H100/H200 SXM figures), on CPU one core's fp32 matmul peak (measured here on a 2048^2 matmul)
  times the threads the run uses;
- the step-time breakdown: data (waiting for the loader and moving the batch), forward (with the losses),
  backward, optimizer (clipping, step, EMA, scheduler), other (the callbacks: progress, checkpoints);
- peak memory (CUDA: max allocated; CPU: the process's peak RSS).
Data are found relative to the repository (``../shared/data``) or given by ``--data``/``--table``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PEAK_TFLOPS = {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0}  # H100/H200 SXM dense peaks (fp32: non-tensor-core)


class ProbeDone(Exception):
    """The probe has its steps: end the run here."""


class Probe:
    """Timestamps of a fit: one row per optimizer step (data, forward, backward, optimizer, total), samples
    per batch, and the FLOP of one counted step."""

    def __init__(self, device: torch.device, warmup: int, steps: int, count_step: int):
        self.device, self.warmup, self.limit, self.count_step = device, warmup, warmup + steps, count_step
        self.parts: dict[str, float] = {}
        self.rows: list[dict[str, float]] = []
        self.samples: list[int] = []  # samples seen after each batch (cumulative)
        self.flops: int | None = None
        self.counter = None
        self.last = time.perf_counter()

    def sync(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def timed(self, name: str, function):
        def wrapper(*args, **kwargs):
            start = self.sync()
            result = function(*args, **kwargs)
            self.parts[name] = self.parts.get(name, 0.0) + self.sync() - start
            return result
        return wrapper


def attach(trainer, probe: Probe) -> None:
    """Time the trainer's forward, backward and optimizer step, count one step's FLOP, and stop after the
    probe's last step (as a stop signal would: the run ends cleanly)."""
    from torch.utils.flop_counter import FlopCounterMode

    from aam.training.callbacks import Callback

    forward, backward, step = trainer._forward, trainer.precision.backward, trainer._optimizer_step

    def counted_forward(*args, **kwargs):
        if len(probe.rows) == probe.count_step and probe.counter is None and trainer.forward_model.training:
            probe.counter = FlopCounterMode(display=False)
            probe.counter.__enter__()
        return forward(*args, **kwargs)

    def counted_backward(*args, **kwargs):
        result = backward(*args, **kwargs)
        if probe.counter is not None and probe.flops is None:
            probe.counter.__exit__(None, None, None)
            probe.flops = probe.counter.get_total_flops()
        return result

    trainer._forward = probe.timed("forward", counted_forward)
    trainer.precision.backward = probe.timed("backward", counted_backward)
    trainer._optimizer_step = probe.timed("optimizer", step)

    class Steps(Callback):
        def on_batch_end(self, trainer, end) -> None:
            now = probe.sync()
            total = now - probe.last
            probe.last = now
            measured = sum(probe.parts.values())
            probe.rows.append({"total": total, **probe.parts, "data_and_other": max(total - measured, 0.0)})
            probe.samples.append(end.n_samples)
            probe.parts = {}
            if len(probe.rows) >= probe.limit:
                raise ProbeDone

    trainer.callbacks.insert(0, Steps())


def matmul_peak_tflops(threads: int) -> float:
    """One core's fp32 matmul rate (a 2048^2 product, best of 5), times ``threads``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(5))
    torch.set_num_threads(previous)
    return 2 * 2048**3 / best / 1e12 * threads


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def run(args: argparse.Namespace) -> dict:
    from aam.training import trainer as trainer_module
    from aam.workflows.pretrain import run_pretrain
    from aam.workflows.run_config import PretrainRun

    data = Path(args.data) if args.data else ROOT.parent / "shared" / "data"
    table = args.table or str(data / "oral_dev.biom")
    targets = {"unifrac_matrix": args.unifrac_matrix} if args.unifrac_matrix else {
        "tree": args.tree or str(data / "oral.upgma.nwk")}
    device = torch.device(args.device)
    probe = Probe(device, args.warmup, args.steps, count_step=args.warmup)
    original_fit = trainer_module.Trainer.fit

    def fit(self, *fit_args, **fit_kwargs):
        attach(self, probe)
        return original_fit(self, *fit_args, **fit_kwargs)

    options = {"table": table, **targets, "output_dir": str(Path(args.work or tempfile.mkdtemp()) / "run"),
               "epochs": 1, "batch_size": args.batch_size, "device": args.device, "seed": 0, "verbose": False,
               "mixed_precision": None if args.precision == "fp32" else args.precision, "max_bp": args.max_bp,
               "size_groups": args.size_groups}
    if args.preset == "small-data":
        from aam.cli.presets import PRESETS

        options = {**PRESETS["small-data"]["pretrain"], **options, "batch_size": args.batch_size}
    options["size_groups"] = args.size_groups
    trainer_module.Trainer.fit = fit
    try:
        run_pretrain(PretrainRun.from_options(options, ignore_unknown=True))
    except ProbeDone:
        pass
    finally:
        trainer_module.Trainer.fit = original_fit
    timed = probe.rows[args.warmup:]
    if not timed:
        raise SystemExit("pretrain_speed: the epoch ended before the timed steps; lower --warmup/--steps")
    seconds = sum(r["total"] for r in timed)
    samples = probe.samples[-1] - probe.samples[args.warmup - 1] if args.warmup else probe.samples[-1]
    counted = probe.samples[args.warmup] - (probe.samples[args.warmup - 1] if args.warmup else 0)
    flop_per_sample = (probe.flops or 0) / max(counted, 1)
    achieved = flop_per_sample * samples / seconds / 1e12
    threads = torch.get_num_threads()
    peak = (args.peak_tflops or PEAK_TFLOPS[args.precision]) if device.type == "cuda" else matmul_peak_tflops(threads)
    parts = {k: sum(r.get(k, 0.0) for r in timed) / seconds for k in ("data_and_other", "forward", "backward",
                                                                        "optimizer")}
    memory = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
              else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"table": table, **targets, "device": str(device), "threads": threads, "precision": args.precision,
            "batch_size": args.batch_size, "preset": args.preset, "size_groups": args.size_groups,
            "timed_steps": len(timed),
            "samples_per_s": samples / seconds, "flop_per_sample": flop_per_sample, "achieved_tflops": achieved,
            "peak_tflops": peak, "share_of_peak": achieved / peak if peak else None, "step_share": parts,
            "peak_memory_mib": memory, "machine": f"{platform.machine()}, {platform.system()}, Python "
                                                  f"{platform.python_version()}, torch {torch.__version__}"}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="folder with oral_dev.biom and oral.upgma.nwk")
    parser.add_argument("--table", default=None)
    parser.add_argument("--tree", default=None)
    parser.add_argument("--unifrac-matrix", default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=sorted(PEAK_TFLOPS), default="fp32")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-bp", type=int, default=150)
    parser.add_argument("--preset", choices=["default", "small-data"], default="default")
    parser.add_argument("--size-groups", type=int, default=1, help="aam pretrain --size-groups")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--work", default=None)
    parser.add_argument("--results", default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    result = run(args)
    print(json.dumps(result, indent=2))
    if args.results:
        Path(args.results).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
