"""Training activation memory against the batch's distinct ASVs: plain, --gradient-checkpointing,
--asv-chunk-size, both, optionally under bf16 autocast.

    .venv/bin/python benchmarks/asv_memory.py [--distinct 64 256 1024] [--chunk 64] [--size default|small]
                                              [--device cpu|cuda] [--bf16] [--output FILE.json]

Each setting runs a training forward of the ASV encoder (clean pass + masked-nucleotide pass, the part whose
memory grows with distinct ASVs) on random 150-nt ASVs, then backward. On CPU the figure is what autograd keeps
for backward (bytes of saved tensors, counted with ``torch.autograd.graph.saved_tensors_hooks``; tensors inside
a checkpointed region are not kept, so they are not counted); on CUDA it is ``torch.cuda.max_memory_allocated``
over forward and backward minus the memory before. Ratios between settings are the point; absolute CPU bytes
leave out temporaries that live only during one operation, and with chunks the recompute of one chunk in
backward adds about (chunk x the plain MiB per ASV) on top of what is kept (printed below the table).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aam.data.vocabulary import START, A  # noqa: E402
from aam.models import EncoderConfig, SequenceEncoder  # noqa: E402

SIZES = {"default": dict(embedding_dim=128, attention_heads=4, attention_layers=4),
         "small": dict(embedding_dim=64, attention_heads=4, attention_layers=2)}
SETTINGS = {"plain": (None, False), "checkpointing": (None, True), "chunks": ("chunk", False),
            "chunks+checkpointing": ("chunk", True)}


def measure(size: str, distinct: int, chunk: int | None, checkpointing: bool, device: torch.device,
            bf16: bool) -> float:
    """MiB kept for backward (CPU) or peak MiB above the start (CUDA) of one training forward + backward."""
    torch.manual_seed(0)
    config = EncoderConfig(max_bp=150, dropout=0.0, gradient_checkpointing=checkpointing, asv_chunk_size=chunk,
                           **SIZES[size])
    encoder = SequenceEncoder(config).asv_encoder.to(device).train()
    tokens = torch.randint(A, A + 4, (distinct, 151), device=device)
    tokens[:, 0] = START
    mask = encoder.mask_tokens(tokens)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    saved: list[int] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        outputs = encoder(tokens, nucleotide_mask=mask)
        loss = outputs["embeddings"].float().square().mean() + outputs["nucleotide_logits"].float().mean()
    loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - start) / 2**20
    return sum(saved) / 2**20


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--distinct", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--size", choices=sorted(SIZES), default="default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    rows = []
    for name, (chunk, checkpointing) in SETTINGS.items():
        for distinct in args.distinct:
            mib = measure(args.size, distinct, args.chunk if chunk else None, checkpointing, device, args.bf16)
            rows.append({"setting": name, "distinct_asvs": distinct, "mib": round(mib, 1)})
    result = {"device": str(device), "size": args.size, "chunk": args.chunk, "bf16": args.bf16,
              "machine": platform.processor() or platform.machine(), "torch": torch.__version__, "rows": rows}
    print(f"| setting | {' | '.join(f'{d} ASVs (MiB)' for d in args.distinct)} | MiB per extra ASV |")
    print(f"| --- | {' | '.join('---' for _ in args.distinct)} | --- |")
    for name in SETTINGS:
        values = [r["mib"] for r in rows if r["setting"] == name]
        slope = (values[-1] - values[0]) / max(args.distinct[-1] - args.distinct[0], 1)
        print(f"| {name} | {' | '.join(f'{v:,.1f}' for v in values)} | {slope:.3f} |")
    plain = [r["mib"] for r in rows if r["setting"] == "plain"]
    per_asv = (plain[-1] - plain[0]) / max(args.distinct[-1] - args.distinct[0], 1)
    print(f"\nwith chunks, backward also recomputes one chunk at a time: about {args.chunk} x {per_asv:.1f} = "
          f"{args.chunk * per_asv:,.0f} MiB more at the peak, whatever the number of distinct ASVs")
    if args.output is not None:
        args.output.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
