"""One script for a machine with a CUDA or ROCm GPU: numerics, compilation, attention kernels, memory, speed,
and 2-GPU DDP/FSDP. Writes ``gpu_check.json`` and ``gpu_check.md`` (a table for BENCHMARKS.md).

    .venv/bin/python benchmarks/gpu_check.py --output DIR [--device cuda] [--quick] [--only a,b] [--data DIR]

Checks, each on random 150-nt ASVs (no data needed), the model built from the same seed every time:

- ``precision``: the training loss (UniFrac + masked nucleotides + target) of one batch under bf16 and fp16
  autocast against fp32, from the same weights: relative difference.
- ``compile``: a few training steps of batches with different shapes through ``--compile-model``
  (inductor on a GPU): graphs compiled, graph breaks, recompilations.
- ``attention``: the kernel of every ``--attn-implementation`` alone (no MATH fallback), with and without a
  padding mask, against the math kernel; one expected to run that did not fails the check and the script
  exits 1 (FlashAttention is expected for bf16/fp16 without a mask, the others everywhere).
- ``syncs``: host synchronisations of a pretraining epoch (the Trainer's loop, UniFrac + masked nucleotides)
  of 2 and of 6 batches, counted by Tensor method and, on CUDA, by ``torch.cuda.set_sync_debug_mode``: a step
  that adds any fails the check (the script exits 1).
- ``memory``: peak memory of one training step at batches of 16, 64 and 256 samples (fp32 and bf16 with
  ``--asv-chunk-size``).
- ``speed``: training samples/s at fp32, TF32, bf16 and fp16, at the small and the default model size.
- ``pretrain_speed``: ``benchmarks/pretrain_speed.py`` through aam pretrain's own Trainer and DataLoader, at
  the default size, bf16, batches of 256 (issue #29's goal), on the oral cohort (``--data``) or a synthetic
  table and tree.
- ``size_groups``: the same as ``pretrain_speed`` with ``--size-groups 4`` (the sample-level stacks on four
  groups of like-sized samples per batch): compare its samples/s with ``pretrain_speed``'s.
- ``multi_gpu``: with two or more GPUs, ``torchrun --nproc_per_node 2 -m aam.cli train`` with
  ``--distributed`` and with ``--fsdp`` on a synthetic dataset: exit status and samples/s from its log.

Each check has a budget in seconds (``BUDGETS``, 480 s in all: the script fits in 8 minutes of device time;
``--budgets name=s`` overrides; with two GPUs give ``multi_gpu=150``); on a GPU each runs in its own process and is stopped at its budget
(``--isolate``), so one slow or hung check costs its budget and no more. ``--only`` selects checks.

On CPU (``--device cpu --quick``) every check runs at toy sizes (compile with the ``eager`` backend, memory
as bytes kept for backward): the test suite runs it so the script cannot rot between GPU sessions.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aam.data.dataset import AmpliconData, BatchCollator, MatrixDistanceLookup, SampleDataset  # noqa: E402
from aam.data.vocabulary import START, A  # noqa: E402
from aam.models import EncoderConfig, PredictorConfig, SequencePredictor  # noqa: E402
from aam.models.layers import ATTENTION_BACKENDS, attention_backend  # noqa: E402
from aam.objectives.losses import MultiTaskLoss, build_target_loss  # noqa: E402
from aam.training.trainer import Trainer, TrainerConfig  # noqa: E402

SIZES = {"small": dict(embedding_dim=64, attention_heads=4, attention_layers=2),
         "default": dict(embedding_dim=128, attention_heads=4, attention_layers=4)}
TOY = dict(embedding_dim=16, attention_heads=2, attention_layers=1)


def _problem(n_samples: int, n_asvs: int, asvs_per_sample: int, max_bp: int, seed: int = 0):
    """Random samples over random ASVs, random UniFrac-like distances and targets, collated on demand."""
    rng = np.random.default_rng(seed)
    counts = np.zeros((n_samples, n_asvs), dtype=np.float32)
    for row in counts:
        row[rng.choice(n_asvs, size=min(asvs_per_sample, n_asvs), replace=False)] = rng.integers(1, 50, size=min(
            asvs_per_sample, n_asvs))
    tokens = rng.integers(A, A + 4, size=(n_asvs, max_bp + 1)).astype(np.uint8)
    tokens[:, 0] = START
    data = AmpliconData(counts, tokens, [f"s{i}" for i in range(n_samples)], [f"a{j}" for j in range(n_asvs)])
    matrix = rng.uniform(0.2, 0.9, size=(n_samples, n_samples))
    matrix = ((matrix + matrix.T) / 2).astype(np.float32)
    np.fill_diagonal(matrix, 0)
    dataset = SampleDataset(data, targets=rng.normal(size=n_samples).astype(np.float32),
                            token_limit=asvs_per_sample, asv_sampling="abundance", seed=seed)
    collator = BatchCollator(data.tokens, data.sample_ids, MatrixDistanceLookup(matrix))
    return dataset, collator


def _batches(dataset, collator, sizes: list[int]) -> list:
    out, start = [], 0
    for size in sizes:
        rows = [(start + i) % len(dataset) for i in range(size)]
        out.append(collator([dataset[i] for i in rows]))
        start += size
    return out


def _trainer(size: dict, device: torch.device, max_bp: int, **settings) -> Trainer:
    torch.manual_seed(0)
    model = SequencePredictor(PredictorConfig(encoder=EncoderConfig(max_bp=max_bp, dropout=0.0, **size)))
    loss = MultiTaskLoss(target_penalty=1.0, penalty=1.0, nuc_penalty=1.0, count_penalty=1.0,
                         target_loss=build_target_loss("mse"))
    settings = {"progress": False, "scheduler": "cosine", "epochs": 1, **settings}
    return Trainer(model, loss, TrainerConfig(**settings), device=device)


def _step(trainer: Trainer, batch) -> float:
    """One training step (forward, loss, backward, optimizer step); the loss."""
    batch = batch.to(trainer.device)
    trainer.forward_model.train()
    with trainer._autocast():
        losses = trainer._training_losses(trainer._forward(trainer.forward_model, batch), batch)
    trainer.precision.backward(losses["total"])
    trainer.precision.step(trainer.optimizer)
    trainer.optimizer.zero_grad(set_to_none=True)
    return float(losses["total"].detach().float())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def check_precision(device, size, max_bp, batch) -> dict[str, Any]:
    """Each loss at initialisation under fp32, bf16 and fp16 autocast, same weights and masks: the total's
    relative difference from fp32, and each part's (``by_loss``: the pretraining losses, unifrac and
    nucleotide, against the fine-tuning heads' target and count)."""
    parts: dict[str, dict[str, float]] = {}
    for name in ("fp32", "bf16", "fp16"):
        trainer = _trainer(size, device, max_bp, mixed_precision=None if name == "fp32" else name)
        torch.manual_seed(1)  # the same nucleotide masks
        with torch.no_grad(), trainer._autocast():
            b = batch.to(device)
            losses = trainer._training_losses(trainer._forward(trainer.model, b), b)
            parts[name] = {k: float(v.float()) for k, v in losses.items() if torch.is_tensor(v) and v.numel() == 1}
    relative = {k: {low: abs(parts[low][k] - value) / max(abs(value), 1e-12) for low in ("bf16", "fp16")}
                for k, value in parts["fp32"].items()}
    return {"loss": {name: values["total"] for name, values in parts.items()},
            "by_loss": {k: v for k, v in relative.items() if k != "total"},
            **{f"{low}_relative_difference": relative["total"][low] for low in ("bf16", "fp16")}}


