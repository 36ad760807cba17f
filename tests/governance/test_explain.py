"""Explanations per prediction (pipeflow.governance.explain): for real fitted models, base plus
contributions is the model's own margin (decision_function, xgboost's output_margin) or output;
the contributions are keyed by the input columns (one-hot and scaled columns summed back); the
kernel fallback gives the exact Shapley values when it enumerates every coalition and stays
exactly additive when it samples them."""

from __future__ import annotations

import itertools
import math
import pickle
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from pipeflow.errors import ExplainUnavailable
from pipeflow.governance.explain import (
    BACKGROUND_ROWS,
    MAX_COALITIONS,
    _output,
    background_rows,
    explainer_for,
    output_sources,
)
from pipeflow.governance.profile import reference_profile
from pipeflow.models import LabelDecodedClassifier

FEATURES = ["age", "income", "region", "plan"]
ROLES = {"age": "numeric", "income": "numeric", "region": "categorical", "plan": "categorical"}


def table(n: int = 400, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.normal(40, 10, n),
            "income": rng.normal(50, 20, n),
            "region": rng.choice(["north", "south", "east"], n),
            "plan": rng.choice(["a", "b"], n),
        }
    )


def record_of(X: pd.DataFrame, roles: dict[str, str] = ROLES) -> dict[str, Any]:
    """A registry record as train writes it: the signature and the training profile."""
    return {
        "name": "m",
        "version": 1,
        "signature": {
            "features": [{"name": c, "dtype": str(X[c].dtype), "role": roles[c]} for c in X.columns]
        },
        "reference": reference_profile(X, roles),
    }


def scaled_one_hot() -> ColumnTransformer:
    return ColumnTransformer(
        [
            ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
             ["age", "income"]),
            ("categorical", OneHotEncoder(handle_unknown="ignore"), ["region", "plan"]),
        ]
    )  # fmt: skip


def binary(X: pd.DataFrame) -> pd.Series:
    return ((X.age > 40) ^ (X.region == "north")).map({False: "no", True: "yes"})


def three_classes(X: pd.DataFrame) -> pd.Series:
    return pd.Series(
        np.select([X.income > 60, X.region == "north"], ["high", "north"], "other"),
        index=X.index,
    )


def additive(found: Any, margin: Any, tol: float) -> None:
    total = found.base + found.values.sum(axis=1)
    scale = np.maximum(1.0, np.abs(margin))
    assert np.all(np.abs(total - margin) <= tol * scale), np.abs(total - margin).max()


# ------------------------------------------------------------------------------ linear models


def test_linear_pipeline_with_scaling_and_one_hot_adds_up_to_decision_function() -> None:
    X = table()
    model = Pipeline([("prepare", scaled_one_hot()), ("model", LogisticRegression())])
    model.fit(X, binary(X))
    explainer = explainer_for(model, record_of(X), FEATURES)
    rows = X.head(20)
    found = explainer.explain(model, rows)
    assert explainer.method == "linear" and found.output == "margin"
    assert found.names == FEATURES  # the one-hot and scaled columns summed back to their inputs
    additive(found, model.decision_function(rows), 1e-9)
    assert found.classes == ["yes"] * 20  # binary: the second class, the one the margin is of
    # one column's share is coef x (x - mean) over the one-hot columns it became
    Xt = model[:-1].transform(rows)
    coef = model[-1].coef_[0]
    region = [i for i, n in enumerate(model[:-1].get_feature_names_out()) if "region" in n]
    share = (Xt[:, region] - explainer.mean[region]) @ coef[region]
    assert np.allclose(found.values[:, FEATURES.index("region")], share, atol=1e-12)


def test_multiclass_linear_model_explains_each_rows_predicted_class() -> None:
    X = table()
    y = three_classes(X)
    model = Pipeline([("prepare", scaled_one_hot()), ("model", LogisticRegression(max_iter=2000))])
    model.fit(X, y)
    rows = X.head(30)
    found = explainer_for(model, record_of(X), FEATURES).explain(model, rows)
    margins = model.decision_function(rows)
    picked = margins.argmax(axis=1)
    additive(found, margins[np.arange(30), picked], 1e-9)
    assert found.classes == list(model.predict(rows))
    assert len(set(found.classes)) == 3


def test_linear_regressors_add_up_to_predict_and_without_a_profile_the_base_is_the_intercept() -> (
    None
):
    X = table()
    y = X.age * 2 - X.income + (X.plan == "a") * 5
    for estimator in (Ridge(), LinearRegression()):
        model = Pipeline([("prepare", scaled_one_hot()), ("model", estimator)]).fit(X, y)
        found = explainer_for(model, record_of(X), FEATURES).explain(model, X.head(10))
        additive(found, model.predict(X.head(10)), 1e-9)
        assert found.classes is None
        bare = explainer_for(model, {"name": "m", "version": 1}, FEATURES)
        plain = bare.explain(model, X.head(10))
        assert np.allclose(plain.base, model[-1].intercept_)
        additive(plain, model.predict(X.head(10)), 1e-9)


