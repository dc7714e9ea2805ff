"""Target transforms, the legacy-flag mapping and count normalisation."""

import json
import logging

import numpy as np
import pytest

from aam.data.normalization import (
    TARGET_TRANSFORMS,
    resolve_target_transform,
    transform_from_dict,
)
from aam.errors import AamError

RNG = np.random.default_rng(0)
Y = RNG.gamma(2.0, 10.0, size=60)  # non-negative, so every transform applies
GROUPS = np.array(["a"] * 30 + ["b"] * 29 + ["c"], dtype=object)  # "c": a one-sample category


def _fitted(name):
    return TARGET_TRANSFORMS[name]().fit(Y, GROUPS)


@pytest.mark.parametrize("name", list(TARGET_TRANSFORMS))
def test_round_trip_1d_and_2d(name):
    transform = _fitted(name)
    z = transform.transform(Y, GROUPS)
    np.testing.assert_allclose(transform.inverse(z, GROUPS), Y, rtol=1e-10, atol=1e-10)
    quantiles = np.stack([z - 0.1, z, z + 0.1], axis=1)  # [N, Q]
    back = transform.inverse(quantiles, GROUPS)
    assert back.shape == (60, 3)
    np.testing.assert_allclose(back[:, 1], Y, rtol=1e-10, atol=1e-10)
    for q in (0, 2):
        np.testing.assert_allclose(back[:, q], transform.inverse(quantiles[:, q], GROUPS), rtol=1e-12)


@pytest.mark.parametrize("name", list(TARGET_TRANSFORMS))
def test_serialise_round_trip(name):
    transform = _fitted(name)
    state = json.loads(json.dumps(transform.to_dict()))
    again = transform_from_dict(state)
    assert type(again) is type(transform)
    z = RNG.normal(size=60)
    np.testing.assert_array_equal(again.transform(Y, GROUPS), transform.transform(Y, GROUPS))
    np.testing.assert_array_equal(again.inverse(z, GROUPS), transform.inverse(z, GROUPS))


def test_reference_values():
    y = np.array([2.0, 4.0, 6.0, 8.0])
    np.testing.assert_allclose(_fit("minmax", y).transform(y), [0, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(_fit("zscore", y).transform(y), (y - 5) / np.sqrt(5))  # population std
    np.testing.assert_allclose(_fit("none", y).transform(y), y)
    logs = np.log1p(y)
    np.testing.assert_allclose(_fit("log-zscore", y).transform(y), (logs - logs.mean()) / logs.std())
    np.testing.assert_allclose(_fit("log-minmax", y).transform(y),
                               (logs - logs.min()) / (logs.max() - logs.min()))


def _fit(name, y):
    return TARGET_TRANSFORMS[name]().fit(y)


@pytest.mark.parametrize("name", ["minmax", "zscore", "log-minmax", "log-zscore"])
def test_constant_target_gets_scale_one(name):
    y = np.full(5, 0.1)
    transform = _fit(name, y)
    z = transform.transform(y)
    assert np.all(np.abs(z) < 1e-12)
    np.testing.assert_allclose(transform.inverse(z + 1.0) - transform.inverse(z),
                               np.expm1(np.log1p(0.1) + 1) - 0.1 if transform.log else 1.0)


@pytest.mark.parametrize("name", ["log-minmax", "log-zscore", "log-zscore-category"])
def test_log_transforms_reject_negative_targets(name):
    with pytest.raises(AamError, match="non-negative") as err:
        TARGET_TRANSFORMS[name]().fit(np.array([1.0, -2.0, 3.0]), np.array(["a", "a", "a"], dtype=object))
    assert "zscore" in err.value.hint


def test_nonfinite_and_empty_targets_rejected():
    with pytest.raises(AamError, match="NaN"):
        _fit("zscore", np.array([1.0, np.nan]))
    with pytest.raises(AamError, match="no training targets"):
        _fit("minmax", np.array([]))


def test_category_zscore_statistics_are_shrunk_toward_global():
    transform = _fitted("zscore-category")
    m, mean, var = 5.0, Y.mean(), Y.var()
    a = Y[:30]
    mean_a, std_a = transform.stats["a"]
    assert mean_a == pytest.approx((30 * a.mean() + m * mean) / 35, rel=1e-12)
    assert std_a == pytest.approx(np.sqrt((30 * a.var() + m * var) / 35), rel=1e-12)
    # one-sample category: std sqrt(5/6) of the global std, not ~0
    assert transform.stats["c"][1] == pytest.approx(np.sqrt(5 / 6) * np.sqrt(var), rel=1e-12)


def test_one_sample_category_stays_bounded():
    y = np.concatenate([RNG.normal(50, 10, size=40), [7.0]])
    groups = np.array(["big"] * 40 + ["single"], dtype=object)
    transform = TARGET_TRANSFORMS["zscore-category"]().fit(y, groups)
    other_members = np.array([5.0, 60.0, 100.0])  # later samples of the tiny category
    z = transform.transform(other_members, np.array(["single"] * 3, dtype=object))
    assert np.all(np.abs(z) < 10)


def test_unseen_group_uses_global_stats_with_one_warning(caplog):
    transform = _fitted("zscore-category")
    y = np.array([10.0, 20.0, 30.0])
    groups = np.array(["new", "new", None], dtype=object)
    with caplog.at_level(logging.WARNING, logger="aam.data.normalization"):
        z = transform.transform(y, groups)
        transform.inverse(z, groups)
    np.testing.assert_allclose(z, (y - Y.mean()) / Y.std())
    assert len(caplog.records) == 1 and "new" in caplog.records[0].getMessage()


def test_category_zscore_needs_groups_to_fit():
    with pytest.raises(ValueError):
        TARGET_TRANSFORMS["zscore-category"]().fit(Y)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (dict(target_transform=None), (None, [])),
        (dict(target_transform="zscore"), ("zscore", [])),
        (dict(target_transform=None, normalize_by="site"), ("zscore-category", ["site"])),
        (dict(target_transform="zscore-category", normalize_by="site, host"), ("zscore-category", ["site", "host"])),
        (dict(target_transform=None, normalize_targets=True), ("minmax", [])),
        (dict(target_transform=None, normalize_targets=False), ("none", [])),
        (dict(target_transform=None, log_transform_targets=True), ("log-minmax", [])),
        (dict(target_transform=None, normalize_targets_by="site"), ("zscore-category", ["site"])),
        (dict(target_transform=None, normalize_targets_by="site,host", log_transform_targets=True),
         ("log-zscore-category", ["site", "host"])),
    ],
)
def test_resolve_target_transform(args, expected):
    name, columns, warnings = resolve_target_transform(**args)
    assert (name, columns) == expected
    legacy = any(k in args for k in ("normalize_targets", "normalize_targets_by", "log_transform_targets"))
    assert bool(warnings) == legacy
    if legacy:
        assert all("deprecated" in w or "ignored" in w for w in warnings)
        assert f"--target-transform {name}" in warnings[0]


def test_resolve_target_transform_explicit_flag_wins_with_warning():
    name, columns, warnings = resolve_target_transform("zscore", normalize_targets=True, log_transform_targets=True)
    assert (name, columns) == ("zscore", [])
    assert len(warnings) == 2 and all("ignored" in w for w in warnings)


@pytest.mark.parametrize(
    "args",
    [
        dict(target_transform="zscore-category"),
        dict(target_transform="minmax", normalize_by="site"),
        dict(target_transform="bogus"),
    ],
)
def test_resolve_target_transform_errors(args):
    with pytest.raises(AamError):
        resolve_target_transform(**args)


