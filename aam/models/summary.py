"""Parameter counts of a model, per submodule, as a plain-text table."""

from __future__ import annotations

from torch import nn


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (only those with `requires_grad` when `trainable_only`)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def model_summary(model: nn.Module, depth: int = 2) -> str:
    """Table of trainable and total parameters per submodule, down to `depth` levels, and the total."""
    rows: list[tuple[str, int, int]] = []

    def visit(module: nn.Module, level: int) -> None:
        for name, child in module.named_children():
            total = count_parameters(child)
            if total == 0:
                continue
            rows.append(("  " * level + name, count_parameters(child, trainable_only=True), total))
            if level + 1 < depth:
                visit(child, level + 1)

    visit(model, 0)
    rows.append(("total", count_parameters(model, trainable_only=True), count_parameters(model)))
    width = max(len("module"), *(len(name) for name, _, _ in rows))
    lines = [f"{'module':<{width}}  {'trainable':>12}  {'total':>12}"]
    lines += [f"{name:<{width}}  {trainable:>12,}  {total:>12,}" for name, trainable, total in rows]
    return "\n".join(lines)
