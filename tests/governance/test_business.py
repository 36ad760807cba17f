"""Business metrics: a cost matrix, value per right answer, cost per unit of error, SLA breaches;
and the declaration refused where it cannot mean anything."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from pipeflow.governance.business import BusinessConfig, business_metrics, unknown_classes

FRAUD = {"cost": {"fraud": {"legit": 500}, "legit": {"fraud": 20}}, "value_per_correct": 12.5}


def test_a_cost_matrix_prices_each_kind_of_mistake_and_right_answers_earn() -> None:
    y_true = ["fraud", "fraud", "legit", "legit", "legit"]
    y_pred = ["legit", "fraud", "fraud", "legit", "legit"]
    m = business_metrics(y_true, y_pred, FRAUD)
    assert m["rows"] == 5 and m["cost_total"] == 520.0 and m["cost_per_prediction"] == 104.0
    assert m["value_total"] == 37.5 and m["value_per_prediction"] == 7.5
    assert m["net_value_per_prediction"] == pytest.approx((37.5 - 520) / 5)
    assert m["sla_breach_rate"] is None  # no SLA declared, no latency given


def test_labels_are_compared_as_text_as_in_yaml_keys() -> None:
    declared = BusinessConfig.model_validate({"cost": {1: {0: 5}}}).model_dump(exclude_none=True)
    assert declared["cost"] == {"1": {"0": 5.0}}
    assert business_metrics([1, 1, 0], [0, 1, 0], declared)["cost_total"] == 5.0


def test_a_regressor_pays_per_unit_of_absolute_error() -> None:
    m = business_metrics([1.0, 2.0, 4.0], [1.5, 2.0, 3.0], {"cost_per_unit_error": 2.0})
    assert m["cost_total"] == 3.0 and m["cost_per_prediction"] == 1.0
    assert m["value_total"] is None and m["net_value_per_prediction"] == -1.0


def test_sla_breaches_count_the_rows_answered_slower_than_promised() -> None:
    latency = [10.0, 60.0, 70.0, math.nan, 50.0]
    m = business_metrics([], [], {"sla_latency_ms": 50}, latency_ms=latency)
    assert m["sla_breach_rate"] == 0.5 and m["rows"] == 0 and m["cost_total"] is None


def test_classes_the_model_cannot_predict_are_named_by_path() -> None:
    assert unknown_classes(FRAUD, ["fraud", "legit"]) == []
    assert unknown_classes(FRAUD, ["fraud", "ok"]) == ["cost.fraud.legit", "cost.legit"]


def test_an_empty_or_contradictory_declaration_is_refused() -> None:
    with pytest.raises(ValidationError, match="at least one of cost"):
        BusinessConfig()
    with pytest.raises(ValidationError, match="exclude each other"):
        BusinessConfig(cost={"a": {"b": 1}}, cost_per_unit_error=1)
    with pytest.raises(ValidationError, match="sla_latency_ms"):
        BusinessConfig(sla_latency_ms=0)


def test_promotion_refuses_a_declaration_that_does_not_fit_the_model() -> None:
    """The promote stage's check on the evaluation rows, with real fitted models."""
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LinearRegression, LogisticRegression

    from pipeflow.stages.promote import _business

    X = np.arange(20, dtype=float).reshape(-1, 1)
    labels = pd.Series(["low"] * 10 + ["high"] * 10)
    classifier = LogisticRegression().fit(X, labels)
    regressor = LinearRegression().fit(X, X[:, 0] * 2)
    with pytest.raises(ValueError, match=r"business\.cost\.low\.medium: no such class"):
        _business(
            BusinessConfig(cost={"low": {"medium": 1}}),
            classifier, labels, classifier.predict(X), {}, "classification",
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"business\.cost: not for a regression model"):
        _business(
            BusinessConfig(cost={"1": {"2": 1}}),
            regressor, pd.Series(X[:, 0]), regressor.predict(X), {}, "regression",
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"business\.cost_per_unit_error: not for a classif"):
        _business(
            BusinessConfig(cost_per_unit_error=1),
            classifier, labels, classifier.predict(X), {}, "classification",
        )  # fmt: skip
    fine = _business(
        BusinessConfig(cost={"low": {"high": 3}}, value_per_correct=1),
        classifier, labels, classifier.predict(X), {}, "classification",
    )  # fmt: skip
    declared = {"cost": {"low": {"high": 3.0}}, "value_per_correct": 1.0}
    assert fine == business_metrics(labels.tolist(), classifier.predict(X), declared)
