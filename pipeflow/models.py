"""Model wrappers pipeflow stores inside model artifacts (trusted by the skops codec).

Kept tiny and free of side effects: loading a stored model may instantiate these classes, so
they hold data only and compute with scikit-learn.
"""

from __future__ import annotations

from typing import Any

from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin


class LabelDecodedClassifier(ClassifierMixin, BaseEstimator):
    """A fitted classifier trained on label codes 0..k-1 (xgboost needs them), predicting the
    original labels. ``classes_`` are the original labels, in code order."""

    def __init__(self, pipeline: Any = None, classes: list[Any] | None = None):
        self.pipeline = pipeline
        self.classes = classes

    @property
    def classes_(self) -> Any:
        import numpy as np

        return np.asarray(self.classes)

    def fit(self, X: Any, y: Any) -> LabelDecodedClassifier:  # noqa: N803 (sklearn naming)
        codes, self.classes = self.encode(y)
        self.pipeline.fit(X, codes)
        return self

    @staticmethod
    def encode(y: Any) -> tuple[Any, list[Any]]:
        """The label codes 0..k-1 of ``y`` and the labels, in code order (what ``fit`` trains
        the pipeline on and keeps)."""
        import numpy as np
        import pandas as pd

        # np.unique's classes and codes, by hashing instead of sorting every label: a sort of a
        # million string labels costs 0.4 s, as much as a fifth of the xgboost fit it precedes.
        # A Series is factorized as it is (pyarrow strings: 0.02 s, not 0.09 s via Python
        # strings), but a categorical one, whose order would be its categories', not the labels'
        if not isinstance(y, pd.Series) or isinstance(y.dtype, pd.CategoricalDtype):
            y = np.asarray(y)
        codes, classes = pd.factorize(y, sort=True, use_na_sentinel=False)
        return codes, np.asarray(classes).tolist()

    def predict(self, X: Any) -> Any:  # noqa: N803
        import numpy as np

        labels = np.asarray(self.classes)  # ints stay ints: score() compares with the target
        return labels[np.asarray(self.pipeline.predict(X), dtype=int)]

    def predict_proba(self, X: Any) -> Any:  # noqa: N803
        return self.pipeline.predict_proba(X)

    def __sklearn_is_fitted__(self) -> bool:
        return self.classes is not None


class NumericColumns(TransformerMixin, BaseEstimator):
    """The preprocessing of a tree ensemble on numeric features: the columns, in order, as one
    float64 matrix, values as they are (NaN stays missing). A ColumnTransformer's passthrough does
    the same with two copies of the table (selection, then stacking): 0.5 s for 1M x 28. Here a
    frame whose floats are one block comes back as a view (column-major; xgboost reads strides),
    and anything else is converted once."""

    def __init__(self, columns: list[str] | None = None):
        self.columns = columns

    def fit(self, X: Any, y: Any = None) -> NumericColumns:  # noqa: N803
        import numpy as np

        if hasattr(X, "columns"):  # scikit-learn's record of the input, as a ColumnTransformer's
            self.feature_names_in_ = np.asarray([str(c) for c in X.columns], dtype=object)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: Any) -> Any:  # noqa: N803
        import numpy as np

        if hasattr(X, "columns"):
            return X[list(self.columns or [])].to_numpy(dtype=np.float64, na_value=np.nan)
        return np.asarray(X, dtype=np.float64)

    def get_feature_names_out(self, input_features: Any = None) -> Any:
        import numpy as np

        return np.asarray(self.columns or [], dtype=object)

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "n_features_in_")


# Column transformations used inside stored pipelines (FunctionTransformer needs importable,
# trusted functions).


def flatten(values: Any) -> Any:
    """(n, 1) column -> n strings, as TfidfVectorizer wants."""
    import numpy as np

    return np.asarray(values, dtype=object).reshape(-1).astype(str)


def as_strings(values: Any) -> Any:
    import numpy as np
    import pandas as pd

    array = np.asarray(values, dtype=object)
    out = array.astype(str).astype(object)
    out[pd.isna(array)] = np.nan  # None, NaN, NaT, pd.NA; elementwise on an object array
    return out


def days_since_epoch(values: Any) -> Any:
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame(values)
    return np.column_stack(
        [
            pd.to_datetime(frame[c], errors="coerce").astype("int64").where(frame[c].notna())
            / 86_400e9
            for c in frame.columns
        ]
    )
