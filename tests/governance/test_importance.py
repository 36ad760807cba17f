"""feature_importance: permutation importance on real fitted models, xgboost contributions."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from pipeflow.core.stage import StageContext
from pipeflow.governance import feature_importance
from pipeflow.governance.importance import xgboost_contributions
from pipeflow.models import LabelDecodedClassifier
from pipeflow.stages.train import TrainConfig, fit


def table(n: int = 600, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """``signal`` decides the label; ``noise`` and ``region`` carry nothing."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=n)
    X = pd.DataFrame(
        {
            "signal": signal,
            "noise": rng.normal(size=n),
            "region": rng.choice(["north", "south", None], size=n),
        }
    )
    label = np.where(signal > 0.3, "high", np.where(signal < -0.3, "low", "mid"))
    return X, pd.Series(label, name="label")


def trained(estimator: str, **params) -> tuple[object, pd.DataFrame, pd.Series]:
    X, y = table()
    config = TrainConfig(estimator=estimator, target="label", params=params)
    context = StageContext(run_id="t", stage="model", params={}, base_dir=None)  # type: ignore[arg-type]
    model, _ = fit(config, X, y, context, dict(config.params))
    return model, X, y


def test_an_informative_column_ranks_above_noise():
    model, X, y = trained("sklearn.linear_model.LogisticRegression", max_iter=500)
    result = feature_importance(model, X, y, task="classification", n_repeats=3)
    assert result["method"] == "permutation"
    assert result["scoring"] == "accuracy"
    assert result["rows"] == 600
    names = [f["name"] for f in result["features"]]
    assert names[0] == "signal"
    assert set(names) == {"signal", "noise", "region"}
    by_name = {f["name"]: f for f in result["features"]}
    assert by_name["signal"]["mean"] > by_name["noise"]["mean"] + 0.2
    assert "contributions" not in result  # not an xgboost model
    json.dumps(result, allow_nan=False)


def test_large_tables_are_sampled_the_same_way_every_time():
    model, X, y = trained("sklearn.linear_model.LogisticRegression", max_iter=500)
    first = feature_importance(model, X, y, task="classification", max_rows=200, n_repeats=2)
    again = feature_importance(model, X, y, task="classification", max_rows=200, n_repeats=2)
    assert first["rows"] == 200
    assert first == again


def test_regression_on_a_plain_sklearn_pipeline_scores_r2():
    rng = np.random.default_rng(1)
    X = pd.DataFrame({"size": rng.uniform(0, 10, 400), "colour": rng.choice(["red", "blue"], 400)})
    y = 3 * X["size"] + rng.normal(scale=0.1, size=400)
    model = Pipeline(
        [
            (
                "prepare",
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), ["size"]),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["colour"]),
                    ]
                ),
            ),
            ("model", LinearRegression()),
        ]
    ).fit(X, y)
    result = feature_importance(model, X, y, task="regression", n_repeats=2)
    assert result["scoring"] == "r2"
    assert [f["name"] for f in result["features"]] == ["size", "colour"]
    assert result["features"][0]["mean"] > 1.0


def test_xgboost_classifier_gets_contributions_per_model_feature():
    model, X, y = trained("xgboost.XGBClassifier", n_estimators=20, max_depth=3)
    assert isinstance(model, LabelDecodedClassifier)
    result = feature_importance(model, X, y, task="classification", max_rows=300, n_repeats=2)
    assert result["features"][0]["name"] == "signal"
    contributions = result["contributions"]
    assert "error" not in contributions
    assert contributions["method"].startswith("xgboost pred_contribs")
    features = contributions["features"]
    assert features[0]["name"] == "numeric__signal"  # ColumnTransformer's output names
    assert [f["mean_abs"] for f in features] == sorted(
        (f["mean_abs"] for f in features), reverse=True
    )
    assert len(features) <= 30
    json.dumps(result, allow_nan=False)


def test_contribution_failures_are_reported_not_raised():
    model, X, _ = trained("xgboost.XGBClassifier", n_estimators=5, max_depth=2)
    result = xgboost_contributions(model, X.drop(columns=["signal"]))
    assert result is not None
    assert "signal" in result["error"]


def test_bad_task_is_an_error():
    model, X, y = trained("sklearn.linear_model.LogisticRegression", max_iter=500)
    with pytest.raises(ValueError, match="classification' or 'regression"):
        feature_importance(model, X, y, task="ranking")
