"""Streaming metrics against scikit-learn on random data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from aam.objectives.metrics import (
    ClassificationMetrics,
    DistanceMetrics,
    NucleotideAccuracy,
    RegressionMetrics,
    default_best_metric,
    metric_direction,
    point_prediction,
)


def _regression_data(n=37, outputs=1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    target = torch.randn(n, outputs, generator=gen, dtype=torch.float64) * 3 + 1
    pred = target + torch.randn(n, outputs, generator=gen, dtype=torch.float64)
    return pred, target


@pytest.mark.parametrize("outputs", [1, 3])
def test_regression_matches_sklearn(outputs):
    pred, target = _regression_data(outputs=outputs)
    m = RegressionMetrics()
    m.update(pred, target)
    result = m.compute()
    assert result["n"] == 37
    assert result["mae"] == pytest.approx(skm.mean_absolute_error(target, pred))
    assert result["mse"] == pytest.approx(skm.mean_squared_error(target, pred))
    assert result["rmse"] == pytest.approx(skm.root_mean_squared_error(target, pred))
    assert result["r2"] == pytest.approx(skm.r2_score(target, pred))


def test_regression_streaming_equals_one_shot_and_merge():
    pred, target = _regression_data(n=50)
    one_shot = RegressionMetrics()
    one_shot.update(pred, target)
    chunked = RegressionMetrics()
    for start in range(0, 50, 7):  # uneven last chunk: nothing dropped
        chunked.update(pred[start:start + 7, 0], target[start:start + 7, 0])
    assert chunked.compute() == pytest.approx(one_shot.compute())
    rank0, rank1 = RegressionMetrics(), RegressionMetrics()
    rank0.update(pred[:20], target[:20])
    rank1.update(pred[20:], target[20:])
    rank0.merge(rank1.state())
    assert rank0.compute() == pytest.approx(one_shot.compute())


def test_regression_edge_cases():
    assert math.isnan(RegressionMetrics().compute()["mae"])
    m = RegressionMetrics()
    m.update(torch.tensor([2.0, 2.0]), torch.tensor([2.0, 2.0]))
    assert m.compute()["r2"] == skm.r2_score([2.0, 2.0], [2.0, 2.0])


def test_point_prediction_takes_middle_quantile():
    pred = torch.arange(12.0).reshape(2, 2, 3)
    assert torch.equal(point_prediction(pred), pred[..., 1])
    assert torch.equal(point_prediction(pred[..., 0]), pred[..., 0])


def test_distance_metrics_use_upper_triangle_pairs():
    gen = torch.Generator().manual_seed(3)
    m = DistanceMetrics()
    preds, targets = [], []
    for b in (4, 1, 3):  # the single-sample batch contributes no pair
        pred, target = torch.rand(b, b, generator=gen), torch.rand(b, b, generator=gen)
        m.update(pred, target)
        rows, cols = np.triu_indices(b, k=1)
        preds.append(pred.numpy()[rows, cols])
        targets.append(target.numpy()[rows, cols])
    p, t = np.concatenate(preds), np.concatenate(targets)
    result = m.compute()
    assert m.n_pairs == 6 + 0 + 3
    assert result["mae"] == pytest.approx(skm.mean_absolute_error(t, p), rel=1e-6)
    assert result["r2"] == pytest.approx(skm.r2_score(t, p), rel=1e-5)
    faith = DistanceMetrics()
    faith.update(torch.tensor([[1.0], [2.0]]), torch.tensor([1.5, 2.0]))
    assert faith.compute()["mae"] == pytest.approx(0.25)


def _classification_data(n=60, classes=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    target = torch.randint(0, classes, (n,), generator=gen)
    logits = torch.randn(n, classes, generator=gen) + 1.5 * torch.nn.functional.one_hot(target, classes)
    return logits.log_softmax(-1).double(), target


def test_classification_matches_sklearn():
    log_probs, target = _classification_data()
    m = ClassificationMetrics(4)
    for start in range(0, 60, 16):
        m.update(log_probs[start:start + 16], target[start:start + 16])
    result = m.compute()
    y, probs = target.numpy(), log_probs.exp().numpy()
    pred = probs.argmax(1)
    assert result["n"] == 60
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert result["f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert result["f1"] == result["f1_macro"]
    assert result["f1_weighted"] == pytest.approx(skm.f1_score(y, pred, average="weighted"))
    assert result["auroc"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    np.testing.assert_array_equal(result["confusion_matrix"], skm.confusion_matrix(y, pred, labels=range(4)))


def test_binary_auroc_and_absent_class():
    log_probs, target = _classification_data(n=40, classes=2, seed=1)
    m = ClassificationMetrics()
    m.update(log_probs, target)
    probs = log_probs.exp().numpy()
    assert m.compute()["auroc"] == pytest.approx(skm.roc_auc_score(target.numpy(), probs[:, 1]))
    # class 2 never occurs among targets: it is skipped in the AUROC average, F1 follows sklearn's labels
    log_probs, target = _classification_data(n=50, classes=3, seed=2)
    target[target == 2] = 0
    m = ClassificationMetrics(3)
    m.update(log_probs, target)
    result = m.compute()
    y, probs = target.numpy(), log_probs.exp().numpy()
    expected = np.mean([skm.roc_auc_score(y == k, probs[:, k]) for k in (0, 1)])
    assert result["auroc"] == pytest.approx(expected)
    pred = probs.argmax(1)
    assert result["f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro", zero_division=0))
    single = ClassificationMetrics(2)
    single.update(log_probs[:3, :2], torch.zeros(3, dtype=torch.long))
    assert math.isnan(single.compute()["auroc"])


def test_classification_merge():
    log_probs, target = _classification_data()
    whole, a, b = ClassificationMetrics(4), ClassificationMetrics(4), ClassificationMetrics(4)
    whole.update(log_probs, target)
    a.update(log_probs[:25], target[:25])
    b.update(log_probs[25:], target[25:])
    a.merge(b)
    left, right = a.compute(), whole.compute()
    np.testing.assert_array_equal(left.pop("confusion_matrix"), right.pop("confusion_matrix"))
    assert left == pytest.approx(right)


def test_nucleotide_accuracy_from_counts():
    acc = NucleotideAccuracy()
    assert math.isnan(acc.compute()["accuracy"])
    acc.update(torch.tensor(3), torch.tensor(4))
    other = NucleotideAccuracy()
    other.update(torch.tensor(1), torch.tensor(6))
    acc.merge(other.state())
    assert acc.compute() == {"accuracy": pytest.approx(0.4), "n": 10}


def test_best_metric_direction_and_defaults():
    assert [metric_direction(m) for m in ("val_loss", "r2", "mae", "accuracy", "f1")] == \
        ["min", "max", "min", "max", "max"]
    assert metric_direction("val_mae") == "min" and metric_direction("val_auroc") == "max"
    with pytest.raises(ValueError):
        metric_direction("bogus")
    assert default_best_metric(False) == "mae"
    assert default_best_metric(True) == "f1"
    assert default_best_metric(False, has_target=False) == "val_loss"