def check_syncs(device, size, max_bp, problem, batch_size: int) -> dict[str, Any]:
    """Host synchronisations of a pretraining epoch (UniFrac + masked nucleotides, the Trainer's own loop) of 2
    batches and of 6, after a warm-up epoch: in steady state a step adds none, so the counts are equal
    (``per_step`` empty; #29 point 2). Counted by :func:`aam.training.host_syncs.counting_host_syncs`: the
    Tensor methods that wait for the device and, on CUDA, ``torch.cuda.set_sync_debug_mode``'s reports."""
    from torch.utils.data import Subset

    from aam.data.dataset import make_loader
    from aam.models import SequenceEncoder
    from aam.training.host_syncs import counting_host_syncs, host_resident_state
    from aam.training.schedulers import build_scheduler

    dataset, collator = problem
    counts = {}
    for n_batches in (2, 6):
        torch.manual_seed(0)
        model = SequenceEncoder(EncoderConfig(max_bp=max_bp, dropout=0.0, **size))
        trainer = Trainer(model, MultiTaskLoss(target_penalty=0.0, penalty=1.0, nuc_penalty=1.0, count_penalty=0.0),
                          TrainerConfig(progress=False, scheduler="cosine", epochs=2, progress_interval=1e9),
                          device=device)
        trainer.scheduler = build_scheduler("cosine", trainer.optimizer, total_steps=n_batches + 1,
                                            steps_per_epoch=n_batches)
        rows = [i % len(dataset) for i in range(n_batches * batch_size)]
        loader = make_loader(Subset(dataset, rows), collator, batch_size, shuffle=False)
        warm = make_loader(Subset(dataset, rows[:batch_size]), collator, batch_size, shuffle=False)
        trainer.train_epoch(warm, 0)  # lazy initialisation, allocator, library handles
        _sync(device)
        with counting_host_syncs(device, host_resident_state(trainer.optimizer)) as epoch_counts:
            trainer.train_epoch(loader, 1)
        counts[n_batches] = epoch_counts
    keys = set(counts[2]) | set(counts[6])
    per_step = {k: (counts[6].get(k, 0) - counts[2].get(k, 0)) / 4 for k in sorted(keys)}
    return {"epoch_of_2": counts[2], "epoch_of_6": counts[6], "per_step": {k: v for k, v in per_step.items() if v}}


