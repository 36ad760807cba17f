"""Scoring a table with a loaded model: which columns are its features, how a frame is turned
into predictions and class probabilities, and how a model travels to workers.

Why the model is loaded once per worker, never pickled per partition: threads share the object
loaded by the job; a process pool receives a :class:`ModelHolder` that pickles as its registry
record and is loaded from the store (hash-checked, like every registry load) once per process; a
distributed cluster gets the object scattered to every worker once, so workers need not reach
the store. Why the signature decides the features: every feature recorded with the version must
be a column of the input, so :func:`signature_features` is asked before any row is scored. Used by
:mod:`pipeflow.scoring.batch` and the ``predict`` stage.

Explanations (``pipeflow predict --explain``): an :class:`~pipeflow.governance.explain.Explainer`,
built once by the job and small (it holds no model), travels in the :class:`ScoreSpec` with each
task; every partition adds ``explain_class`` (classifiers: the class explained), ``explain_base``
and ``contrib_<feature>`` per input column, which sum with the base to the model's margin
(:mod:`pipeflow.governance.explain`).
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any, NamedTuple

from pipeflow.errors import NonFiniteInput, UsageError

if TYPE_CHECKING:
    import pandas as pd

    from pipeflow.governance.thresholds import GroupThresholds


def signature_features(record: dict[str, Any], model: Any = None) -> list[str]:
    """The feature columns a version was trained on, in training order: its signature, else the
    fitted model's ``feature_names_in_``."""
    features = [f["name"] for f in (record.get("signature") or {}).get("features") or []]
    if not features and model is not None:
        features = [str(c) for c in getattr(model, "feature_names_in_", [])]
    if not features:
        raise UsageError(
            f"{record.get('name')}@{record.get('version')} has no recorded signature: "
            "cannot tell which columns are its features"
        )
    return features


def score_frame(model: Any, frame: pd.DataFrame, spec: ScoreSpec) -> pd.DataFrame:
    """Score ``frame`` as ``spec`` says: columns ``id_column`` (if given), ``prediction`` and,
    for classifiers with ``probabilities``, ``proba_<class>`` per class; same index and row order
    as ``frame``. With an ``explainer``, the explanation columns too (see the module docstring).

    The predictions are exactly ``model.predict(frame[features])``, or, for a version with
    per-group ``thresholds`` (:mod:`pipeflow.governance.thresholds`), its probabilities against
    the threshold of each row's group (``frame`` holds the group column). A scikit-learn pipeline
    is run through its transforms once and both ``predict`` and ``predict_proba`` of its final
    step are called on the result (what ``Pipeline.predict`` does), instead of transforming twice.
    Where ``predict`` is the argmax of ``predict_proba`` (:func:`_proba_decides`: logistic
    regression, xgboost, pipelines ending in them), only ``predict_proba`` is called and the
    labels are read from it (:func:`_labels_of`), the same labels with one model call.
    """
    import numpy as np
    import pandas as pd

    X = _missing_as_nan(frame[list(spec.features)])
    _refuse_non_finite(X)
    for column in spec.datetimes:
        if column in X.columns and not pd.api.types.is_datetime64_any_dtype(X[column]):
            X = X.assign(**{column: pd.to_datetime(X[column])})
    wanted = spec.probabilities or spec.thresholds is not None
    final, Xt = (model, X) if frame.empty else _final_step(model, X, wanted)
    classes = getattr(final, "classes_", None)
    out: dict[str, Any] = {}
    if spec.id_column is not None:
        out[spec.id_column] = frame[spec.id_column]
    proba = None
    if frame.empty:  # estimators refuse 0 rows; an empty partition scores to an empty frame
        predicted = np.asarray(classes)[:0] if classes is not None else np.empty(0)
    elif spec.thresholds is not None:  # the one place a mitigated version's labels are made
        proba = final.predict_proba(Xt)
        predicted = spec.thresholds.apply(proba, classes, frame[spec.thresholds.attribute])
    elif spec.probabilities and _proba_decides(final):  # one model call for both
        proba = final.predict_proba(Xt)
        predicted = _labels_of(final, proba, Xt)
    else:
        predicted = final.predict(Xt)
    # labels stay an object array: pandas' conversion of a million of them to its string dtype
    # costs more than the classifier's predict (Arrow converts them when writing)
    out["prediction"] = (
        pd.Series(predicted, index=frame.index, dtype=object)
        if getattr(getattr(predicted, "dtype", None), "kind", "") == "O"
        else predicted
    )
    if spec.probabilities and classes is not None and hasattr(final, "predict_proba"):
        if proba is None:
            proba = final.predict_proba(Xt) if not frame.empty else np.empty((0, len(classes)))
        for i, label in enumerate(classes):
            out[f"proba_{label}"] = proba[:, i]
    if spec.explainer is not None:
        out.update(explanation_columns(spec.explainer, model, X))
    return pd.DataFrame(out, index=frame.index)


