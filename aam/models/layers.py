"""Transformer building blocks shared by every AAM model.

Shapes: N rows (ASVs, samples), T positions, D width. Masks are boolean with True on real positions.
Padding never reaches a softmax unmasked, and rows without any real position give finite outputs (zeros)
and finite gradients: such rows attend to their first position only and their output is zeroed after.
Nothing here synchronises with the host.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.checkpoint import checkpoint

# --attn-implementation -> SDPA backends allowed on CUDA, in order of preference (None: let torch choose).
# Every list ends with MATH, so a kernel the GPU, dtype or a padding mask rules out (FlashAttention takes no
# mask) falls back instead of failing. A run-time setting: models and checkpoints do not record it.
ATTENTION_BACKENDS: dict[str, tuple[SDPBackend, ...] | None] = {
    "sdpa": None,
    "flash": (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH),
    "mem_efficient": (SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH),
    "math": (SDPBackend.MATH,),
}


def attention_backend(name: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Context restricting SDPA to the backends of `name` (with the MATH fallback) for every attention layer
    run inside it; a no-op off CUDA or for `sdpa`."""
    if name not in ATTENTION_BACKENDS:
        raise ValueError(f"unknown attention implementation {name!r}; choose from {', '.join(ATTENTION_BACKENDS)}")
    backends = ATTENTION_BACKENDS[name]
    if backends is None or device.type != "cuda":
        return contextlib.nullcontext()
    return sdpa_kernel(list(backends), set_priority=True)


def safe_key_mask(mask: Tensor) -> tuple[Tensor, Tensor]:
    """`mask` [N, T] with the first key unmasked in rows that have none, and `has_key` [N] bool."""
    has_key = mask.any(dim=-1)  # [N]
    first = torch.zeros_like(mask)
    first[..., 0] = True
    return mask | (first & ~has_key.unsqueeze(-1)), has_key


class MultiHeadAttention(nn.Module):
    """Multi-head attention of `query` [N, Tq, D] over `key_value` [N, Tk, Dkv] with a key padding mask.

    Runs `scaled_dot_product_attention` unless `need_weights`, in which case it computes the softmax
    explicitly and also returns the weights [N, H, Tq, Tk]. Rows whose keys are all masked output zeros.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, kv_dim: int | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention heads ({heads}) must divide the width ({dim})")
        self.heads = heads
        self.dropout = dropout
        self.query = nn.Linear(dim, dim)
        self.key_value = nn.Linear(kv_dim or dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, query: Tensor, key_value: Tensor, key_mask: Tensor | None = None,
                need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        n, tq, dim = query.shape
        tk = key_value.shape[1]
        head_dim = dim // self.heads
        q = self.query(query).view(n, tq, self.heads, head_dim).transpose(1, 2)  # [N, H, Tq, d]
        k, v = self.key_value(key_value).view(n, tk, 2, self.heads, head_dim).permute(2, 0, 3, 1, 4)
        attn_mask = has_key = None
        if key_mask is not None:
            safe, has_key = safe_key_mask(key_mask)
            attn_mask = safe[:, None, None, :]  # [N, 1, 1, Tk]
        dropout_p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim)  # [N, H, Tq, Tk]
            if attn_mask is not None:
                scores = scores.masked_fill(~attn_mask, float("-inf"))
            weights = scores.softmax(dim=-1)
            attended = F.dropout(weights, dropout_p, self.training) @ v
        else:
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
        out = self.out(attended.transpose(1, 2).reshape(n, tq, dim))  # [N, Tq, D]
        if has_key is not None:
            keep = has_key.to(out.dtype)
            out = out * keep[:, None, None]
            if weights is not None:
                weights = weights * keep[:, None, None, None]
        return out, weights


class FeedForward(nn.Sequential):
    """Linear(D -> ratio*D) -> GELU -> Dropout -> Linear(ratio*D -> D)."""

    def __init__(self, dim: int, ffn_ratio: int = 4, dropout: float = 0.0):
        super().__init__(nn.Linear(dim, ffn_ratio * dim), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(ffn_ratio * dim, dim))


class TransformerBlock(nn.Module):
    """Pre-LN transformer block: x + Attn(LN(x)), then x + FFN(LN(x)), on [N, T, D].

    ``dropout`` applies to the residual branches; ``attention_dropout`` (default 0) to the attention weights.
    Any attention dropout makes CPU SDPA fall back from its flash kernel to the math kernel, which stores the
    full weight matrix: 2.3x the peak memory and about half the speed in training (BENCHMARKS.md).
    """

    def __init__(self, dim: int, heads: int, ffn_ratio: int = 4, dropout: float = 0.1,
                 attention_dropout: float = 0.0):
        super().__init__()
        self.attention_norm = nn.LayerNorm(dim)
        self.attention = MultiHeadAttention(dim, heads, attention_dropout)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_ratio, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        h = self.attention_norm(x)
        attended, _ = self.attention(h, h, mask)
        x = x + self.dropout(attended)
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


@torch.compiler.disable
def recomputed(function, *args):
    """``function(*args)`` keeping only its inputs for backward, where it is run again (activation
    checkpointing). Run outside a ``torch.compile`` graph: checkpointing one module twice in a graph (the
    clean and the masked nucleotide passes) fails to trace in PyTorch 2.13, so these regions run eagerly and
    the rest of the model stays compiled."""
    return checkpoint(function, *args, use_reentrant=False)


class TransformerStack(nn.Module):
    """`layers` pre-LN blocks and a final LayerNorm; padded positions of the output are zero.

    With `gradient_checkpointing`, each block is recomputed in backward (non-reentrant) while training.
    """

    def __init__(self, dim: int, heads: int, layers: int, ffn_ratio: int = 4, dropout: float = 0.1,
                 gradient_checkpointing: bool = False):
        super().__init__()
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, ffn_ratio, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.gradient_checkpointing = gradient_checkpointing

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x [N, T, D], mask [N, T] (True = real) -> [N, T, D]."""
        recompute = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            x = recomputed(block, x, mask) if recompute else block(x, mask)
        x = self.norm(x)
        if mask is not None:
            x = x * mask.unsqueeze(-1).to(x.dtype)
        return x