def test_sparse_text_features_are_explained_by_both_exact_methods() -> None:
    """TF-IDF terms make the preprocessing's output sparse (as pipeflow's train stage builds it
    for text): every term's share goes to the text column."""
    xgboost = pytest.importorskip("xgboost")
    X = table().assign(note=lambda f: np.where(f.plan == "a", "late payment again", "on time"))
    features = [*FEATURES, "note"]
    roles = {**ROLES, "note": "text"}
    prepare = ColumnTransformer(
        [
            ("text_note", TfidfVectorizer(), "note"),
            ("numeric", StandardScaler(), ["age", "income"]),
            ("categorical", OneHotEncoder(handle_unknown="ignore"), ["region", "plan"]),
        ],
        sparse_threshold=1.0,
    )
    y = binary(X)
    rows = X.head(12)
    linear = Pipeline([("prepare", prepare), ("model", LogisticRegression())]).fit(X, y)
    assert hasattr(linear[:-1].transform(rows), "tocsr")  # sparse indeed
    found = explainer_for(linear, record_of(X, roles), features).explain(linear, rows)
    assert found.names == features
    additive(found, linear.decision_function(rows), 1e-9)
    boosted = LabelDecodedClassifier(
        Pipeline([("prepare", prepare), ("model", xgboost.XGBClassifier(n_estimators=20))])
    ).fit(X, y)
    found = explainer_for(boosted, record_of(X, roles), features).explain(boosted, rows)
    inner = boosted.pipeline
    additive(found, inner[-1].predict(inner[:-1].transform(rows), output_margin=True), 1e-9)


# ------------------------------------------------------------------------------------ xgboost


def test_xgboost_contributions_add_up_to_its_output_margin() -> None:
    xgboost = pytest.importorskip("xgboost")
    X = table()
    prepare = ColumnTransformer(
        [
            ("numeric", "passthrough", ["age", "income"]),
            ("categorical", OneHotEncoder(handle_unknown="ignore"), ["region", "plan"]),
        ]
    )
    model = LabelDecodedClassifier(
        Pipeline([("prepare", prepare), ("model", xgboost.XGBClassifier(n_estimators=30))])
    ).fit(X, binary(X))
    rows = X.head(50)
    explainer = explainer_for(model, record_of(X), FEATURES)
    found = explainer.explain(model, rows)
    inner = model.pipeline
    margin = inner[-1].predict(inner[:-1].transform(rows), output_margin=True)
    assert explainer.method == "xgboost" and found.names == FEATURES
    # the base is the booster's bias column up to float32 rounding of the sum
    bias = (
        inner[-1]
        .get_booster()
        .predict(xgboost.DMatrix(inner[:-1].transform(rows)), pred_contribs=True)[:, -1]
    )
    assert np.allclose(found.base, bias, rtol=1e-5, atol=1e-5)
    additive(found, margin, 1e-9)  # the base takes float32 rounding: exact to the margin
    assert found.classes == ["yes"] * 50

    multi = LabelDecodedClassifier(
        Pipeline([("prepare", prepare), ("model", xgboost.XGBClassifier(n_estimators=30))])
    ).fit(X, three_classes(X))
    found = explainer_for(multi, record_of(X), FEATURES).explain(multi, rows)
    inner = multi.pipeline
    margins = inner[-1].predict(inner[:-1].transform(rows), output_margin=True)
    additive(found, margins.max(axis=1), 1e-9)
    assert found.classes == list(multi.predict(rows))

    y = X.age * 2 - X.income
    regressor = Pipeline(
        [("prepare", prepare), ("model", xgboost.XGBRegressor(n_estimators=30))]
    ).fit(X, y)
    found = explainer_for(regressor, record_of(X), FEATURES).explain(regressor, rows)
    margin = regressor[-1].predict(regressor[:-1].transform(rows), output_margin=True)
    additive(found, margin, 1e-9)


# ----------------------------------------------------------------------------- the fallback


def test_a_forest_falls_back_to_the_kernel_method_which_adds_up_exactly() -> None:
    X = table()
    model = Pipeline(
        [("prepare", scaled_one_hot()), ("model", RandomForestClassifier(30, random_state=0))]
    ).fit(X, binary(X))
    rows = X.head(15)
    explainer = explainer_for(model, record_of(X), FEATURES)
    found = explainer.explain(model, rows)
    assert (explainer.method, found.output) == ("kernel", "probability")
    # every coalition of 4 columns but none and all, with each of the background rows
    assert found.evaluations == (2**4 - 2) * BACKGROUND_ROWS
    additive(found, model.predict_proba(rows)[:, 1], 1e-12)
    assert np.allclose(found.base, model.predict_proba(explainer.background)[:, 1].mean())