def check_compile(device, size, max_bp, batches, backend) -> dict[str, Any]:
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    trainer = _trainer(size, device, max_bp, compile_model=True, compile_backend=backend)
    start = time.perf_counter()
    step_seconds = []
    for batch in batches:
        began = time.perf_counter()
        _step(trainer, batch)
        _sync(device)
        step_seconds.append(round(time.perf_counter() - began, 2))
        print(f"compile: step {len(step_seconds)} ({len(batch)} samples) {step_seconds[-1]} s", flush=True)
    return {"backend": backend, "steps": len(batches), "seconds": round(time.perf_counter() - start, 2),
            "step_seconds": step_seconds,
            "unique_graphs": int(counters["stats"]["unique_graphs"]),
            "graph_breaks": int(sum(counters["graph_break"].values())),
            "recompiles": int(sum(counters["recompiles"].values()))}


def kernel_expected(name: str, dtype: torch.dtype, masked: bool) -> bool:
    """Whether ``--attn-implementation name``'s own kernel must run on a recent CUDA GPU (sm80+):
    FlashAttention takes half precision without a padding mask; the others take any float and masks."""
    return name != "flash" or (dtype in (torch.bfloat16, torch.float16) and not masked)


def _only_kernel(name: str, device) -> Any:
    """SDPA restricted to the kernel ``name`` asks for first, without the MATH fallback the model's own lists
    end with, so a refused kernel raises instead of passing silently (``sdpa``: torch's own choice)."""
    from torch.nn.attention import sdpa_kernel

    backends = ATTENTION_BACKENDS[name]
    if device.type != "cuda" or backends is None:
        return attention_backend(name, device)
    return sdpa_kernel([backends[0]])


def check_attention(device) -> dict[str, Any]:
    """Every attention implementation's own kernel, alone, with and without a padding mask, against MATH:
    ``ok`` (it ran), ``expected`` (:func:`kernel_expected`). An expected kernel that did not run fails the
    check (:func:`attention_failures`)."""
    from aam.models.layers import TransformerStack

    torch.manual_seed(0)
    stack = TransformerStack(64, 4, layers=1, dropout=0.0).to(device).eval()
    x = torch.randn(8, 151, 64, device=device)
    padded = torch.ones(8, 151, dtype=torch.bool, device=device)
    padded[:, 120:] = False
    results = {}
    for dtype in ((torch.float32, torch.bfloat16, torch.float16) if device.type == "cuda" else (torch.float32,)):
        for masked in (False, True):
            mask = padded if masked else None
            with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                with attention_backend("math", device):
                    reference = stack(x, mask).float()
                for name in ATTENTION_BACKENDS:
                    key = f"{name}/{str(dtype).split('.')[-1]}/{'mask' if masked else 'no mask'}"
                    expected = device.type != "cuda" or kernel_expected(name, dtype, masked)
                    try:
                        with _only_kernel(name, device):
                            out = stack(x, mask).float()
                        results[key] = {"ok": True, "expected": expected,
                                        "max_abs_difference": float((out - reference).abs().max())}
                    except RuntimeError as err:  # a kernel refused on this GPU, dtype or mask
                        results[key] = {"ok": False, "expected": expected, "error": str(err).splitlines()[0]}
    return results