def explanation_columns(explainer: Any, model: Any, X: Any) -> dict[str, Any]:  # noqa: N803
    """``explain_class`` (classifiers), ``explain_base`` and ``contrib_<name>`` of the rows of
    ``X`` (none: empty columns)."""
    import numpy as np
    import pandas as pd

    out: dict[str, Any] = {}
    if len(X):
        found = explainer.explain(model, X)
        base, values, classes = found.base, found.values, found.classes
    else:
        base, values = np.empty(0), np.empty((0, len(explainer.names)))
        classes = [] if explainer.classes is not None else None
    if classes is not None:
        out["explain_class"] = pd.Series(classes, index=X.index, dtype=object)
    out["explain_base"] = base
    for j, name in enumerate(explainer.names):
        out[f"contrib_{name}"] = values[:, j]
    return out


def _refuse_non_finite(X: pd.DataFrame) -> None:
    """:class:`~pipeflow.errors.NonFiniteInput` for the first ±inf of a float column (NaN is a
    missing value, which models that allow it take). The numpy float columns are checked in one
    call on their block (column by column cost 0.17 CPU-s per million rows of 30 features,
    mostly pandas' column lookups); the first column, in ``X``'s order, holding one is named."""
    import numpy as np

    dtypes = list(X.dtypes.items())
    block = [c for c, t in dtypes if isinstance(t, np.dtype) and t.kind == "f"]
    flagged = set()
    if block:
        found = np.isinf(X[block].to_numpy()).any(axis=0)
        flagged = {block[i] for i in np.flatnonzero(found)}
    for column, dtype in dtypes:
        if column in flagged or (dtype.kind == "f" and not isinstance(dtype, np.dtype)):
            values = X[column].to_numpy()
            bad = np.isinf(values)
            if bad.any():
                raise NonFiniteInput(str(column), values[int(bad.argmax())])


#: classifiers whose ``predict`` is the argmax of their ``predict_proba`` through ``classes_``
#: (ties aside): scikit-learn's LogisticRegression (the argmax of its decision function, which
#: its probabilities order alike: expit and softmax are monotone) and xgboost's XGBClassifier
#: with its binary:logistic or multi:softprob objective (``p > 0.5`` / the argmax)
_ARGMAX_OF_PROBA = {
    ("sklearn.linear_model._logistic", "LogisticRegression"),
    ("xgboost.sklearn", "XGBClassifier"),
}


def _proba_decides(model: Any) -> bool:
    """Whether ``model.predict`` is exactly what :func:`_labels_of` makes of its probabilities:
    one of :data:`_ARGMAX_OF_PROBA`, a scikit-learn pipeline ending in one, or pipeflow's
    :class:`~pipeflow.models.LabelDecodedClassifier` around either (its labels are its
    ``classes_`` in code order). Anything else is asked for ``predict`` as well."""
    kind = type(model)
    name = (kind.__module__, kind.__name__)
    if name == ("sklearn.pipeline", "Pipeline"):
        return bool(model.steps) and _proba_decides(model.steps[-1][1])
    if name == ("pipeflow.models", "LabelDecodedClassifier"):
        return _proba_decides(model.pipeline)
    if name == ("xgboost.sklearn", "XGBClassifier"):
        return getattr(model, "objective", None) in ("binary:logistic", "multi:softprob")
    return name in _ARGMAX_OF_PROBA


def _labels_of(model: Any, proba: Any, X: Any) -> Any:  # noqa: N803
    """``model.predict(X)`` from ``proba = model.predict_proba(X)`` (a :func:`_proba_decides`
    model): ``classes_`` at each row's most probable class. A row whose largest probability is
    shared (``p == 0.5`` of a binary model: its decision function may still be just above 0)
    is asked of ``model.predict``, so every label is the estimator's own."""
    import numpy as np

    classes = np.asarray(model.classes_)
    if proba.ndim != 2 or proba.shape[1] != len(classes):
        return model.predict(X)
    if proba.shape[1] == 2:
        index = (proba[:, 1] > proba[:, 0]).astype(np.intp)
        tied = np.flatnonzero(proba[:, 1] == proba[:, 0])
    else:
        index = proba.argmax(axis=1)
        top = proba[np.arange(len(proba)), index]
        tied = np.flatnonzero((proba == top[:, None]).sum(axis=1) > 1)
    predicted = classes[index]
    if len(tied):
        rows = X.iloc[tied] if hasattr(X, "iloc") else X[tied]
        predicted[tied] = model.predict(rows)
    return predicted


