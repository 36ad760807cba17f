"""Labels read from ``predict_proba`` (:func:`pipeflow.scoring.model._labels_of`) are the
estimator's own ``predict``, for every model it is used on, ties included; any other model is
asked for ``predict``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from pipeflow.models import LabelDecodedClassifier
from pipeflow.scoring.model import ScoreSpec, _proba_decides, score_frame


def table(n: int, classes: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 4)), columns=["a", "b", "c", "d"])
    score = X["a"] + 0.5 * X["b"] - X["c"] + rng.normal(0, 0.7, n)
    edges = np.quantile(score, np.linspace(0, 1, classes + 1)[1:-1])
    labels = np.array([f"k{i}" for i in range(classes)], dtype=object)
    return X, labels[np.searchsorted(edges, score)]


def scaled(final: Any) -> Pipeline:
    columns = ColumnTransformer([("num", StandardScaler(), ["a", "b", "c", "d"])])
    return Pipeline([("prep", columns), ("model", final)])


def xgboost_decoded(**params: Any) -> LabelDecodedClassifier:
    from xgboost import XGBClassifier

    return LabelDecodedClassifier(
        Pipeline([("model", XGBClassifier(n_estimators=8, max_depth=3, **params))])
    )


MODELS = {
    "logistic binary": lambda: LogisticRegression(),
    "logistic in a pipeline, 3 classes": lambda: scaled(LogisticRegression(max_iter=500)),
    "xgboost binary, label-decoded": lambda: xgboost_decoded(),
    "xgboost 3 classes, label-decoded": lambda: xgboost_decoded(),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_labels_from_probabilities_are_the_models_predict(name: str) -> None:
    X, y = table(20_000, 3 if "3 classes" in name else 2)
    model = MODELS[name]().fit(X, y)
    assert _proba_decides(model)
    scored = score_frame(model, X, ScoreSpec(tuple(X.columns)))
    assert scored["prediction"].tolist() == list(model.predict(X))
    proba = model.predict_proba(X)
    classes = list(model.classes_)
    for i, label in enumerate(classes):
        assert np.array_equal(scored[f"proba_{label}"].to_numpy(), proba[:, i])


def test_a_shared_largest_probability_takes_the_models_own_label() -> None:
    """Decision values of 0 and of 1e-20 both give probabilities of exactly 0.5 each, but
    LogisticRegression predicts the first class for 0 and the second for anything above."""
    X, y = table(200, 2)
    model = LogisticRegression().fit(X, y)
    model.coef_[:] = 0.0
    rows = X.iloc[:4]
    for intercept, label in ((0.0, "k0"), (1e-20, "k1"), (-1e-20, "k0")):
        model.intercept_[:] = intercept
        assert (model.predict_proba(rows) == 0.5).all()  # tied, as the test needs
        scored = score_frame(model, rows, ScoreSpec(tuple(X.columns)))
        assert scored["prediction"].tolist() == list(model.predict(rows)) == [label] * 4


def test_three_classes_tied_on_some_rows_take_the_models_own_labels() -> None:
    X, y = table(300, 3)
    model = LogisticRegression(max_iter=500).fit(X, y)
    model.coef_[1] = model.coef_[2]  # classes k1 and k2 score alike on every row
    model.intercept_[1] = model.intercept_[2]
    scored = score_frame(model, X, ScoreSpec(tuple(X.columns)))
    assert scored["prediction"].tolist() == list(model.predict(X))
    assert "k1" in scored["prediction"].tolist()  # argmax takes the first of the tied


def test_other_models_are_asked_for_predict() -> None:
    X, y = table(500, 2)
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)
    assert not _proba_decides(forest)
    assert not _proba_decides(scaled(RandomForestClassifier()))

    class Shifted(LogisticRegression):  # a subclass may predict otherwise: not trusted
        def predict(self, X: Any) -> Any:  # noqa: N803
            return np.full(len(X), "k1", dtype=object)

    shifted = Shifted().fit(X, y)
    assert not _proba_decides(shifted)
    assert set(score_frame(shifted, X, ScoreSpec(tuple(X.columns)))["prediction"]) == {"k1"}