def attention_failures(results: dict[str, Any]) -> list[str]:
    """The kernels that were expected to run and did not (a check cut short by its budget fails whole)."""
    if "timed_out" in results or "failed" in results:
        return ["attention"]
    return [key for key, value in results.items() if value.get("expected", True) and not value["ok"]]


def check_memory(device, size, max_bp, problem, batch_sizes, chunk) -> dict[str, Any]:
    dataset, collator = problem
    results = {}
    for label, settings, asv_chunk in (("fp32", {}, None), ("bf16+chunks", {"mixed_precision": "bf16"}, chunk)):
        for batch_size in batch_sizes:
            trainer = _trainer(size, device, max_bp, **settings)
            trainer.model.base.asv_encoder.chunk_size = asv_chunk
            batch = _batches(dataset, collator, [batch_size])[0]
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
                _step(trainer, batch)
                torch.cuda.synchronize()
                mib = (torch.cuda.max_memory_allocated() - before) / 2**20
            else:  # bytes autograd keeps for backward
                mib = _kept_for_backward(trainer, batch) / 2**20
            results[f"{label}/batch {batch_size}"] = {"mib": round(mib, 1), "distinct_asvs": int(len(batch.tokens))}
    return results


def _kept_for_backward(trainer: Trainer, batch) -> int:
    """Bytes of the tensors autograd keeps for backward during one training step (CPU memory figure)."""
    saved: list[int] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _step(trainer, batch)
    return sum(saved)


def check_speed(device, sizes, max_bp, batches, repeats) -> dict[str, Any]:
    results = {}
    for size_name, size in sizes.items():
        for name, settings in (("fp32", {}), ("tf32", {"tf32": True}), ("bf16", {"mixed_precision": "bf16"}),
                               ("fp16", {"mixed_precision": "fp16"})):
            if name == "tf32" and device.type != "cuda":
                continue
            trainer = _trainer(size, device, max_bp, **settings)
            _step(trainer, batches[0])  # warm-up
            _sync(device)
            start = time.perf_counter()
            n = 0
            for _ in range(repeats):
                for batch in batches:
                    _step(trainer, batch)
                    n += len(batch)
            _sync(device)
            results[f"{size_name}/{name}"] = round(n / (time.perf_counter() - start), 1)
            if name == "tf32":
                torch.backends.cuda.matmul.allow_tf32 = False
                torch.backends.cudnn.allow_tf32 = False
    return results


def check_multi_gpu(out: Path, device: str = "cuda") -> dict[str, Any]:
    """Two ranks under torchrun (nccl on GPUs; gloo on CPU, which the test suite uses): pretraining with UniFrac
    from ``--tree`` under DDP and under FSDP with the bf16 policy, training under DDP and FSDP, and a DDP
    pretraining stopped by SIGTERM after its first step checkpoint and resumed from the checkpoint it names."""
    cuda = device == "cuda"
    if cuda and (not torch.cuda.is_available() or torch.cuda.device_count() < 2):
        return {"skipped": f"{torch.cuda.device_count() if torch.cuda.is_available() else 0} GPU(s)"}
    from aam.data.synthetic import write_synthetic_dataset

    paths = write_synthetic_dataset(out / "synthetic", n_samples=512 if cuda else 48, n_asvs=200 if cuda else 30,
                                    seed=0)
    size = [] if cuda else ["--embedding-dim", "16", "--attention-heads", "2", "--attention-layers", "1",
                            "--token-limit", "24", "--max-bp", "150"]
    common = ["--table", str(paths["table"]), "--device", device, "--batch-size", "32" if cuda else "8", *size]
    pretrain = ["pretrain", *common, "--tree", str(paths["tree"])]
    train = ["train", *common, "--metadata", str(paths["metadata"]), "--metadata-column", "target"]
    runs = {"ddp pretrain --tree": pretrain + ["--distributed"],
            "fsdp bf16 pretrain --tree": pretrain + ["--fsdp", "--mixed-precision", "bf16"],
            "ddp train": train + ["--distributed"], "fsdp train": train + ["--fsdp"]}
    results: dict[str, Any] = {}
    for name, args in runs.items():
        run = out / name.replace(" ", "_").replace("-", "")
        done = subprocess.run(_torchrun(*args, "--epochs", "2", "--output-dir", str(run)), capture_output=True,
                              text=True, timeout=600)
        log_text = (run / "training.log").read_text() if (run / "training.log").exists() else ""
        rates = [float(x) for x in re.findall(r"train_samples_per_s=([0-9.e+]+)", log_text)]
        results[name] = {"exit_code": done.returncode, "samples_per_s": rates[-1] if rates else None,
                         "stderr_tail": done.stderr[-500:] if done.returncode else ""}
    results["ddp pretrain: SIGTERM, then resume"] = _stop_and_resume(
        pretrain + ["--distributed", "--epochs", "20", "--checkpoint-every-steps", "2"], out / "resume")
    return results


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "aam.cli",
            *args]


