"""Learning-rate schedules: curve values, exact step counts, plateau, resume."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from aam.training.schedulers import SCHEDULERS, build_scheduler, optimizer_steps_per_epoch

LR = 0.1


def _optimizer(lr=LR):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def _lrs(handle, steps):
    values = [handle.get_last_lr()[0]]
    for _ in range(steps):
        handle.scheduler.optimizer.step()
        handle.step()
        values.append(handle.get_last_lr()[0])
    return values


def test_registry():
    assert set(SCHEDULERS) == {"warmup_cosine", "cosine", "cosine_restarts", "plateau", "onecycle"}
    with pytest.raises(ValueError):
        build_scheduler("linear", _optimizer(), 10, 5)


def test_warmup_cosine_curve():
    handle = build_scheduler("warmup_cosine", _optimizer(), total_steps=100, steps_per_epoch=10, eta_min=0.01)
    assert handle.interval == "step" and not handle.needs_metric
    lrs = _lrs(handle, 100)
    warmup = 5  # default: 5% of 100 steps
    assert lrs[0] == pytest.approx(LR / (warmup + 1))  # near zero, not zero
    assert all(a < b for a, b in zip(lrs[:warmup + 1], lrs[1:warmup + 1], strict=False))
    assert lrs[warmup] == pytest.approx(LR)  # end of warmup: the peak
    middle = warmup + (100 - warmup) // 2
    expected_mid = 0.01 + (LR - 0.01) * 0.5 * (1 + math.cos(math.pi * (middle - warmup) / 95))
    assert lrs[middle] == pytest.approx(expected_mid)
    assert lrs[100] == pytest.approx(0.01)  # end: eta_min
    handle.scheduler.optimizer.step()
    handle.step()
    assert handle.get_last_lr()[0] == pytest.approx(0.01)  # stays at the floor, no climb back


def test_warmup_clipped_to_total_steps_with_warning(caplog):
    with caplog.at_level(logging.WARNING):
        handle = build_scheduler("warmup_cosine", _optimizer(), total_steps=50, steps_per_epoch=5,
                                 warmup_steps=10_000)
    assert handle.scheduler.warmup_steps == 50
    assert "warmup" in caplog.text
    lrs = _lrs(handle, 50)
    assert lrs[-1] == pytest.approx(LR)


@pytest.mark.parametrize("name", ["warmup_cosine", "cosine"])
def test_cosine_schedules_end_at_eta_min_after_total_steps(name):
    handle = build_scheduler(name, _optimizer(), total_steps=37, steps_per_epoch=37, eta_min=1e-3)
    assert _lrs(handle, 37)[-1] == pytest.approx(1e-3)


def test_cosine_restarts_defaults():
    handle = build_scheduler("cosine_restarts", _optimizer(), total_steps=40, steps_per_epoch=10)
    assert handle.interval == "step"
    assert handle.scheduler.T_0 == 10 and handle.scheduler.T_mult == 2
    lrs = _lrs(handle, 40)
    assert lrs[10] == pytest.approx(LR)  # first restart after T_0 steps
    assert lrs[9] < LR / 10


def test_onecycle_never_overruns():
    total = optimizer_steps_per_epoch(num_batches=10, accumulation_steps=3) * 4
    assert total == 16
    optimizer = _optimizer()
    handle = build_scheduler("onecycle", optimizer, total_steps=total, steps_per_epoch=4)
    for _ in range(total):
        optimizer.step()
        handle.after_optimizer_step()
        handle.after_epoch(1.0)  # a no-op for step-wise schedules
    assert handle.scheduler.last_epoch == total


def test_plateau_reduces_after_patience():
    handle = build_scheduler("plateau", _optimizer(), total_steps=100, steps_per_epoch=10, patience=2,
                             factor=0.5, mode="max")
    assert handle.interval == "epoch" and handle.needs_metric
    with pytest.raises(ValueError):
        handle.step()
    handle.after_optimizer_step()  # ignored: plateau steps per epoch
    for metric in (0.5, 0.6, 0.6, 0.6):  # best 0.6, then two epochs without improvement
        handle.step(metric)
        assert handle.get_last_lr()[0] == pytest.approx(LR)
    handle.step(0.6)  # third bad epoch exceeds patience 2
    assert handle.get_last_lr()[0] == pytest.approx(LR * 0.5)


def test_plateau_defaults():
    scheduler = build_scheduler("plateau", _optimizer(), total_steps=10, steps_per_epoch=1).scheduler
    assert (scheduler.patience, scheduler.factor, scheduler.min_lrs, scheduler.mode) == (5, 0.3, [0.0], "min")


@pytest.mark.parametrize("name", ["warmup_cosine", "cosine", "cosine_restarts", "onecycle", "plateau"])
def test_state_dict_round_trip_continues_identically(name):
    def make():
        optimizer = _optimizer()
        return optimizer, build_scheduler(name, optimizer, total_steps=30, steps_per_epoch=10)

    def advance(optimizer, handle, steps, start):
        lrs = []
        for i in range(start, start + steps):
            optimizer.step()
            handle.step(1.0 / (1 + i % 3)) if handle.needs_metric else handle.step()
            lrs.append(handle.get_last_lr()[0])
        return lrs

    optimizer, handle = make()
    reference = advance(optimizer, handle, 30, 0)
    optimizer, handle = make()
    advance(optimizer, handle, 12, 0)
    opt_state, sched_state = optimizer.state_dict(), handle.state_dict()
    optimizer, handle = make()
    optimizer.load_state_dict(opt_state)
    handle.load_state_dict(sched_state)
    assert advance(optimizer, handle, 18, 12) == pytest.approx(reference[12:])


def test_load_state_of_other_scheduler_fails():
    state = build_scheduler("cosine", _optimizer(), 10, 5).state_dict()
    with pytest.raises(ValueError):
        build_scheduler("onecycle", _optimizer(), 10, 5).load_state_dict(state)


def test_warmup_cosine_per_group_base_lrs():
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.AdamW([{"params": [params[0]], "lr": 1e-3}, {"params": [params[1]], "lr": 1e-2}])
    handle = build_scheduler("warmup_cosine", optimizer, total_steps=20, steps_per_epoch=20, warmup_steps=4)
    for _ in range(4):
        optimizer.step()
        handle.step()
    assert handle.get_last_lr() == pytest.approx([1e-3, 1e-2])
