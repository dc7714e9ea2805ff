"""Transformer building blocks: masking, padding invariance, finite gradients, references."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.attention import SDPBackend

from aam.models.layers import (
    ATTENTION_BACKENDS,
    AttentionPooling,
    MultiHeadAttention,
    PositionEmbedding,
    TransformerBlock,
    TransformerStack,
    attention_backend,
    safe_key_mask,
)

D = 16




def _mask(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.bool)


def test_safe_key_mask_unmasks_first_key_only_in_empty_rows():
    mask = _mask([[1, 0, 1], [0, 0, 0]])
    safe, has_key = safe_key_mask(mask)
    assert safe.tolist() == [[True, False, True], [True, False, False]]
    assert has_key.tolist() == [True, False]


def test_attention_matches_torch_multihead_attention():
    torch.manual_seed(0)
    ours = MultiHeadAttention(D, 4).double().eval()
    reference = nn.MultiheadAttention(D, 4, batch_first=True).double().eval()
    with torch.no_grad():
        reference.in_proj_weight.copy_(torch.cat([ours.query.weight, ours.key_value.weight]))
        reference.in_proj_bias.copy_(torch.cat([ours.query.bias, ours.key_value.bias]))
        reference.out_proj.weight.copy_(ours.out.weight)
        reference.out_proj.bias.copy_(ours.out.bias)
    x = torch.randn(3, 5, D, dtype=torch.float64)
    mask = _mask([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 1, 0, 1]])
    expected, expected_weights = reference(x, x, x, key_padding_mask=~mask, average_attn_weights=False)
    fast, _ = ours(x, x, mask)
    slow, weights = ours(x, x, mask, need_weights=True)
    torch.testing.assert_close(fast, expected)
    torch.testing.assert_close(slow, expected)
    torch.testing.assert_close(weights, expected_weights)


def test_attention_with_no_valid_key_gives_zero_and_finite_gradients():
    attention = MultiHeadAttention(D, 2)
    query = torch.randn(2, 3, D, requires_grad=True)
    keys = torch.randn(2, 4, D, requires_grad=True)
    mask = _mask([[0, 0, 0, 0], [1, 1, 0, 0]])
    for need_weights in (False, True):
        out, weights = attention(query, keys, mask, need_weights=need_weights)
        assert torch.all(out[0] == 0) and torch.isfinite(out).all()
        if weights is not None:
            assert torch.all(weights[0] == 0)
            torch.testing.assert_close(weights[1].sum(-1), torch.ones(2, 3))
        out.sum().backward()
        assert torch.isfinite(query.grad).all() and torch.isfinite(keys.grad).all()


def test_attention_rejects_heads_that_do_not_divide_width():
    with pytest.raises(ValueError, match="must divide"):
        MultiHeadAttention(D, 3)


def test_block_and_stack_shapes():
    x = torch.randn(2, 7, D)
    assert TransformerBlock(D, 2, ffn_ratio=2).eval()(x).shape == (2, 7, D)
    assert TransformerStack(D, 2, layers=2).eval()(x).shape == (2, 7, D)
    assert len(TransformerStack(D, 2, layers=3).blocks) == 3


def test_stack_zeroes_padding_and_handles_all_padding_rows():
    torch.manual_seed(0)
    stack = TransformerStack(D, 2, layers=2, dropout=0.1).train()
    x = torch.randn(3, 5, D, requires_grad=True)
    mask = _mask([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0]])
    out = stack(x, mask)
    assert torch.isfinite(out).all()
    assert torch.all(out[~mask] == 0)
    out.pow(2).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in stack.parameters())


def test_stack_is_invariant_to_appended_padding():
    torch.manual_seed(0)
    stack = TransformerStack(D, 2, layers=2).double().eval()
    x = torch.randn(2, 4, D, dtype=torch.float64)
    mask = _mask([[1, 1, 1, 1], [1, 1, 0, 0]])
    padded_x = torch.cat([x, torch.randn(2, 3, D, dtype=torch.float64)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(2, 3, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(stack(padded_x, padded_mask)[:, :4], stack(x, mask), rtol=1e-10, atol=1e-10)


def test_gradient_checkpointing_matches_plain_backward():
    torch.manual_seed(0)
    plain = TransformerStack(D, 2, layers=2, dropout=0.0).train()
    recomputed = TransformerStack(D, 2, layers=2, dropout=0.0, gradient_checkpointing=True).train()
    recomputed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 5, D)
    mask = _mask([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
    plain(x, mask).sum().backward()
    recomputed(x, mask).sum().backward()
    for a, b in zip(plain.parameters(), recomputed.parameters()):
        torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.parametrize("backend", sorted(ATTENTION_BACKENDS))
def test_every_attention_backend_runs_on_cpu_and_falls_back_to_math(backend):
    stack = TransformerStack(D, 2, layers=1).eval()
    x = torch.randn(2, 4, D)
    plain = stack(x, _mask([[1, 1, 1, 0], [1, 0, 0, 0]]))
    with attention_backend(backend, torch.device("cpu")):
        out = stack(x, _mask([[1, 1, 1, 0], [1, 0, 0, 0]]))
    torch.testing.assert_close(out, plain)
    kernels = ATTENTION_BACKENDS[backend]
    assert kernels is None or kernels[-1] == SDPBackend.MATH  # a padding mask or old GPU never makes it fail


def test_the_attention_kernel_is_a_run_time_setting_not_part_of_a_model():
    from aam.models import EncoderConfig

    assert "attn_implementation" not in EncoderConfig().to_dict()
    old = {**EncoderConfig(embedding_dim=16, attention_heads=2).to_dict(), "attn_implementation": "flash"}
    assert EncoderConfig.from_dict(old) == EncoderConfig(embedding_dim=16, attention_heads=2)  # old checkpoints
    with pytest.raises(ValueError, match="unknown attention implementation"):
        attention_backend("xformers", torch.device("cpu"))


def test_attention_pooling_matches_masked_softmax_reference():
    torch.manual_seed(0)
    pooling = AttentionPooling(D).double()
    x = torch.randn(2, 4, D, dtype=torch.float64)
    mask = _mask([[1, 1, 0, 1], [1, 0, 0, 0]])
    pooled, weights = pooling(x, mask, return_weights=True)
    for n in range(2):
        real = x[n][mask[n]]
        scores = real @ pooling.score.weight[0] / math.sqrt(D)
        expected = (scores.softmax(0).unsqueeze(-1) * real).sum(0)
        torch.testing.assert_close(pooled[n], expected)
    assert torch.all(weights[~mask] == 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, dtype=torch.float64))


def test_attention_pooling_all_padding_row_is_zero_with_finite_gradient():
    pooling = AttentionPooling(D)
    x = torch.randn(2, 3, D, requires_grad=True)
    mask = _mask([[0, 0, 0], [1, 1, 0]])
    pooled = pooling(x, mask)
    assert torch.all(pooled[0] == 0)
    pooled.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(pooling.score.weight.grad).all()


def test_attention_pooling_without_mask_averages_by_softmax():
    pooling = AttentionPooling(D)
    nn.init.zeros_(pooling.score.weight)
    x = torch.randn(2, 5, D)
    torch.testing.assert_close(pooling(x), x.mean(1))


def test_position_embedding_adds_learned_vectors_and_checks_length():
    embedding = PositionEmbedding(6, D)
    x = torch.zeros(2, 4, D)
    torch.testing.assert_close(embedding(x)[1], embedding.embedding.weight[:4])
    with pytest.raises(ValueError, match="exceed"):
        embedding(torch.zeros(1, 7, D))