def _stop_and_resume(args: list[str], run: Path) -> dict[str, Any]:
    """Start ``args`` under torchrun, send SIGTERM once the first mid-epoch checkpoint (``last_model.pt``, every
    ``--checkpoint-every-steps``) exists, then rerun with the
    ``--resume-from`` the stopped run printed; both exit codes and whether the resumed run finished."""
    import signal

    command = _torchrun(*args, "--output-dir", str(run))
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while process.poll() is None and time.time() < deadline and not (run / "checkpoints" / "last_model.pt").is_file():
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    named = re.findall(r"--resume-from (\S+)", stderr)
    if not named:
        return {"stopped_exit_code": process.returncode, "resumed": False, "stderr_tail": stderr[-500:]}
    resumed = subprocess.run(_torchrun(*args, "--output-dir", str(run), "--resume-from", named[-1]),
                             capture_output=True, text=True, timeout=600)
    return {"stopped_exit_code": process.returncode, "checkpoint": Path(named[-1]).name,
            "resumed_exit_code": resumed.returncode, "resumed": resumed.returncode == 0,
            "stderr_tail": resumed.stderr[-500:] if resumed.returncode else ""}


def _markdown(result: dict[str, Any]) -> str:
    lines = [f"GPU check on {result['device_name']} (torch {result['torch']}), {result['date']}", "",
             "| check | result |", "| --- | --- |"]
    for name in BUDGETS:
        value = result.get(name)
        if value is None:
            continue
        if "timed_out" in value or "failed" in value:
            what = (f"over its budget of {value['timed_out']:g} s" if "timed_out" in value
                    else f"failed: {value['failed']}")
            lines.append(f"| {name} | {what} |")
            continue
        lines += _SECTIONS[name](value, result)
    return "\n".join(lines) + "\n"


def _precision_lines(p: dict[str, Any], _: dict[str, Any]) -> list[str]:
    return ([f"| loss vs fp32 | bf16 {p['bf16_relative_difference']:.2e}, fp16 {p['fp16_relative_difference']:.2e} |"]
            + [f"| {k} loss vs fp32 | bf16 {v['bf16']:.2e}, fp16 {v['fp16']:.2e} |" for k, v in p.get("by_loss", {}).items()])


def _compile_lines(c: dict[str, Any], _: dict[str, Any]) -> list[str]:
    return [f"| compile ({c['backend']}, {c['steps']} steps) | {c['unique_graphs']} graphs, {c['graph_breaks']} "
            f"breaks, {c['recompiles']} recompiles, {c['seconds']} s |"]


def _attention_lines(a: dict[str, Any], _: dict[str, Any]) -> list[str]:
    bad = attention_failures(a)
    refused = [k for k, v in a.items() if not v["ok"] and not v.get("expected", True)]
    worst = max((v["max_abs_difference"] for v in a.values() if v["ok"]), default=float("nan"))
    return [f"| attention kernels | {sum(v['ok'] for v in a.values())}/{len(a)} ran alone, max difference to math "
            f"{worst:.2e}{'; refused as expected: ' + ', '.join(refused) if refused else ''}"
            f"{'; FAILED (expected to run): ' + ', '.join(bad) if bad else ''} |"]


def _memory_lines(m: dict[str, Any], result: dict[str, Any]) -> list[str]:
    what = "peak MiB" if result["device"].startswith("cuda") else "MiB kept for backward"
    return [f"| {what}, {k} ({v['distinct_asvs']} distinct ASVs) | {v['mib']:,.1f} |" for k, v in m.items()]


