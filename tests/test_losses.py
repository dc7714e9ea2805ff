"""Losses against hand-computed values and torch references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from aam.objectives.losses import (
    TARGET_LOSSES,
    AsymmetricLoss,
    ClassificationNLLLoss,
    HuberLoss,
    MAELoss,
    MSELoss,
    MultiTaskLoss,
    QuantileLoss,
    build_target_loss,
    count_loss,
    masked_nucleotide_loss,
    pairwise_distance_loss,
    relative_abundance,
)


def test_pairwise_loss_uses_strict_upper_triangle_only():
    pred = torch.tensor([[9.0, 0.2, 0.4], [7.0, 9.0, 0.9], [7.0, 7.0, 9.0]], requires_grad=True)
    target = torch.tensor([[0.0, 0.5, 0.4], [0.5, 0.0, 0.5], [0.4, 0.5, 0.0]])
    loss = pairwise_distance_loss(pred, target)
    # pairs (0,1), (0,2), (1,2): errors -0.3, 0.0, 0.4
    assert loss.item() == pytest.approx((0.09 + 0.0 + 0.16) / 3)
    loss.backward()
    assert pred.grad.diagonal().abs().sum() == 0 and pred.grad.tril().abs().sum() == 0


def test_pairwise_loss_single_sample_is_zero_with_grad():
    pred = torch.tensor([[0.3]], requires_grad=True)
    loss = pairwise_distance_loss(pred, torch.zeros(1, 1))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert pred.grad is not None


def test_masked_nucleotide_loss_ignores_unmasked_positions():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 8, generator=gen)
    targets = torch.randint(0, 8, (3, 5), generator=gen)
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[0, 1] = mask[1, 3] = mask[2, 0] = True
    loss = masked_nucleotide_loss(logits, targets, mask)
    expected = F.cross_entropy(logits[mask], targets[mask])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    changed = logits.clone()
    changed[~mask] = torch.randn_like(changed[~mask]) * 100
    assert masked_nucleotide_loss(changed, targets.to(torch.uint8), mask).item() == pytest.approx(loss.item(), rel=1e-6)


def test_masked_nucleotide_loss_nothing_masked_is_zero_with_grad():
    logits = torch.randn(2, 4, 8, requires_grad=True)
    loss = masked_nucleotide_loss(logits, torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 4, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None


PRED = torch.tensor([[1.0], [2.0], [5.0], [0.5]])
TARGET = torch.tensor([1.5, 0.0, 2.0, 0.5])


def test_registry_names():
    assert set(TARGET_LOSSES) == {"mse", "mae", "huber", "quantile", "asymmetric"}


@pytest.mark.parametrize("loss, reference", [
    (MSELoss(), F.mse_loss),
    (MAELoss(), F.l1_loss),
    (HuberLoss(), lambda p, t: F.huber_loss(p, t, delta=1.0)),
])
def test_pointwise_losses_match_torch(loss, reference):
    assert loss(PRED, TARGET).item() == pytest.approx(reference(PRED, TARGET[:, None]).item())


def test_huber_by_hand():
    # errors 0.5, 2, 3, 0 -> 0.125, 1.5, 2.5, 0
    assert HuberLoss()(PRED, TARGET).item() == pytest.approx((0.125 + 1.5 + 2.5) / 4)


def test_quantile_pinball_by_hand():
    pred = torch.tensor([[[1.0, 2.0, 3.0]], [[0.0, 1.0, 4.0]]])  # [B=2, O=1, Q=3]
    target = torch.tensor([2.0, 3.0])
    taus = (0.1, 0.5, 0.9)
    total = 0.0
    for b in range(2):
        for q, tau in enumerate(taus):
            e = target[b].item() - pred[b, 0, q].item()
            total += max(tau * e, (tau - 1) * e)
    assert QuantileLoss(taus)(pred, target).item() == pytest.approx(total / 6)


@pytest.mark.parametrize("quantiles", [(0.9, 0.5), (0.5, 0.5), (0.0, 0.5), (0.5, 1.2), ()])
def test_quantiles_must_be_sorted_unique_in_range(quantiles):
    with pytest.raises(ValueError):
        QuantileLoss(quantiles)


def test_asymmetric_by_hand():
    loss = AsymmetricLoss(over_penalty=2.0, under_penalty=0.5)
    # pred - target: -0.5 (under), 2 (over), 3 (over), 0
    expected = (0.5 * 0.5 + 2.0 * 2.0 + 2.0 * 3.0 + 0.0) / 4
    assert loss(PRED, TARGET).item() == pytest.approx(expected)


def test_sample_weights_give_weighted_mean():
    weights = torch.tensor([1.0, 0.0, 3.0, 2.0])
    per_sample = (PRED[:, 0] - TARGET).abs()
    expected = (per_sample * weights).sum() / weights.sum()
    assert MAELoss()(PRED, TARGET, weights).item() == pytest.approx(expected.item())


def test_nll_with_class_weights_matches_torch():
    gen = torch.Generator().manual_seed(1)
    log_probs = torch.randn(6, 3, generator=gen).log_softmax(-1)
    target = torch.tensor([0, 2, 1, 1, 0, 2])
    weights = torch.tensor([1.0, 2.0, 0.5])
    loss = ClassificationNLLLoss(weights)(log_probs, target.int())
    assert loss.item() == pytest.approx(F.nll_loss(log_probs, target, weight=weights).item(), rel=1e-6)
    assert ClassificationNLLLoss()(log_probs, target[:, None]).item() == pytest.approx(
        F.nll_loss(log_probs, target).item(), rel=1e-6)


def test_nll_sample_weights_and_float_targets():
    log_probs = torch.randn(4, 2).log_softmax(-1)
    target = torch.tensor([0, 1, 1, 0])
    sample_weight = torch.tensor([1.0, 1.0, 0.0, 0.0])
    loss = ClassificationNLLLoss()(log_probs, target, sample_weight)
    assert loss.item() == pytest.approx(F.nll_loss(log_probs[:2], target[:2]).item(), rel=1e-6)
    with pytest.raises(TypeError):
        ClassificationNLLLoss()(log_probs, target.float())


def test_build_target_loss():
    assert isinstance(build_target_loss("huber"), HuberLoss)
    assert build_target_loss("quantile", quantiles=[0.2, 0.8]).quantiles == (0.2, 0.8)
    assert isinstance(build_target_loss("mse", classifier=True), ClassificationNLLLoss)
    with pytest.raises(ValueError):
        build_target_loss("quantile", classifier=True)
    with pytest.raises(ValueError):
        build_target_loss("nope")


def test_count_loss_masked_mse_on_relative_abundance():
    counts = torch.tensor([[3.0, 1.0, 0.0], [2.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    target = relative_abundance(counts, mask)
    assert torch.allclose(target, torch.tensor([[0.75, 0.25, 0.0], [1.0, 0.0, 0.0]]))
    pred = torch.tensor([[0.5, 0.5, 9.0], [0.0, 9.0, 9.0]])
    assert count_loss(pred, target, mask).item() == pytest.approx((0.0625 + 0.0625 + 1.0) / 3)


def _outputs_and_batch():
    gen = torch.Generator().manual_seed(2)
    outputs = {
        "prediction": torch.randn(4, 1, generator=gen, requires_grad=True),
        "distances": torch.rand(4, 4, generator=gen, requires_grad=True),
        "nucleotide_logits": torch.randn(5, 6, 8, generator=gen, requires_grad=True),
        "nucleotide_targets": torch.randint(0, 8, (5, 6), generator=gen),
        "nucleotide_mask": torch.rand(5, 6, generator=gen) < 0.3,
        "count_prediction": torch.rand(4, 3, generator=gen, requires_grad=True),
    }
    batch = {
        "targets": torch.randn(4, generator=gen),
        "distances": torch.rand(4, 4, generator=gen),
        "counts": torch.randint(1, 10, (4, 3), generator=gen).float(),
        "asv_mask": torch.ones(4, 3, dtype=torch.bool),
    }
    return outputs, batch


def test_multitask_weights_components():
    outputs, batch = _outputs_and_batch()
    loss_fn = MultiTaskLoss(target_penalty=2.0, penalty=3.0, nuc_penalty=0.5, count_penalty=4.0,
                            target_loss=MSELoss())
    result = loss_fn(outputs, batch)
    assert set(result) == {"total", "target", "unifrac", "nucleotide", "count"}
    expected = (2.0 * result["target"] + 3.0 * result["unifrac"] + 0.5 * result["nucleotide"]
                + 4.0 * result["count"])
    assert result["total"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert result["total"].requires_grad and not result["target"].requires_grad
    assert result["unifrac"].item() == pytest.approx(
        pairwise_distance_loss(outputs["distances"], batch["distances"]).item())
    result["total"].backward()
    assert all(outputs[k].grad is not None for k in ("prediction", "distances", "count_prediction"))


def test_multitask_skips_zero_penalties_and_missing_inputs():
    outputs, batch = _outputs_and_batch()
    del outputs["count_prediction"]
    batch["targets"] = None
    result = MultiTaskLoss(penalty=0.0, target_loss=MSELoss())(outputs, batch)
    assert set(result) == {"total", "nucleotide"}
    assert result["total"].item() == pytest.approx(result["nucleotide"].item())
    empty = MultiTaskLoss(penalty=0.0, nuc_penalty=0.0)(outputs, batch)
    assert set(empty) == {"total"} and empty["total"].item() == 0.0 and empty["total"].requires_grad


def test_multitask_faith_pd_and_sample_weights():
    faith = torch.tensor([[1.0], [2.0], [4.0]], requires_grad=True)
    batch = {"distances": torch.tensor([1.0, 1.0, 1.0]), "targets": torch.tensor([0.0, 1.0, 2.0]),
             "sample_weights": torch.tensor([1.0, 0.0, 0.0])}
    outputs = {"faith_pd": faith, "prediction": torch.tensor([[1.0], [5.0], [5.0]])}
    result = MultiTaskLoss(target_loss=MAELoss())(outputs, batch)
    assert result["unifrac"].item() == pytest.approx((0 + 1 + 9) / 3)
    assert result["target"].item() == pytest.approx(1.0)
    unweighted = MultiTaskLoss(target_loss=MAELoss())(outputs, batch, use_sample_weights=False)
    assert unweighted["target"].item() == pytest.approx((1 + 4 + 3) / 3)


def test_half_precision_predictions_are_upcast():
    pred = torch.tensor([[300.0], [-300.0]], dtype=torch.float16)
    target = torch.tensor([0.0, 0.0])
    assert MSELoss()(pred, target).item() == pytest.approx(90000.0)  # 300**2 overflows float16
    q = QuantileLoss((0.5,))
    assert q(torch.zeros(2, 1, 1, dtype=torch.float64), target).dtype == torch.float64
