"""Optimizer parameter groups and the learning-rate range test."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aam.training.optim import OPTIMIZERS, build_optimizer, find_lr, param_group_lrs


class TinyModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(10, 4)
        self.encoder = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.fusion = nn.Linear(4, 4)
        self.categorical_embedder = nn.Embedding(3, 4)
        self.output_scaling = nn.Parameter(torch.ones(4))
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)

    def categorical_parameters(self):  # as SequencePredictor declares its categorical modules
        yield from self.fusion.parameters()
        yield from self.categorical_embedder.parameters()
        yield self.output_scaling


def _names(model, optimizer):
    by_id = {id(p): n for n, p in model.named_parameters()}
    return {g["name"]: {by_id[id(p)] for p in g["params"]} for g in optimizer.param_groups}


def test_groups_without_categorical_lr():
    model = TinyModel()
    optimizer = build_optimizer(model, "adamw", lr=1e-3, weight_decay=0.05)
    groups = _names(model, optimizer)
    assert set(groups) == {"decay", "no_decay"}
    assert groups["decay"] == {"embedding.weight", "encoder.weight", "fusion.weight", "categorical_embedder.weight"}
    assert groups["no_decay"] == {"encoder.bias", "norm.weight", "norm.bias", "fusion.bias", "output_scaling"}
    by_name = {g["name"]: g for g in optimizer.param_groups}
    assert by_name["decay"]["weight_decay"] == 0.05 and by_name["no_decay"]["weight_decay"] == 0.0
    assert param_group_lrs(optimizer) == {"decay": 1e-3, "no_decay": 1e-3}


def test_categorical_groups_and_frozen_params():
    model = TinyModel()
    optimizer = build_optimizer(model, "sgd", lr=1e-3, weight_decay=0.01, categorical_lr=1e-2)
    groups = _names(model, optimizer)
    assert groups["categorical_decay"] == {"fusion.weight", "categorical_embedder.weight"}
    assert groups["categorical_no_decay"] == {"fusion.bias", "output_scaling"}
    assert groups["decay"] == {"embedding.weight", "encoder.weight"}
    assert all(not n.startswith("frozen") for names in groups.values() for n in names)
    assert param_group_lrs(optimizer) == {"decay": 1e-3, "no_decay": 1e-3, "categorical_decay": 1e-2,
                                          "categorical_no_decay": 1e-2}
    by_name = {g["name"]: g for g in optimizer.param_groups}
    assert by_name["categorical_no_decay"]["weight_decay"] == 0.0
    assert by_name["categorical_decay"]["weight_decay"] == 0.01
    assert all(g["momentum"] == 0.9 for g in optimizer.param_groups)


def test_a_real_predictor_declares_its_categorical_modules():
    from aam.models import EncoderConfig, PredictorConfig, SequencePredictor

    encoder = EncoderConfig(max_bp=20, embedding_dim=16, attention_heads=2, attention_layers=1)
    model = SequencePredictor(PredictorConfig(encoder=encoder, categorical_cardinalities=(3,),
                                              conditional_output_scaling_columns=(0,), categorical_fusion="gmu"))
    optimizer = build_optimizer(model, "adamw", lr=1e-3, categorical_lr=1e-2)
    groups = _names(model, optimizer)
    categorical = groups["categorical_decay"] | groups.get("categorical_no_decay", set())
    assert categorical == {n for n, _ in model.named_parameters()
                           if n.startswith(("categorical_embedder.", "fusion.", "output_scaling."))}
    assert not any(n.startswith("base.") for n in categorical)


def test_optimizer_choices():
    assert set(OPTIMIZERS) == {"adamw", "adam", "sgd"}
    assert isinstance(build_optimizer(TinyModel(), "adam"), torch.optim.Adam)
    with pytest.raises(ValueError):
        build_optimizer(TinyModel(), "lion")
    with pytest.raises(ValueError):
        build_optimizer(nn.Linear(2, 2).requires_grad_(False))


def test_find_lr_restores_state_and_suggests():
    torch.manual_seed(0)
    x = torch.randn(256, 1)
    y = 3 * x + 0.5 + 0.1 * torch.randn(256, 1)
    batches = [(x[i:i + 32], y[i:i + 32]) for i in range(0, 256, 32)]
    model = nn.Linear(1, 1)
    optimizer = build_optimizer(model, "sgd", lr=1e-2, weight_decay=0.0)
    model(x).pow(2).mean().backward()  # give the optimizer some momentum state to preserve
    optimizer.step()
    optimizer.zero_grad()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    momentum_before = [optimizer.state[p]["momentum_buffer"].clone() for p in model.parameters()]
    rng_before = torch.get_rng_state()
    model.eval()

    def step_fn(batch):
        inputs, targets = batch
        return nn.functional.mse_loss(model(inputs), targets)

    result = find_lr(model, lambda: iter(batches), step_fn, optimizer, start_lr=1e-5, end_lr=10.0, num_iters=60)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(m, optimizer.state[p]["momentum_buffer"])
               for m, p in zip(momentum_before, model.parameters(), strict=True))
    assert param_group_lrs(optimizer) == {"decay": 1e-2, "no_decay": 1e-2}
    assert torch.equal(torch.get_rng_state(), rng_before) and not model.training
    assert len(result.lrs) == len(result.losses) >= 10
    assert result.lrs[0] == pytest.approx(1e-5)
    assert result.suggested_lr is not None and 1e-3 < result.suggested_lr < 1.0
    assert min(result.losses) < result.losses[0]  # the sweep found a descent before diverging
