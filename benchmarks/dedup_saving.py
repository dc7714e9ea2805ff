"""How much encoding each distinct ASV of a batch once saves, on the oral benchmark data.

    .venv/bin/python benchmarks/dedup_saving.py [--batch-sizes 8 16 32] [--batches 200] [--repeats 3]
                                                [--threads 1] [--dim 128] [--layers 4]

1. Duplication: for random batches of B samples (``--token-limit`` most abundant ASVs each), the ASV slots of
   the batch (the sum of the samples' ASV counts), the distinct ASVs among them, and the slots when padding to
   the longest sample or to the token limit.
2. ASV-encoder time per batch (eval mode, no_grad): encoding every real slot's sequence vs encoding the
   batch's distinct ASVs once and gathering them back into the slots (`gather_asv_embeddings`), with the
   largest absolute difference between the two [B, S, D] outputs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from aam.data.dataset import SampleDataset, collate_samples
from aam.models.asv_encoder import gather_asv_embeddings
from aam.models.config import EncoderConfig
from aam.models.sequence_encoder import SequenceEncoder
from aam.workflows.inputs import load_amplicon_data

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"  # ../shared/data; --data overrides


def random_batches(n_samples: int, batch_size: int, n_batches: int, rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.choice(n_samples, size=batch_size, replace=False) for _ in range(n_batches)]


def duplication(dataset: SampleDataset, batches: list[np.ndarray], token_limit: int) -> dict[str, float]:
    """Mean slots, distinct ASVs and padded slots per batch."""
    slots, distinct, padded = [], [], []
    for rows in batches:
        asvs = [dataset[int(i)]["asv_index"] for i in rows]
        lengths = [len(a) for a in asvs]
        slots.append(sum(lengths))
        distinct.append(len(np.unique(np.concatenate(asvs))))
        padded.append(len(rows) * max(lengths))
    slots, distinct = np.array(slots, float), np.array(distinct, float)
    return {"slots": slots.mean(), "distinct": distinct.mean(), "ratio": (slots / distinct).mean(),
            "ratio_p5": np.percentile(slots / distinct, 5), "ratio_p95": np.percentile(slots / distinct, 95),
            "padded": float(np.mean(padded)), "token_limit_slots": len(batches[0]) * token_limit}


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def encoder_timing(model: SequenceEncoder, dataset: SampleDataset, data, rows: np.ndarray,
                   repeats: int) -> dict[str, float]:
    """Per-slot vs distinct-once ASV encoding of one batch: seconds each and max abs difference."""
    items = [dataset[int(i)] for i in rows]
    batch = collate_samples(items, data.tokens, data.sample_ids)  # tokens [U, L], asv_index [B, S]
    slot_rows = batch.asv_index[batch.asv_mask]  # [N_slots] row of tokens for each real slot
    slot_tokens = batch.tokens[slot_rows]  # [N_slots, L]: every slot's sequence, duplicates included

    def per_slot() -> torch.Tensor:
        embeddings = model.encode_asvs(slot_tokens)  # [N_slots, D]
        out = embeddings.new_zeros(*batch.asv_index.shape, embeddings.shape[1])  # [B, S, D]
        out[batch.asv_mask] = embeddings
        return out

    def distinct_once() -> torch.Tensor:
        return gather_asv_embeddings(model.encode_asvs(batch.tokens), batch.asv_index, batch.asv_mask)

    with torch.no_grad():
        difference = (per_slot() - distinct_once()).abs().max().item()
        slot_s = best_of(per_slot, repeats)
        distinct_s = best_of(distinct_once, repeats)
    return {"slots": len(slot_rows), "distinct": len(batch.tokens), "slot_s": slot_s, "distinct_s": distinct_s,
            "max_abs_diff": difference}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--batches", type=int, default=200, help="random batches per size for the duplication")
    parser.add_argument("--repeats", type=int, default=3, help="timings per encoder call (best kept)")
    parser.add_argument("--token-limit", type=int, default=1024)
    parser.add_argument("--max-bp", type=int, default=150)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=str(DATA), help="folder with oral_dev.biom (default ../shared/data)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = load_amplicon_data(f"{args.data}/oral_dev.biom", max_bp=args.max_bp)
    dataset = SampleDataset(data, token_limit=args.token_limit, asv_sampling="abundance", seed=args.seed)
    rng = np.random.default_rng(args.seed)
    print(f"oral_dev: {data.n_samples} samples x {len(data.asv_ids)} ASVs; token limit {args.token_limit}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)\n")
    print("| batch | ASV slots | distinct ASVs | slots / distinct (5-95%) | slots padded to longest | "
          "slots padded to token limit |")
    print("| --- | --- | --- | --- | --- | --- |")
    for size in args.batch_sizes:
        d = duplication(dataset, random_batches(data.n_samples, size, args.batches, rng), args.token_limit)
        print(f"| {size} | {d['slots']:.0f} | {d['distinct']:.0f} | {d['ratio']:.2f} ({d['ratio_p5']:.2f}-"
              f"{d['ratio_p95']:.2f}) | {d['padded']:.0f} | {d['token_limit_slots']} |")

    config = EncoderConfig(max_bp=args.max_bp, embedding_dim=args.dim, attention_heads=args.heads,
                           attention_layers=args.layers, token_limit=args.token_limit)
    torch.manual_seed(args.seed)
    model = SequenceEncoder(config).eval()
    print(f"\nASV encoder (D={args.dim}, {args.heads} heads, {args.layers} layers), eval mode, no_grad, one random "
          f"batch per size, best of {args.repeats}:\n")
    print("| batch | rows encoded: every slot | distinct once | time: every slot | distinct once + gather | "
          "speed-up | max abs difference |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for size in args.batch_sizes:
        t = encoder_timing(model, dataset, data, random_batches(data.n_samples, size, 1, rng)[0], args.repeats)
        print(f"| {size} | {t['slots']} | {t['distinct']} | {t['slot_s'] * 1e3:.0f} ms | "
              f"{t['distinct_s'] * 1e3:.0f} ms | {t['slot_s'] / t['distinct_s']:.2f}x | {t['max_abs_diff']:.1e} |")


if __name__ == "__main__":
    main()