def _speed_lines(speed: dict[str, Any], _: dict[str, Any]) -> list[str]:
    return [f"| samples/s, {k} | {v:,.1f} |" for k, v in speed.items()]


def _pretrain_lines(r: dict[str, Any], _: dict[str, Any]) -> list[str]:
    share = r.get("share_of_peak")
    return [f"| aam pretrain, {r['precision']}, batch {r['batch_size']} ({r['preset']} size, size groups "
            f"{r.get('size_groups', 1)}) | "
            f"{r['samples_per_s']:,.1f} samples/s, {r['achieved_tflops']:.2f} TFLOP/s"
            f"{'' if share is None else f', {100 * share:.0f}% of peak'} |"]


def _multi_gpu_lines(m: dict[str, Any], _: dict[str, Any]) -> list[str]:
    return [f"| 2 GPUs {k} | {v} |" for k, v in m.items()]


def _syncs_lines(c: dict[str, Any], _: dict[str, Any]) -> list[str]:
    per_step = ", ".join(f"{k} {v:g}" for k, v in c["per_step"].items())
    return [f"| host syncs, pretraining epoch of 2 / 6 batches | {sum(c['epoch_of_2'].values())} / "
            f"{sum(c['epoch_of_6'].values())}; {'FAILED, per step: ' + per_step if per_step else 'none per step'} |"]


_SECTIONS = {"precision": _precision_lines, "attention": _attention_lines, "syncs": _syncs_lines, "memory": _memory_lines,
             "speed": _speed_lines, "compile": _compile_lines, "pretrain_speed": _pretrain_lines,
             "size_groups": _pretrain_lines,
             "multi_gpu": _multi_gpu_lines}


# Seconds each check may take on the device (sum 480 s: the whole script fits in 8 minutes of device time).
# With isolation (the default on a GPU) each check runs in its own process and is stopped at its budget.
BUDGETS: dict[str, float] = {"precision": 15, "attention": 15, "syncs": 20, "memory": 40, "speed": 80,
                             "compile": 80, "pretrain_speed": 80, "size_groups": 60, "multi_gpu": 90}


