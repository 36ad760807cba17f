"""Helpers the trained pipelines reference by name (pipeflow.models)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pipeflow.models import as_strings


def test_as_strings_keeps_missing_values_missing_so_the_imputer_sees_them() -> None:
    column = pd.DataFrame({"region": ["north", None, math.nan, "south-east", 3, pd.NA]})
    out = as_strings(column)
    assert out.shape == (6, 1) and out.dtype == object
    values = out.ravel().tolist()
    assert values[0] == "north" and values[3] == "south-east" and values[4] == "3"
    # missing stays missing (an earlier version turned it into "na"/"nan" strings, a category
    # of its own that the SimpleImputer's '<missing>' never replaced)
    assert all(isinstance(v, float) and np.isnan(v) for v in (values[1], values[2], values[5]))


def test_label_codes_are_np_uniques_for_every_kind_of_label_column() -> None:
    from sklearn.dummy import DummyClassifier

    from pipeflow.models import LabelDecodedClassifier

    seen: list = []

    class Recorder(DummyClassifier):
        def fit(self, X, y, sample_weight=None):  # noqa: N803
            seen.append(np.asarray(y))
            return super().fit(X, y)

    labels = ["theft", "fire", "theft", "collision", "fire"]
    columns = [
        pd.Series(labels),  # pandas' default text dtype
        pd.Series(labels, dtype=object),
        pd.Series([3, 1, 3, 0, 1]),
        # categories in an order of their own: classes still sort as the labels do
        pd.Series(pd.Categorical(labels, categories=["theft", "fire", "collision"])),
        np.asarray(labels, dtype=object),
    ]
    X = pd.DataFrame({"x": range(5)})
    for y in columns:
        model = LabelDecodedClassifier(Recorder()).fit(X, y)
        classes, codes = np.unique(np.asarray(y), return_inverse=True)
        assert model.classes == classes.tolist()
        assert seen[-1].tolist() == codes.tolist()
        assert model.predict(X).tolist() == [classes[np.bincount(codes).argmax()]] * 5


def test_numeric_columns_are_the_passthrough_without_copying_a_float_block() -> None:
    from sklearn.compose import ColumnTransformer

    from pipeflow.models import NumericColumns

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(1000, 4)), columns=["a", "b", "c", "d"])
    frame.loc[::7, "b"] = np.nan
    columns = ["a", "b", "c", "d"]
    step = NumericColumns(columns).fit(frame)
    out = step.transform(frame)
    passthrough = ColumnTransformer([("numeric", "passthrough", columns)]).fit_transform(frame)
    np.testing.assert_array_equal(out, passthrough)  # NaN where NaN
    assert np.shares_memory(out, frame["a"].to_numpy())  # a view of the frame's block
    assert step.get_feature_names_out().tolist() == columns
    assert step.feature_names_in_.tolist() == columns and step.n_features_in_ == 4
    # other column orders, integers and nullable integers are converted, missing -> NaN
    mixed = pd.DataFrame(
        {"d": [1.5, 2.5], "a": [1, 2], "b": pd.array([None, 4], dtype="Int64"), "c": [0.0, 1.0]}
    )
    np.testing.assert_array_equal(
        step.transform(mixed), [[1.0, np.nan, 0.0, 1.5], [2.0, 4.0, 1.0, 2.5]]
    )
    np.testing.assert_array_equal(step.transform(out), out)  # an array passes as it is
