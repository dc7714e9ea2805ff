"""Output heads: regression heads, output constraints, class log-probabilities, quantiles, counts, distances.

Registries (`REGRESSION_HEADS`, `OUTPUT_CONSTRAINTS`) map names to classes with one constructor shape each,
so a new variant is one class and one line. Linear layers of the heads start Xavier-uniform with zero bias.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aam.models.layers import TransformerStack
from aam.models.registries import OUTPUT_CONSTRAINTS, REGRESSION_HEADS  # noqa: F401 (re-exported)


def _xavier(module: nn.Module) -> None:
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def _mlp(in_dim: int, out_features: int, hidden_dims: Sequence[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for hidden in hidden_dims:
        layers += [nn.Linear(in_dim, hidden), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        in_dim = hidden
    layers.append(nn.Linear(in_dim, out_features))
    return nn.Sequential(*layers)


class LinearHead(nn.Module):
    """[B, D] -> Linear -> [B, out_features]."""

    def __init__(self, in_dim: int, out_features: int, hidden_dims: Sequence[int] = (), dropout: float = 0.0):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_features)
        _xavier(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)


class MLPHead(nn.Module):
    """[B, D] -> (Linear -> ReLU -> Dropout) per hidden width -> Linear -> [B, out_features]."""

    def __init__(self, in_dim: int, out_features: int, hidden_dims: Sequence[int] = (), dropout: float = 0.0):
        super().__init__()
        self.mlp = _mlp(in_dim, out_features, hidden_dims, dropout)
        _xavier(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x)


class ResidualHead(nn.Module):
    """Linear skip + MLP: Linear(x) + MLP(x); the MLP uses `hidden_dims` or one hidden layer of width D."""

    def __init__(self, in_dim: int, out_features: int, hidden_dims: Sequence[int] = (), dropout: float = 0.0):
        super().__init__()
        self.skip = nn.Linear(in_dim, out_features)
        self.mlp = _mlp(in_dim, out_features, tuple(hidden_dims) or (in_dim,), dropout)
        _xavier(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.mlp(x)




def head_name(hidden_dims: Sequence[int], residual: bool) -> str:
    """Which `REGRESSION_HEADS` entry the predictor options select."""
    return "residual" if residual else ("mlp" if hidden_dims else "linear")


class LearnableSoftplus(nn.Module):
    """softplus(scale * x + shift), scale initialised to 1 and shift to 0 (per output column)."""

    def __init__(self, out_dim: int = 1):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(out_dim))
        self.shift = nn.Parameter(torch.zeros(out_dim))

    def forward(self, x: Tensor) -> Tensor:
        shape = (-1,) + (1,) * (x.dim() - 2)  # [out_dim] -> broadcast over [B, out_dim(, Q)]
        return F.softplus(self.scale.view(shape) * x + self.shift.view(shape))


class Bounded(nn.Sigmoid):
    """Outputs in (0, 1)."""

    def __init__(self, out_dim: int = 1):
        super().__init__()


class NonNegative(nn.Softplus):
    """Outputs >= 0 (softplus)."""

    def __init__(self, out_dim: int = 1):
        super().__init__()


class Unconstrained(nn.Identity):
    """Outputs as produced by the head."""

    def __init__(self, out_dim: int = 1):
        super().__init__()




class ClassLogProbabilities(nn.Module):
    """Logits [B, K] -> log-probabilities (log_softmax over classes)."""

    def forward(self, logits: Tensor) -> Tensor:
        return F.log_softmax(logits, dim=-1)


class QuantileReshape(nn.Module):
    """[B, out_dim * Q] -> [B, out_dim, Q]."""

    def __init__(self, out_dim: int, num_quantiles: int):
        super().__init__()
        self.out_dim, self.num_quantiles = out_dim, num_quantiles

    def forward(self, x: Tensor) -> Tensor:
        return x.view(x.shape[0], self.out_dim, self.num_quantiles)


class CountHead(nn.Module):
    """Relative abundance per ASV slot: transformer -> Linear(D -> 1) -> sigmoid, [B, S, D] -> [B, S]."""

    def __init__(self, dim: int, heads: int, layers: int, ffn_ratio: int = 4, dropout: float = 0.1,
                 gradient_checkpointing: bool = False):
        super().__init__()
        self.transformer = TransformerStack(dim, heads, layers, ffn_ratio, dropout,
                                            gradient_checkpointing)
        self.linear = nn.Linear(dim, 1)
        _xavier(self.linear)

    def forward(self, sample_embeddings: Tensor, asv_mask: Tensor) -> Tensor:
        hidden = self.transformer(sample_embeddings, asv_mask)
        return torch.sigmoid(self.linear(hidden)).squeeze(-1) * asv_mask.to(hidden.dtype)  # [B, S]


DISTANCE_EPS = 1e-12
# sqrt(DISTANCE_EPS) as each computing dtype rounds it (the distance head computes in float32 or float64), as
# Python numbers: subtracting them copies nothing to the device
ROOT_DISTANCE_EPS = {dtype: float(torch.tensor(DISTANCE_EPS, dtype=dtype).sqrt())
                     for dtype in (torch.float32, torch.float64)}


class DistanceHead(nn.Module):
    """Predicted distances between sample embeddings: 1 - exp(-softplus(a) * ||e_i - e_j||).

    0 for identical embeddings (the diagonal is exactly 0), below 1 always, and the learnable rate `a`
    (initialised to 1/sqrt(D)) lets the whole range be used, including weighted UniFrac's 0.1-0.5. The norm
    is sqrt(d^2 + eps) - sqrt(eps), so it is 0 at d = 0 with a finite gradient.

    Euclidean distances come from ``torch.cdist`` with exact differences, so memory is O(N M), not the
    O(N M D) of broadcast pairwise differences: 2,048 samples of a DDP global batch at D = 128 need 16 MiB
    instead of 2 GiB, forward and backward.
    """

    EPS = DISTANCE_EPS
    ROOT_EPS = ROOT_DISTANCE_EPS

    def __init__(self, dim: int):
        super().__init__()
        rate = 1.0 / math.sqrt(dim)
        self.raw_rate = nn.Parameter(torch.tensor(math.log(math.expm1(rate))))  # softplus^-1(rate)

    @property
    def rate(self) -> float:
        return float(F.softplus(self.raw_rate))

    @torch.no_grad()
    def calibrate(self, mean_distance: float, mean_target: float) -> float:
        """Set the rate so that a pair at the mean embedding distance is predicted at the mean target distance
        (clipped to [1e-3, 0.999]); returns the rate."""
        target = min(max(mean_target, 1e-3), 0.999)
        rate = -math.log(1.0 - target) / mean_distance
        self.raw_rate.fill_(math.log(math.expm1(rate)))  # softplus^-1
        return rate

    def forward(self, embeddings: Tensor, others: Tensor | None = None) -> Tensor:
        """[N, D] (and [M, D]) -> [N, M] predicted distances (M = N when `others` is None).

        Computed in at least float32, so the eps survives under fp16/bf16 autocast.
        """
        dtype = torch.promote_types(embeddings.dtype, torch.float32)
        with torch.autocast(embeddings.device.type, enabled=False):
            embeddings = embeddings.to(dtype)
            others = embeddings if others is None else others.to(dtype)
            # exact differences without an [N, M, D] tensor: the fused kernel, not the Gram-matrix shortcut
            # (whose rounding near 0 would dominate the gradients of near-duplicate samples)
            distance = torch.cdist(embeddings, others, compute_mode="donot_use_mm_for_euclid_dist")
            # eps and its root as Python numbers: no host-to-device copy per step; the root is the one this
            # dtype's sqrt gives, so the difference is exactly 0 where the distance is
            norm = (torch.sqrt(distance.square() + self.EPS) - self.ROOT_EPS[dtype]).clamp_min(0.0)
            return 1.0 - torch.exp(-F.softplus(self.raw_rate.to(dtype)) * norm)
