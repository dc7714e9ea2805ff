"""What ``--size-groups`` saves: padding of the sample-level stacks in random pretraining batches (#29).

    python benchmarks/size_groups.py                                 # the oral cohort, counts only
    python benchmarks/size_groups.py --table T.biom --batch-size 256 --groups 1 2 4 8 --time --device cuda

Batches are drawn as pretraining draws them (random samples, the ``--token-limit`` most abundant ASVs each) and
collated by ``aam``'s own collator. For each number of groups it reports:

- slot use: real ASV slots over the slots the sample-level stacks compute (each group padded to its largest
  sample; one group = the batch padded to its largest sample), averaged over ``--batches`` batches;
- FLOP of one forward pass of the encoder at the given size on one batch (``FlopCounterMode``), in all and
  per sample;
- with ``--time``: seconds per training step (forward with masked nucleotides and both pretraining losses'
  inputs, backward) on ``--device``, best of ``--repeats``, measured in the same process for every setting.

Data are found relative to the repository (``../shared/data/oral_dev.biom``) or given by ``--table``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from aam.data.dataset import SampleDataset, collate_samples
from aam.models.config import EncoderConfig
from aam.models.sequence_encoder import SequenceEncoder
from aam.training.forward import forward_batch
from aam.workflows.inputs import load_amplicon_data

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def batches(dataset: SampleDataset, n_samples: int, size: int, count: int, seed: int) -> list[list[dict]]:
    rng = np.random.default_rng(seed)
    return [[dataset[int(i)] for i in rng.choice(n_samples, size=size, replace=False)] for _ in range(count)]


def slot_use(items: list[dict], tokens: np.ndarray, ids: list[str], groups: int) -> float:
    batch = collate_samples(items, tokens, ids, n_size_groups=groups)
    real = int(batch.asv_mask.sum())
    if batch.size_groups is None:
        return real / batch.asv_mask.numel()
    return real / sum((stop - start) * slots for start, stop, slots in batch.size_groups.bounds)


def step_seconds(model: SequenceEncoder, batch, repeats: int, device: torch.device) -> float:
    def step() -> None:
        outputs = forward_batch(model, batch, mask_nucleotides=True)
        loss = outputs["distances"].square().mean() + outputs["nucleotide_logits"].float().logsumexp(-1).mean()
        loss.backward()
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", default=str(DATA / "oral_dev.biom"))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--batches", type=int, default=100, help="random batches for the slot use")
    parser.add_argument("--token-limit", type=int, default=1024)
    parser.add_argument("--max-bp", type=int, default=150)
    parser.add_argument("--dim", type=int, default=None, help="embedding size (default: the encoder's)")
    parser.add_argument("--time", action="store_true", help="also time training steps on --device")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)

    data = load_amplicon_data(args.table, max_bp=args.max_bp)
    dataset = SampleDataset(data, token_limit=args.token_limit, asv_sampling="abundance", seed=args.seed)
    size = min(args.batch_size, data.n_samples)
    drawn = batches(dataset, data.n_samples, size, args.batches, args.seed)
    ids = list(data.sample_ids)
    overrides = {} if args.dim is None else {"embedding_dim": args.dim}
    config = EncoderConfig(max_bp=args.max_bp, token_limit=args.token_limit, **overrides)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    model = SequenceEncoder(config).to(device)
    result = {"table": args.table, "batch_size": size, "device": str(device), "threads": torch.get_num_threads(),
              "machine": f"{platform.machine()}, {platform.system()}, torch {torch.__version__}", "groups": {}}
    for groups in args.groups:
        use = float(np.mean([slot_use(items, data.tokens, ids, groups) for items in drawn]))
        batch = collate_samples(drawn[0], data.tokens, ids, n_size_groups=groups).to(device)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            forward_batch(model.eval(), batch)
        row = {"slot_use": use, "forward_gflop": counter.get_total_flops() / 1e9}
        row["forward_gflop_per_sample"] = row["forward_gflop"] / size
        if args.time:
            row["step_s"] = step_seconds(model.train(), batch, args.repeats, device)
        result["groups"][groups] = row
        print(f"groups {groups}: slot use {use:.0%}, forward {row['forward_gflop']:.1f} GFLOP"
              + (f", step {row['step_s']:.3f} s" if "step_s" in row else ""), flush=True)
    if args.results:
        Path(args.results).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