def check_pretrain_speed(device, out: Path, quick: bool, data: str | None, size_groups: int = 1) -> dict[str, Any]:
    """``benchmarks/pretrain_speed.py`` (aam pretrain's own Trainer and DataLoader): the oral cohort with its
    tree when ``data`` holds it, else a synthetic table and tree of oral-like size; default model size, bf16
    and batches of 256 on a GPU (issue #29's goal), toy sizes on CPU; ``size_groups``: ``--size-groups``."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("pretrain_speed", Path(__file__).with_name("pretrain_speed.py"))
    speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(speed)
    if data:
        source = ["--data", data]
    else:
        from aam.data.synthetic import write_synthetic_dataset

        folder = out / "pretrain_data"  # written once, read by pretrain_speed and size_groups
        if not (folder / "written").exists():
            paths = write_synthetic_dataset(folder, n_samples=96 if quick else 2048, n_asvs=60 if quick else 4000,
                                            seed=0)
            (folder / "written").write_text(json.dumps({k: str(v) for k, v in paths.items()}))
        paths = json.loads((folder / "written").read_text())
        source = ["--table", paths["table"], "--tree", paths["tree"]]
    cuda = device.type == "cuda"
    args = [*source, "--device", str(device), "--precision", "bf16" if cuda else "fp32",
            "--batch-size", "8" if quick else "256", "--warmup", "1" if quick else "3", "--steps", "2" if quick else "20",
            "--work", str(out / f"pretrain_speed_work_g{size_groups}"), "--size-groups", str(size_groups)]
    return _quiet_main(speed, args + (["--max-bp", "40", "--preset", "small-data"] if quick else []))


def _quiet_main(module, args: list[str]) -> dict[str, Any]:
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        return module.main(args)


def _isolated(name: str, settings: list[str], output: Path, budget: float) -> dict[str, Any]:
    """Run one check in a child process (``settings`` + ``--only name --no-isolate``), stopped after ``budget``
    seconds."""
    folder = output / f"check_{name}"
    command = [sys.executable, str(Path(__file__).resolve()), *settings, "--only", name, "--no-isolate",
               "--output", str(folder)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=budget)
    except subprocess.TimeoutExpired:
        return {"timed_out": budget}
    written = folder / "gpu_check.json"
    if done.returncode != 0 or not written.is_file():
        return {"failed": done.returncode, "stderr_tail": done.stderr[-800:]}
    return json.loads(written.read_text()).get(name, {"failed": "no result"})


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="toy sizes (the CPU smoke test)")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--only", default=None, help=f"comma list of checks to run ({', '.join(BUDGETS)})")
    parser.add_argument("--compile-size", choices=sorted(SIZES), default="default")
    parser.add_argument("--data", default=None, help="folder with oral_dev.biom and oral.upgma.nwk for the "
                                                     "pretraining-speed check (else a synthetic table and tree)")
    parser.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                        help="each check in its own process, stopped at its budget (default: on a GPU)")
    parser.add_argument("--budgets", default="", help="override budgets in seconds, e.g. speed=60,compile=45")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    args.output.mkdir(parents=True, exist_ok=True)
    budgets = dict(BUDGETS)
    for item in filter(None, args.budgets.split(",")):
        name, _, seconds = item.partition("=")
        budgets[name.strip()] = float(seconds)
    selected = [k for k in BUDGETS if not args.only or k in args.only.split(",")]
    isolate = device.type == "cuda" if args.isolate is None else args.isolate
    quick = args.quick
    max_bp = 40 if quick else 150
    sizes = {"toy": TOY} if quick else SIZES
    main_size = TOY if quick else SIZES["default"]
    result: dict[str, Any] = {
        "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
        else platform.processor() or platform.machine(), "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"), "quick": quick, "budgets_s": {k: budgets[k] for k in selected}}
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as folder:
        scratch = Path(folder)
        if isolate:  # each check in a child process with the same settings, stopped at its budget
            settings = ["--device", args.device, "--compile-size", args.compile_size, *(["--quick"] if quick else []),
                        *(["--data", args.data] if args.data else [])]
            checks = {name: (lambda name=name: _isolated(name, settings, args.output, budgets[name]))
                      for name in selected}
        else:
            problem = _problem(64 if quick else 1024, 60 if quick else 4000, 8 if quick else 64, max_bp)
            batches = _batches(*problem, [4, 6, 3] if quick else [64, 48, 64, 32])
            checks = {
                "precision": lambda: check_precision(device, main_size, max_bp, batches[0]),
                "attention": lambda: check_attention(device),
                "syncs": lambda: check_syncs(device, main_size, max_bp, problem, 4 if quick else 64),
                "memory": lambda: check_memory(device, main_size, max_bp, problem,
                                               [4, 8] if quick else [16, 64, 256], chunk=16 if quick else 256),
                "speed": lambda: check_speed(device, sizes, max_bp, batches, 1 if quick else 5),
                "compile": lambda: check_compile(device, TOY if quick else SIZES[args.compile_size], max_bp,
                                                 batches, "inductor" if device.type == "cuda" else "eager"),
                "pretrain_speed": lambda: check_pretrain_speed(device, scratch, quick, args.data),
                "size_groups": lambda: check_pretrain_speed(device, scratch, quick, args.data, size_groups=4),
                "multi_gpu": lambda: check_multi_gpu(scratch) if not quick else {"skipped": "quick"},
            }
        for name in selected:  # saved after each, so a run cut short keeps what finished
            started = time.perf_counter()
            result[name] = checks[name]()
            seconds = time.perf_counter() - started
            if not isolate and seconds > budgets[name]:  # an isolated check is stopped at its budget instead
                result.setdefault("over_budget", {})[name] = round(seconds, 1)
            print(f"{name}: {seconds:.1f} s (budget {budgets[name]:g} s)", flush=True)
            (args.output / "gpu_check.json").write_text(json.dumps(result, indent=2))
    failed = [name for name, broken in (("attention", lambda r: bool(attention_failures(r))),
                                        ("syncs", lambda r: "per_step" not in r or bool(r["per_step"])))
              if name in selected and broken(result[name])]
    if failed:  # the script exits 1: a requested kernel did not run, or a step waited for the device
        result["failed_checks"] = failed
        (args.output / "gpu_check.json").write_text(json.dumps(result, indent=2))
    if args.only:
        print(json.dumps(result, indent=1))
        return result
    (args.output / "gpu_check.md").write_text(_markdown(result))
    print(_markdown(result))
    return result


if __name__ == "__main__":
    sys.exit(1 if main().get("failed_checks") else 0)
