"""The weight EMA: the warmed-up decay, parameters and float buffers averaged, counters copied."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aam.training.ema import ema_model, warmed_up_decay


def test_decay_warms_up_then_holds():
    assert warmed_up_decay(0.99, 0) == pytest.approx(0.1)
    assert warmed_up_decay(0.99, 10) == pytest.approx(11 / 20)
    assert warmed_up_decay(0.99, 10_000) == 0.99


def test_average_follows_the_formula_for_weights_and_running_statistics():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = ema_model(model, decay=0.5)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    for step in range(4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(step + 1.0)
        model.train()(torch.randn(5, 3))  # moves the running statistics and the batch counter
        ema.update_parameters(model)
        current = model.state_dict()
        weight = 1.0 if step == 0 else 1.0 - warmed_up_decay(0.5, step)
        for key, value in current.items():
            if value.is_floating_point():
                expected[key] = expected[key] + weight * (value - expected[key])
            else:
                expected[key] = value.clone()
    averaged = ema.module.state_dict()
    for key, value in expected.items():
        torch.testing.assert_close(averaged[key], value)
    assert int(averaged["1.num_batches_tracked"]) == 4
    assert not torch.allclose(averaged["0.weight"], model.state_dict()["0.weight"])


def test_update_does_not_wait_for_the_device(monkeypatch):
    """The count is read from a host copy: no .item(), int() or truth test of a device tensor in the step (torch's
    own AveragedModel tests its device counter twice per update)."""
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = ema_model(model, decay=0.9)
    ema.update_parameters(model)
    calls = []
    for name in ("item", "__int__", "__float__", "__bool__", "tolist"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _o=original, _n=name, **k: calls.append(_n)
                            or _o(self, *a, **k))
    model.train()(torch.randn(5, 3))
    ema.update_parameters(model)
    monkeypatch.undo()
    assert calls == []
