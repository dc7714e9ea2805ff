"""Heads: regression heads, output constraints, classifier and quantile outputs, count and distance heads."""

from __future__ import annotations

import math

import pytest
import torch

from aam.data.vocabulary import START
from aam.models import OUTPUT_CONSTRAINTS, REGRESSION_HEADS, EncoderConfig, PredictorConfig, build_model
from aam.models.heads import CountHead, DistanceHead, LearnableSoftplus, head_name

D = 16




def _batch():
    tokens = torch.randint(1, 5, (4, 9), generator=torch.Generator().manual_seed(0))
    tokens[:, 0] = START
    return dict(tokens=tokens, asv_index=torch.tensor([[0, 1, 2], [3, 0, 0], [2, 3, 0]]),
                asv_mask=torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0]], dtype=torch.bool))


def _predictor(**kwargs):
    encoder = EncoderConfig(max_bp=8, embedding_dim=D, attention_heads=2, attention_layers=1, ffn_ratio=2,
                            dropout=0.0)
    return build_model(PredictorConfig(encoder=encoder, **kwargs))


@pytest.mark.parametrize("name", sorted(REGRESSION_HEADS))
def test_regression_heads_shapes(name):
    head = REGRESSION_HEADS[name](D, 3, hidden_dims=(8, 4), dropout=0.1)
    assert head(torch.randn(5, D)).shape == (5, 3)


def test_head_selection():
    assert head_name((), False) == "linear"
    assert head_name((8,), False) == "mlp"
    assert head_name((), True) == "residual"
    model = _predictor(regressor_hidden_dims=(8,), residual_regression_head=True)
    assert type(model.head).__name__ == "ResidualHead"


def test_residual_head_is_linear_plus_mlp():
    head = REGRESSION_HEADS["residual"](D, 2)
    x = torch.randn(3, D)
    torch.testing.assert_close(head(x), head.skip(x) + head.mlp(x))


def test_output_constraints():
    assert set(OUTPUT_CONSTRAINTS) == {"none", "bounded", "nonnegative", "nonnegative-learnable"}
    x = torch.linspace(-30, 30, 101).view(-1, 1)
    torch.testing.assert_close(OUTPUT_CONSTRAINTS["none"](1)(x), x)
    bounded = OUTPUT_CONSTRAINTS["bounded"](1)(torch.linspace(-10, 10, 11).view(-1, 1))
    assert torch.all((bounded > 0) & (bounded < 1))
    assert torch.all(OUTPUT_CONSTRAINTS["nonnegative"](1)(x) >= 0)
    learnable = OUTPUT_CONSTRAINTS["nonnegative-learnable"](2)
    assert isinstance(learnable, LearnableSoftplus) and len(list(learnable.parameters())) == 2
    assert torch.all(learnable(torch.randn(4, 2) * 30) >= 0)
    assert learnable(torch.randn(4, 2, 3)).shape == (4, 2, 3)


@pytest.mark.parametrize("constraint, low, high", [("bounded", 0.0, 1.0), ("nonnegative", 0.0, math.inf)])
def test_predictor_output_constraint(constraint, low, high):
    prediction = _predictor(output_constraint=constraint)(**_batch())["prediction"]
    assert torch.all(prediction >= low) and torch.all(prediction <= high)


def test_classifier_outputs_log_probabilities():
    prediction = _predictor(classifier=True, out_dim=4)(**_batch())["prediction"]
    assert prediction.shape == (3, 4) and torch.all(prediction <= 0)
    torch.testing.assert_close(prediction.exp().sum(-1), torch.ones(3))


def test_quantile_output_shape():
    model = _predictor(out_dim=2, quantiles=(0.1, 0.5, 0.9), output_constraint="nonnegative")
    prediction = model(**_batch())["prediction"]
    assert prediction.shape == (3, 2, 3) and torch.all(prediction >= 0)


def test_count_head_predicts_relative_abundance_per_slot():
    head = CountHead(D, 2, layers=1)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    out = head(torch.randn(2, 3, D), mask)
    assert out.shape == (2, 3)
    assert torch.all(out[~mask] == 0) and torch.all((out[mask] > 0) & (out[mask] < 1))
    assert _predictor(count_prediction=False)(**_batch()).get("count_prediction") is None