def test_the_kernel_method_gives_the_exact_shapley_values_of_its_value_function() -> None:
    X = table()
    y = X.age * X.income / 100 + (X.region == "north") * 10
    model = Pipeline(
        [("prepare", scaled_one_hot()), ("model", GradientBoostingRegressor(random_state=0))]
    ).fit(X, y)
    explainer = explainer_for(model, record_of(X), FEATURES)
    row = X.head(3)
    found = explainer.explain(model, row)
    assert explainer.method == "kernel" and found.output == "value"
    background = explainer.background
    M = len(FEATURES)

    def value(i: int, coalition: tuple[int, ...]) -> float:
        mixed = background.copy()
        for j in coalition:
            mixed[FEATURES[j]] = row.iloc[i][FEATURES[j]]
        return float(model.predict(mixed).mean())

    for i in range(len(row)):
        for j in range(M):
            others = [k for k in range(M) if k != j]
            shapley = sum(
                math.factorial(len(s)) * math.factorial(M - len(s) - 1) / math.factorial(M)
                * (value(i, (*s, j)) - value(i, s))
                for size in range(M)
                for s in itertools.combinations(others, size)
            )  # fmt: skip
            assert found.values[i, j] == pytest.approx(shapley, abs=1e-9)
    additive(found, model.predict(row), 1e-12)


def test_many_columns_are_sampled_within_the_budget_and_still_add_up() -> None:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(300, 10)), columns=[f"x{i}" for i in range(10)])
    roles = dict.fromkeys(X.columns, "numeric")
    y = (X.x0 + X.x1 * X.x2 > 0).map({False: 0, True: 1})
    model = RandomForestClassifier(20, random_state=0).fit(X, y)
    explainer = explainer_for(model, record_of(X, roles), list(X.columns))
    found = explainer.explain(model, X.head(8))
    assert found.evaluations == MAX_COALITIONS * BACKGROUND_ROWS
    additive(found, model.predict_proba(X.head(8))[:, 1], 1e-12)
    again = explainer.explain(model, X.head(8))  # the same coalitions: the same answer
    assert np.array_equal(found.values, again.values)


def test_one_column_takes_the_whole_difference_without_evaluating_anything() -> None:
    X = table()[["age"]]
    model = RandomForestClassifier(10, random_state=0).fit(X, binary(table()))
    found = explainer_for(model, record_of(X, {"age": "numeric"}), ["age"]).explain(model, X[:5])
    assert found.evaluations == 0
    additive(found, model.predict_proba(X[:5])[:, 1], 1e-12)


def test_a_model_with_no_exact_method_and_no_profile_cannot_be_explained() -> None:
    X = table()
    model = Pipeline(
        [("prepare", scaled_one_hot()), ("model", RandomForestClassifier(5, random_state=0))]
    ).fit(X, binary(X))
    with pytest.raises(ExplainUnavailable, match=r"m@1: RandomForestClassifier .* no training"):
        explainer_for(model, {"name": "m", "version": 1}, FEATURES)


# --------------------------------------------------------------------- columns and background


def test_outputs_map_back_to_their_input_columns_or_to_a_named_group() -> None:
    X = table().assign(note=lambda f: np.where(f.plan == "a", "late payment", "on time"))
    prepare = ColumnTransformer(
        [
            ("text", TfidfVectorizer(), "note"),  # one column: every term is the note's
            ("numeric", StandardScaler(), ["age", "income"]),
            ("categorical", OneHotEncoder(), ["region", "plan"]),
        ]
    ).fit(X)
    names, sources = output_sources(prepare, [*FEATURES, "note"])
    out = prepare.get_feature_names_out()
    assert {str(n): names[s] for n, s in zip(out, sources, strict=True)} == {
        "text__late": "note", "text__on": "note", "text__payment": "note", "text__time": "note",
        "numeric__age": "age", "numeric__income": "income",
        "categorical__region_east": "region", "categorical__region_north": "region",
        "categorical__region_south": "region", "categorical__plan_a": "plan",
        "categorical__plan_b": "plan",
    }  # fmt: skip

    class Mixed(StandardScaler):  # outputs named after neither input column
        def get_feature_names_out(self, input_features: Any = None) -> Any:
            return np.array(["u", "v"], dtype=object)

    grouped = ColumnTransformer([("mixed", Mixed(), ["age", "income"])]).fit(X)
    names, sources = output_sources(grouped, FEATURES)
    assert [names[s] for s in sources] == ["age+income", "age+income"]


def test_background_rows_come_from_the_profile_deterministically() -> None:
    X = table()
    record = record_of(X)
    first = background_rows(record, FEATURES)
    assert first.equals(background_rows(record, FEATURES)) and len(first) == BACKGROUND_ROWS
    assert first.age.between(X.age.min(), X.age.max()).all()
    assert set(first.region) <= set(X.region) and set(first.plan) == {"a", "b"}
    assert background_rows({"name": "m"}, FEATURES) is None


def test_an_explainer_pickles_without_the_model() -> None:
    X = table()
    model = Pipeline(
        [("prepare", scaled_one_hot()), ("model", RandomForestClassifier(200, random_state=0))]
    ).fit(X, binary(X))
    explainer = explainer_for(model, record_of(X), FEATURES)
    assert len(pickle.dumps(explainer)) < len(pickle.dumps(model)) / 20
    assert _output(model, X.head(2), "probability", ["no", "yes"]).shape == (2, 1)
