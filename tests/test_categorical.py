"""CategoricalEncoder, category_keys and CategoryWeights."""

import json
import logging

import numpy as np
import pandas as pd
import pytest

from aam.data.categorical import CategoricalEncoder, CategoryWeights, category_keys
from aam.errors import AamError


@pytest.fixture
def train_df() -> pd.DataFrame:
    return pd.DataFrame(
        {"site": ["gut", "oral", "gut", "skin", np.nan], "batch": [2.0, 1.0, np.nan, 1.0, 3.0]},
        index=pd.Index(["s1", "s2", "s3", "s4", "s5"]),
    )


def test_fit_sorts_values_from_one(train_df):
    enc = CategoricalEncoder().fit(train_df, ["site", "batch"])
    assert enc.columns == ["site", "batch"]
    assert enc.cardinalities == [4, 4]  # 3 values + unknown each
    codes = enc.transform(train_df, ["s1", "s2", "s3", "s4", "s5"])
    assert codes.dtype == np.int64
    np.testing.assert_array_equal(codes, [[1, 2], [2, 1], [1, 0], [3, 1], [0, 3]])
    assert enc.inverse("site", 3) == "skin"
    assert enc.inverse("batch", 1) == "1"
    assert enc.inverse("site", 0) is None


def test_unseen_missing_and_absent_ids_map_to_zero_with_one_warning_per_column(train_df, caplog):
    enc = CategoricalEncoder().fit(train_df, ["site", "batch"])
    new = pd.DataFrame({"site": ["nose", "gut", "ear", "nose"], "batch": [1, 7, 2, np.nan]},
                       index=["v1", "v2", "v3", "v4"])
    with caplog.at_level(logging.WARNING, logger="aam.data.categorical"):
        codes = enc.transform(new, ["v1", "v2", "v3", "v4", "not-in-metadata"])
    # integer 1 at predict time matches float 1.0 at training time
    np.testing.assert_array_equal(codes, [[0, 1], [1, 0], [0, 2], [0, 0], [0, 0]])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "'site'" in warnings[0] and "3 sample(s)" in warnings[0] and "'ear', 'nose'" in warnings[0]
    assert "'batch'" in warnings[1] and "'7'" in warnings[1]


def test_no_warning_when_all_values_known(train_df, caplog):
    enc = CategoricalEncoder().fit(train_df, ["site"])
    with caplog.at_level(logging.WARNING):
        enc.transform(train_df, list(train_df.index))
    assert not caplog.records


def test_round_trip_through_json(train_df):
    enc = CategoricalEncoder().fit(train_df, ["site", "batch"])
    again = CategoricalEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    ids = ["s5", "s4", "s3", "s2", "s1", "x"]
    np.testing.assert_array_equal(again.transform(train_df, ids), enc.transform(train_df, ids))
    assert again.cardinalities == enc.cardinalities and again.columns == enc.columns


def test_fit_errors(train_df):
    with pytest.raises(AamError, match="no training samples"):
        CategoricalEncoder().fit(train_df.iloc[:0], ["site"])
    with pytest.raises(AamError, match="no value"):
        CategoricalEncoder().fit(train_df.assign(empty=np.nan), ["empty"])
    with pytest.raises(AamError, match="not in the metadata"):
        CategoricalEncoder().fit(train_df, ["nope"])


def test_category_keys(train_df):
    keys = category_keys(train_df, ["s1", "s3", "s5", "zz"], ["site", "batch"])
    assert list(keys) == ["site=gut,batch=2", None, None, None]
    with pytest.raises(AamError):
        category_keys(train_df, ["s1"], ["nope"])


def test_auto_weights_balance_categories(train_df):
    weights = CategoryWeights.from_option("auto", train_df, "site")
    # 4 samples with a value, 3 categories: gut 4/(3*2), oral and skin 4/(3*1)
    assert weights.weights == pytest.approx({"gut": 4 / 6, "oral": 4 / 3, "skin": 4 / 3})
    per_sample = weights.sample_weights(train_df, ["s1", "s2", "s4", "s5", "unknown"])
    np.testing.assert_allclose(per_sample, [4 / 6, 4 / 3, 4 / 3, 1.0, 1.0], rtol=1e-6)
    # every category then carries the same total weight
    totals = {v: sum(weights.weights[v] for k in train_df["site"] if k == v) for v in weights.weights}
    assert totals == pytest.approx({"gut": 4 / 3, "oral": 4 / 3, "skin": 4 / 3})


def test_json_weights_accept_bare_and_column_keys(train_df, caplog):
    with caplog.at_level(logging.WARNING):
        weights = CategoryWeights.from_option('{"gut": 2, "site=oral": 0.5, "moon": 3}', train_df, "site")
    assert weights.weights == {"gut": 2.0, "oral": 0.5, "moon": 3.0}
    assert any("'moon'" in r.getMessage() for r in caplog.records)
    np.testing.assert_allclose(weights.sample_weights(train_df, ["s1", "s2", "s4"]), [2.0, 0.5, 1.0])
    again = CategoryWeights.from_dict(json.loads(json.dumps(weights.to_dict())))
    assert again.weights == weights.weights and again.column == "site"


@pytest.mark.parametrize("option", ["{not json", "[1, 2]", '{"gut": "heavy"}', '{"batch=1": 2}', '{"gut": -1}'])
def test_bad_weight_options(train_df, option):
    with pytest.raises(AamError) as err:
        CategoryWeights.from_option(option, train_df, "site")
    assert err.value.source == "--categorical-loss-weights"
