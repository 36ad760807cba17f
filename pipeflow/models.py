"""Model wrappers pipeflow stores inside model artifacts (trusted by the skops codec).

Kept tiny and free of side effects: loading a stored model may instantiate these classes, so
they hold data only and compute with scikit-learn.
"""

from __future__ import annotations

from typing import Any

from sklearn.base import BaseEstimator, ClassifierMixin


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
        import numpy as np
        import pandas as pd

        # np.unique's classes and codes, by hashing instead of sorting every label: a sort of a
        # million string labels costs 0.4 s, as much as a fifth of the xgboost fit it precedes
        codes, classes = pd.factorize(np.asarray(y), sort=True, use_na_sentinel=False)
        self.classes = np.asarray(classes).tolist()
        self.pipeline.fit(X, codes)
        return self

    def predict(self, X: Any) -> Any:  # noqa: N803
        import numpy as np

        labels = np.asarray(self.classes)  # ints stay ints: score() compares with the target
        return labels[np.asarray(self.pipeline.predict(X), dtype=int)]

    def predict_proba(self, X: Any) -> Any:  # noqa: N803
        return self.pipeline.predict_proba(X)

    def __sklearn_is_fitted__(self) -> bool:
        return self.classes is not None


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


def is_missing(value: Any) -> bool:
    import pandas as pd

    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


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