def _missing_as_nan(X: pd.DataFrame) -> pd.DataFrame:
    """String columns with a missing value as objects with NaN for it. CSV text is read as
    pandas' (Arrow) strings, whose missing value is pd.NA, and models trained before their text
    pipeline learnt to take pd.NA fail on it ("boolean value of NA is ambiguous")."""
    import pandas as pd

    from pipeflow.models import as_strings

    changed = {
        column: as_strings(X[column])
        for column in X.columns
        if isinstance(X[column].dtype, pd.StringDtype) and X[column].hasnans
    }
    return X.assign(**changed) if changed else X


def _final_step(model: Any, X: Any, probabilities: bool) -> tuple[Any, Any]:
    """(final estimator, transformed X) of a plain scikit-learn pipeline whose probabilities are
    wanted; (model, X) otherwise."""
    from sklearn.pipeline import Pipeline

    if not probabilities or type(model) is not Pipeline or len(model.steps) < 2:
        return model, X
    final = model.steps[-1][1]
    if not hasattr(final, "predict_proba"):
        return model, X
    return final, model[:-1].transform(X)


class ScoreSpec(NamedTuple):
    """How to score a frame (:func:`score_frame`): all a partition needs besides the model (small;
    pickled with each task)."""

    features: tuple[str, ...]
    id_column: str | None = None
    probabilities: bool = True
    datetimes: tuple[str, ...] = ()
    thresholds: GroupThresholds | None = None
    explainer: Any = None  # pipeflow.governance.explain.Explainer: the explanation columns

    @property
    def columns(self) -> tuple[str, ...]:
        """The input columns read: the features, and the group column of per-group thresholds."""
        group = self.thresholds.attribute if self.thresholds is not None else None
        return (*self.features, group) if group and group not in self.features else self.features


def score_partition(
    part: pd.DataFrame, model: Any, spec: ScoreSpec, partition_info: Any = None
) -> pd.DataFrame:
    try:
        return score_frame(model.model if isinstance(model, ModelHolder) else model, part, spec)
    except NonFiniteInput:
        raise  # bad input, not a failure of the partition: said as is, with its line
    except Exception as err:
        number = (partition_info or {}).get("number")
        where = f"partition {number}" if number is not None else "a partition"
        raise ValueError(f"scoring {where} failed: {type(err).__name__}: {err}") from err


def meta_frame(model: Any, ddf: Any, spec: ScoreSpec) -> pd.DataFrame:
    """The empty frame Dask is told each scored partition looks like."""
    import numpy as np
    import pandas as pd

    classes = getattr(model, "classes_", None)
    columns: dict[str, Any] = {}
    if spec.id_column is not None:
        columns[spec.id_column] = pd.Series([], dtype=ddf.dtypes[spec.id_column])
    columns["prediction"] = np.asarray(classes)[:0] if classes is not None else np.empty(0)
    if spec.probabilities and classes is not None and hasattr(model, "predict_proba"):
        for label in classes:
            columns[f"proba_{label}"] = np.empty(0)
    if spec.explainer is not None:
        columns.update(explanation_columns(spec.explainer, model, pd.DataFrame()))
    return pd.DataFrame(columns)


def datetime_features(record: dict[str, Any]) -> tuple[str, ...]:
    """Features recorded as datetimes (CSV gives them as text: converted before scoring)."""
    return tuple(
        f["name"]
        for f in (record.get("signature") or {}).get("features") or []
        if str(f.get("dtype", "")).startswith("datetime")
    )


class ModelHolder:
    """A loaded model that pickles as its registry record: a process that unpickles it loads
    the model from the store once (cached per process), so a process pool never receives the
    model itself with every task. Within one process it is just the object."""

    def __init__(self, model: Any, store_ref: Any, record: dict[str, Any]):
        self.model = model
        self.store_ref = store_ref
        self.record = record
        self.digest = str(record["model"]["digest"])

    def __reduce__(self) -> Any:
        if str(self.store_ref.root).startswith("memory://"):  # another process cannot see it
            return (ModelHolder, (self.model, self.store_ref, self.record))
        record_json = json.dumps(self.record, sort_keys=True, default=str)
        return (_holder_from_store, (self.store_ref, self.digest, record_json))

    def __dask_tokenize__(self) -> Any:
        return ("pipeflow-model", self.digest)


@functools.lru_cache(maxsize=4)
def _holder_from_store(store_ref: Any, digest: str, record_json: str) -> ModelHolder:
    from pipeflow.registry import load_version_model

    record = json.loads(record_json)
    return ModelHolder(load_version_model(store_ref.open(), record), store_ref, record)