def test_distance_head_zero_for_identical_and_below_one():
    head = DistanceHead(D)
    embeddings = torch.randn(4, D)
    embeddings[3] = embeddings[0]
    distances = head(embeddings)
    assert distances.shape == (4, 4)
    assert torch.all(distances.diagonal() == 0) and distances[0, 3] == 0
    assert torch.all((distances >= 0) & (distances < 1))
    torch.testing.assert_close(distances, distances.T)
    far = head(torch.stack([torch.zeros(D), torch.full((D,), 10.0)]))  # approaches 1 (1 in float32 far out)
    assert 0.99 < far[0, 1] < 1


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_distance_head_is_exactly_zero_for_identical_samples_in_every_computing_dtype(dtype):
    """sqrt(EPS) is subtracted as the computing dtype (float64, or float32 for half inputs) rounds it."""
    embeddings = torch.randn(3, D).to(dtype)
    embeddings[2] = embeddings[0]
    distances = DistanceHead(D).to(dtype if dtype == torch.float64 else torch.float32)(embeddings)
    assert distances.dtype == torch.promote_types(dtype, torch.float32)
    assert distances[0, 2] == 0 and torch.all(distances.diagonal() == 0) and distances[0, 1] > 0


def test_distance_head_gradient_is_finite_at_zero_distance():
    embeddings = torch.zeros(3, D, requires_grad=True)
    head = DistanceHead(D)
    head(embeddings).sum().backward()
    assert torch.isfinite(embeddings.grad).all() and torch.isfinite(head.raw_rate.grad)


def test_distance_head_reaches_weighted_unifrac_range():
    head = DistanceHead(D)
    rate = torch.nn.functional.softplus(head.raw_rate).item()
    targets = torch.tensor([0.1, 0.3, 0.5])
    gaps = -torch.log1p(-targets) / rate  # Euclidean distances that map onto the targets
    embeddings = torch.zeros(4, D)
    embeddings[1:, 0] = gaps
    predicted = head(embeddings)[0, 1:]
    torch.testing.assert_close(predicted, targets, rtol=1e-5, atol=1e-6)


def test_distance_head_between_two_sets():
    head = DistanceHead(D)
    a, b = torch.randn(2, D), torch.randn(3, D)
    torch.testing.assert_close(head(a, b), head(torch.cat([a, b]))[:2, 2:])


def _reference_distances(head: DistanceHead, embeddings: torch.Tensor) -> torch.Tensor:
    """The head's formula from explicit pairwise differences, in float64."""
    e = embeddings.double()
    squared = (e.unsqueeze(1) - e.unsqueeze(0)).pow(2).sum(-1)
    norm = torch.sqrt(squared + head.EPS) - math.sqrt(head.EPS)
    return 1.0 - torch.exp(-torch.nn.functional.softplus(head.raw_rate.double()) * norm)


def test_distance_head_matches_pairwise_differences_at_realistic_scale():
    torch.manual_seed(0)
    head = DistanceHead(128)
    embeddings = torch.randn(64, 128) * 3 + 5  # an offset common to all samples, as after a LayerNorm bias
    embeddings[10] = embeddings[3]
    distances = head(embeddings)
    torch.testing.assert_close(distances.double(), _reference_distances(head, embeddings), rtol=1e-4, atol=1e-5)
    assert distances[3, 10] == 0 and torch.all(distances.diagonal() == 0)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # distances stay in float32 under autocast
        low = head(embeddings.bfloat16())
    assert low.dtype == torch.float32
    torch.testing.assert_close(low.double(), _reference_distances(head, embeddings.bfloat16().float()),
                               rtol=1e-4, atol=1e-5)


def test_distance_head_keeps_o_n_squared_memory_for_backward():
    """What autograd saves for the backward pass grows like N^2, not N^2 D (no [N, N, D] tensor)."""
    n, dim = 256, 64
    saved: list[int] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tensor.numel())
        return tensor

    embeddings = torch.randn(n, dim, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        DistanceHead(dim)(embeddings).sum().backward()
    assert max(saved) <= n * n and sum(saved) < 12 * n * n  # an [N, N, D] tensor alone would be 64 N^2


def test_distance_head_calibrate_puts_the_mean_distance_at_the_mean_target():
    head = DistanceHead(D)
    rate = head.calibrate(mean_distance=2.0, mean_target=0.4)
    assert head.rate == pytest.approx(rate)
    pair = torch.tensor([[0.0, 0.0], [2.0, 0.0]])  # 2 apart
    assert head(pair)[0, 1].item() == pytest.approx(0.4, abs=1e-5)
    head.calibrate(mean_distance=1.0, mean_target=1.5)  # targets are clipped below 1
    assert head(torch.tensor([[0.0], [1.0]]))[0, 1].item() == pytest.approx(0.999, abs=1e-4)


def test_models_expose_their_distance_head_and_categorical_parameters():
    predictor = build_model(PredictorConfig(encoder=EncoderConfig(embedding_dim=D, attention_heads=2,
                                                                  attention_layers=1)))
    assert predictor.distance_head is predictor.base.distance_head
    assert list(predictor.base.categorical_parameters()) == []