class AttentionPooling(nn.Module):
    """Masked softmax pooling [N, T, D] -> [N, D] with scores Linear(D -> 1) / sqrt(D).

    Rows with no real position give zeros (their scores are softmaxed unmasked, then zeroed, so the
    gradient stays finite).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Linear(dim, 1, bias=False)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, x: Tensor, mask: Tensor | None = None, return_weights: bool = False
                ) -> Tensor | tuple[Tensor, Tensor]:
        scores = self.score(x).squeeze(-1) * self.scale  # [N, T]
        if mask is None:
            weights = scores.softmax(dim=-1)
        else:
            has_any = mask.any(dim=-1, keepdim=True)  # [N, 1]
            scores = scores.masked_fill(~(mask | ~has_any), float("-inf"))
            weights = scores.softmax(dim=-1) * has_any.to(scores.dtype)
        pooled = torch.einsum("nt,ntd->nd", weights, x)  # [N, D]
        return (pooled, weights) if return_weights else pooled


class CompositionPooling(nn.Module):
    """[N, T, D] ASV vectors and their relative abundances [N, T] -> [N, D] log-ratio composition.

    Each ASV is softly assigned to one of ``bins`` learned groups from its vector (softmax of a linear map, so
    related sequences share a group); a sample's share of each group is the abundance-weighted sum of the
    assignments; the shares are taken as centred logs (the centred log-ratio of compositional data analysis,
    so a rare group's rise weighs like a dominant one's) and projected to D. Rows with no real position give
    the centred log of uniform shares, i.e. zeros before the projection.
    """

    def __init__(self, dim: int, bins: int | None = None, floor: float = 1e-4):
        super().__init__()
        bins = bins or dim
        self.assign = nn.Linear(dim, bins)
        self.project = nn.Linear(bins, dim)
        self.floor = floor

    def forward(self, x: Tensor, abundance: Tensor) -> Tensor:
        assignment = self.assign(x).softmax(dim=-1)  # [N, T, K]
        shares = torch.einsum("nt,ntk->nk", abundance.to(x.dtype), assignment)  # [N, K], rows sum to <= 1
        logs = torch.log(shares + self.floor)
        return self.project(logs - logs.mean(dim=-1, keepdim=True))  # [N, D]


class PositionEmbedding(nn.Module):
    """Learned position embedding added to [N, T, D] (T <= max_length)."""

    def __init__(self, max_length: int, dim: int, init_std: float = 0.02):
        super().__init__()
        self.embedding = nn.Embedding(max_length, dim)
        nn.init.normal_(self.embedding.weight, std=init_std)

    def forward(self, x: Tensor) -> Tensor:
        length = x.shape[-2]
        if length > self.embedding.num_embeddings:
            raise ValueError(f"{length} positions exceed the maximum of {self.embedding.num_embeddings}")
        return x + self.embedding.weight[:length]
