"""The ``train`` stage: fit any scikit-learn-compatible estimator on a table.

::

    model:
      type: train
      inputs: {train: split.train}
      with:
        estimator: sklearn.linear_model.LogisticRegression   # or xgboost.XGBClassifier, ...
        params: {C: 4, max_iter: 2000}
        target: category
        task: classification            # or regression; sets the output kind model[classifier]
        features: [description, amount, policy_type, region]   # default: every other column
        text: [description]             # free text -> TF-IDF (default: long string columns)

Preprocessing is built from the table's schema, so a data scientist does not hand-write a
ColumnTransformer for the common case: numbers imputed (median) and scaled (passed as they are to
xgboost and histogram gradient boosting, which take missing values and any scale), categories
(strings, booleans, pandas categoricals) imputed and one-hot encoded with unknown values
ignored, free text vectorised with TF-IDF (word 1-2 grams), dates as days since 1970. The output is one fitted ``sklearn.pipeline.Pipeline``: preprocessing and
estimator travel together, so serving applies exactly the training transformations.

The second output, ``info``, is the training record: estimator and params, the model signature
(feature names and dtypes, classes), row counts and the training score (on at most 50,000
rows). It holds nothing that varies between two identical fits (the fit time is in the run's
record of the stage), so both outputs are byte-identical for the same data and config, and the
cache can reuse them. xgboost estimators get ``device: cuda`` with GPU resources (``resources:
{GPU: 1}``) and no device set; the stored model predicts on the CPU (``info.device`` says where
it was trained). Models are stored with skops, never pickle.

What it logs (``ctx.log_metric`` / ``log_param``): see :mod:`pipeflow.stages.training_log`.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, field_validator

from pipeflow.core.stage import CheckContext, Keywords, Port, Stage, StageConfig, StageContext
from pipeflow.execute.cluster import (
    array_from_blocks,
    current_client,
    on_worker,
    worker_client,
    workers_offering,
)
from pipeflow.stages.training_log import log_training


class TrainConfig(StageConfig):
    estimator: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$",
        description="dotted path of a scikit-learn-compatible estimator class",
    )
    params: Keywords = Field(description="estimator parameters")
    target: str = Field(min_length=1, description="the column to predict")
    task: Literal["classification", "regression"] | None = Field(
        None,
        description="classification or regression (sets the output kind); default: from the estimator",
    )
    features: list[str] | None = Field(
        None, description="feature columns; default: every column but the target"
    )
    text: list[str] | None = Field(
        None,
        description="free-text columns (TF-IDF); default: string columns averaging > 30 characters",
    )
    max_text_features: int = Field(
        20000, ge=1, description="TF-IDF vocabulary size per text column"
    )
    distributed: Literal["auto", "always", "never"] = Field(
        "auto",
        description="xgboost on the distributed executor: train across the workers with xgboost.dask "
        "(auto: at distributed_min_rows rows or more)",
    )
    distributed_min_rows: int = Field(
        1_000_000, ge=1, description="auto: tables at least this long train across the workers"
    )

    @field_validator("estimator")
    @classmethod
    def _not_private(cls, value: str) -> str:
        if any(part.startswith("_") for part in value.split(".")):
            raise ValueError("the estimator path must not have private (_underscore) parts")
        return value


class TrainStage(Stage[TrainConfig]):
    """Fit a scikit-learn-compatible estimator with preprocessing built from the table's schema."""

    version: ClassVar[str] = "1"
    inputs: ClassVar[Mapping[str, Port]] = {
        "train": Port("table", description="training rows, target included")
    }
    default_port = "model"
    description = "Fit a scikit-learn-compatible estimator (sklearn, xgboost, ...) with automatic preprocessing."

    @classmethod
    def output_ports(cls, config: TrainConfig) -> Mapping[str, Port]:  # type: ignore[override]
        kind = {"classification": "model[classifier]", "regression": "model[regressor]"}.get(
            config.task or "", "model"
        )
        return {
            "model": Port(kind, description="fitted sklearn Pipeline: preprocessing + estimator"),
            "info": Port(
                "metrics", description="training record: params, signature, timings, score"
            ),
        }

    @classmethod
    def check_config(cls, config: BaseModel, ctx: CheckContext) -> list[tuple[str, str]]:
        """The estimator class exists in its library and takes the given params. The library is
        imported (it is not user code); a module beside the spec is not (it would run it)."""
        import inspect

        from pipeflow.core.static import hint

        assert isinstance(config, TrainConfig)
        module_name, _, class_name = config.estimator.rpartition(".")
        top = ctx.base_dir / module_name.split(".")[0]
        if top.with_suffix(".py").exists() or top.is_dir():
            return []  # the user's own estimator module: importing it would run it
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            return [
                (
                    "estimator",
                    f"cannot import {module_name} for estimator {config.estimator}: {err}",
                )
            ]
        found = getattr(module, class_name, None)
        if not isinstance(found, type):
            classes = sorted(
                n for n, v in vars(module).items() if isinstance(v, type) and not n.startswith("_")
            )
            return [
                (
                    "estimator",
                    f"{module_name} has no estimator class '{class_name}'{hint(class_name, classes)}",
                )
            ]
        if not (hasattr(found, "fit") and hasattr(found, "get_params")):
            return [
                (
                    "estimator",
                    f"{config.estimator} is not a scikit-learn-compatible estimator (needs fit and get_params)",
                )
            ]
        try:
            signature = inspect.signature(found.__init__)
        except (TypeError, ValueError):
            return []
        if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
            return []  # takes any keyword (xgboost): its own checks run at fit time
        known = [n for n in signature.parameters if n != "self"]
        return [
            (f"params.{name}", f"{class_name} has no parameter '{name}'{hint(name, known)}")
            for name in config.params
            if name not in known
        ]

    def run(self, ctx: StageContext, inputs: dict[str, Any]) -> Mapping[str, Any]:
        config = self.config
        X, y = training_rows(config, inputs["train"])
        model, info = fit(config, X, y, ctx, dict(config.params))
        log_training(ctx, info, model, config.params)
        info["rows_without_target"] = int(len(inputs["train"]) - len(X))
        if "train" in ctx.input_refs:  # the training table's content fingerprint, for lineage
            info["data"] = {"train": ctx.input_refs["train"].digest}
        return {"model": model, "info": info}


def training_rows(config: TrainConfig, data: Any) -> tuple[Any, Any]:
    """Features and target of the rows that have a target value; clear errors otherwise."""
    if config.target not in data.columns:
        raise ValueError(
            f"target column '{config.target}' not found (columns: {', '.join(map(str, data.columns))})"
        )
    features = config.features or [c for c in data.columns if c != config.target]
    missing = [c for c in features if c not in data.columns]
    if missing:
        raise ValueError(
            f"feature column(s) {', '.join(missing)} not found (columns: {', '.join(map(str, data.columns))})"
        )
    labelled = data[data[config.target].notna()]
    if len(labelled) < 2:
        raise ValueError(
            f"need at least 2 rows with a '{config.target}' value to train, got {len(labelled)}"
        )
    return labelled[features], labelled[config.target]


def make_model(
    config: TrainConfig, X: Any, ctx: StageContext, params: dict[str, Any]
) -> tuple[Any, Any, str]:
    """An unfitted model (preprocessing + estimator), the estimator, and the task."""
    from sklearn.base import is_classifier
    from sklearn.pipeline import Pipeline

    estimator = _make_estimator(config, ctx, params)
    task = config.task or ("classification" if is_classifier(estimator) else "regression")
    model: Any = Pipeline(
        [
            ("prepare", build_preprocessor(X, config, trees=_is_tree_model(estimator))),
            ("model", estimator),
        ]
    )
    if task == "classification" and type(estimator).__module__.startswith("xgboost"):
        # xgboost wants labels 0..k-1: the wrapper encodes them and predicts the originals
        from pipeflow.models import LabelDecodedClassifier

        model = LabelDecodedClassifier(model)
    return model, estimator, task


def fit(
    config: TrainConfig,
    X: Any,
    y: Any,
    ctx: StageContext,
    params: dict[str, Any],
    *,
    phases: tuple[int, int] = (0, 2),
) -> tuple[Any, dict[str, Any]]:
    """Fit and describe a model (the ``info`` record, see the module docstring). Progress is
    reported in two phases, fitting then scoring and profiling, as steps ``phases[0]`` and
    ``phases[0] + 1`` of ``phases[1]`` (``tune`` counts its trials before them)."""
    from pipeflow.governance.profile import BackgroundProfile, spare_threads

    model, estimator, task = make_model(config, X, ctx, params)
    step, steps = phases
    ctx.progress(step, steps, f"fitting {config.estimator} on {len(X)} rows")
    started = time.perf_counter()
    spread = None
    cluster = _cluster_for(config, estimator, len(X), ctx.resources)
    roles = feature_roles(X, config)
    threads = spare_threads(estimator.get_params(deep=False).get("n_jobs"), len(X))
    target_role = "categorical" if task == "classification" else "numeric"
    # the drift reference needs no model: profiled while the estimator fits (cancelled if it fails)
    with BackgroundProfile(X, roles, target=y, target_role=target_role, threads=threads) as profile:
        try:
            if cluster is not None:
                model, spread = _fit_across_workers(*cluster, model, estimator, task, X, y)
            else:
                model.fit(X, y)
        except ValueError as err:
            raise ValueError(f"{config.estimator} could not be fitted: {err}") from None
    fit_s = time.perf_counter() - started  # logged; the run records the stage's duration
    ctx.progress(step + 1, steps, "scoring and profiling the training rows")
    trained_with = {k: _plain(v) for k, v in estimator.get_params(deep=False).items()}
    device = trained_with.get("device") or "cpu"
    predict_on_cpu(model)
    score = _training_score(model, task, *_sample(X, y))
    classes = [str(c) for c in getattr(model, "classes_", [])]
    info = {
        "estimator": config.estimator,
        "params": trained_with,
        "task": task,
        "target": config.target,
        "signature": {
            "features": [
                {"name": str(c), "dtype": str(X[c].dtype), "role": roles[c]} for c in X.columns
            ],
            "classes": classes,
        },
        "reference": profile.result(),
        "rows_train": int(len(X)),
        "train_score": score,
        "device": device,
    }
    if spread is not None:
        info["distributed"] = spread
    ctx.logger.info(
        "trained %s on %d rows in %.2fs (train score %.4f)", config.estimator, len(X), fit_s, score
    )
    ctx.progress(step + 2, steps, "trained")
    return model, info


def _make_estimator(
    config: TrainConfig, ctx: StageContext, params: dict[str, Any] | None = None
) -> Any:
    module_name, _, class_name = config.estimator.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ImportError(
            f"cannot import {module_name} for estimator {config.estimator}: {err}"
        ) from None
    cls = getattr(module, class_name, None)
    if cls is None or not isinstance(cls, type):
        raise ValueError(f"{module_name} has no estimator class {class_name!r}")
    if not (hasattr(cls, "fit") and hasattr(cls, "get_params")):
        raise ValueError(
            f"{config.estimator} is not a scikit-learn-compatible estimator (needs fit and get_params)"
        )
    params = dict(config.params if params is None else params)
    if module_name.startswith("xgboost") and ctx.resources.get("GPU") and "device" not in params:
        params["device"] = "cuda"
    try:
        return cls(**params)
    except TypeError as err:
        raise ValueError(f"{config.estimator}: bad params: {err}") from None


def predict_on_cpu(model: Any) -> None:
    """Store a model trained on a GPU (xgboost ``device: cuda``) to predict on the CPU.

    A registered model is scored wherever it is served, mostly on hosts without a GPU, where a
    cuda model warns as it predicts and falls back to the CPU; on a GPU host it takes every
    request's rows from the CPU through a DMatrix instead of in place (xgboost warns of the memory
    and time that costs). The predictions are the same (checked on an H200 by
    ``benchmarks/gpu_check.py``). ``info.device`` and ``info.params`` keep how it was trained."""
    inner = getattr(model, "pipeline", model)  # inside LabelDecodedClassifier
    steps = getattr(inner, "steps", None)
    estimator = steps[-1][1] if steps else inner
    if type(estimator).__module__.startswith("xgboost") and estimator.get_params().get(
        "device"
    ) not in (None, "cpu"):
        estimator.set_params(device="cpu")


def _cluster_for(
    config: TrainConfig, estimator: Any, rows: int, resources: Mapping[str, float]
) -> tuple[Any, list[str]] | None:
    """(a client, the workers to train on) to train with xgboost.dask, when this stage runs on a
    distributed worker, the estimator is an xgboost classifier or regressor, and the table is
    large enough (or asked)."""
    if config.distributed == "never":
        return None
    name = type(estimator).__name__
    if not type(estimator).__module__.startswith("xgboost") or name not in (
        "XGBClassifier",
        "XGBRegressor",
    ):
        if config.distributed == "always":
            raise ValueError(
                f"distributed: always needs xgboost.XGBClassifier or XGBRegressor, not {config.estimator}"
            )
        return None
    if config.distributed == "auto" and rows < config.distributed_min_rows:
        return None
    if not on_worker():  # train here
        if config.distributed == "always":
            raise ValueError(
                "distributed: always needs the distributed executor (--executor distributed)"
            )
        return None
    # xgboost.dask trains where the row blocks are: a stage that asked for a GPU must train on
    # GPU workers alone, not hand a cuda fit to a CPU worker of a mixed cluster
    eligible = workers_offering(current_client(), resources)
    if config.distributed == "auto" and len(eligible) < 2:
        return None  # the one worker that may train it (its GPU, say): no xgboost.dask detour
    return worker_client(), eligible


def _fit_across_workers(
    client_cm: Any,
    eligible: list[str],
    model: Any,
    estimator: Any,
    task: str,
    X: Any,
    y: Any,
) -> tuple[Any, dict[str, Any]]:
    """Fit the preprocessing here, then xgboost with xgboost.dask over row blocks spread across
    the ``eligible`` workers (those that offer the stage's resources); the result is an ordinary
    pipeline with an ordinary xgboost model in it."""
    import math
    import os
    import tempfile

    import numpy as np
    import scipy.sparse as sp
    import xgboost
    import xgboost.dask as xgb_dask
    from sklearn.pipeline import Pipeline

    from pipeflow.models import LabelDecodedClassifier

    pipeline = model.pipeline if isinstance(model, LabelDecodedClassifier) else model
    # dense at training and at prediction alike: xgboost reads a sparse matrix's absent entries as
    # missing, not 0, so a model trained on dense blocks must never be fed the sparse form
    prepare = pipeline.named_steps["prepare"]
    if "sparse_threshold" in prepare.get_params():  # a ColumnTransformer (not NumericColumns)
        prepare.set_params(sparse_threshold=0.0)
    prepare.fit(X)
    features = prepare.transform(X)
    if sp.issparse(features):
        features = features.toarray()
    features = np.ascontiguousarray(features, dtype=np.float32)
    classes = None
    target = np.asarray(y)
    if task == "classification":
        classes, target = np.unique(target, return_inverse=True)
    params = _non_default_params(estimator)  # e.g. the default objective is binary, not multiclass
    cls = xgb_dask.DaskXGBClassifier if task == "classification" else xgb_dask.DaskXGBRegressor
    with client_cm as client:
        workers = len(eligible)
        size = math.ceil(len(features) / max(1, workers))
        starts = range(0, len(features), size)
        x_parts = client.scatter([features[i : i + size] for i in starts], workers=eligible)
        y_parts = client.scatter([target[i : i + size] for i in starts], workers=eligible)
        X_da = array_from_blocks(
            x_parts,
            [(min(size, len(features) - i), features.shape[1]) for i in starts],
            features.dtype,
        )
        y_da = array_from_blocks(
            y_parts, [(min(size, len(target) - i),) for i in starts], target.dtype
        )
        trained = cls(**params)
        trained.client = client
        trained.fit(X_da, y_da)
        with (
            tempfile.TemporaryDirectory() as folder
        ):  # xgboost's own format, sklearn attributes kept
            path = os.path.join(folder, "model.ubj")
            trained.save_model(path)
            local = (xgboost.XGBClassifier if task == "classification" else xgboost.XGBRegressor)(
                **params
            )
            local.load_model(path)
    fitted = Pipeline([("prepare", prepare), ("model", local)])
    if classes is not None:
        fitted = LabelDecodedClassifier(fitted, classes.tolist())
    return fitted, {"workers": workers, "partitions": len(x_parts), "rows": int(len(features))}


def _non_default_params(estimator: Any) -> dict[str, Any]:
    """The parameters set on ``estimator`` that differ from its class's defaults."""
    defaults = type(estimator)().get_params()

    def same(a: Any, b: Any) -> bool:
        return (
            a is b
            or a == b
            or (isinstance(a, float) and isinstance(b, float) and a != a and b != b)
        )

    return {k: v for k, v in estimator.get_params().items() if not same(v, defaults.get(k))}


def _training_score(model: Any, task: str, X: Any, y: Any) -> float:
    """``model.score``: accuracy for a classifier, R² for a regressor. Accuracy is counted here:
    scikit-learn's ``accuracy_score`` first checks and sorts the labels (40 ms for 50,000
    strings, as long as the predictions)."""
    if task != "classification":
        return float(model.score(X, y))
    import numpy as np

    return float(np.mean(np.asarray(model.predict(X)) == np.asarray(y)))


def _sample(X: Any, y: Any, limit: int = 50_000) -> tuple[Any, Any]:
    """At most ``limit`` rows (evenly spaced: deterministic) for the training score."""
    if len(X) <= limit:
        return X, y
    import numpy as np

    rows = (np.arange(limit) * (len(X) / limit)).astype(np.int64)  # int(i * step), row by row
    return X.iloc[rows], y.iloc[rows]


def _is_tree_model(estimator: Any) -> bool:
    """Tree ensembles that take missing values and any scale as they are: numbers pass through."""
    name = type(estimator).__name__
    return type(estimator).__module__.startswith(("xgboost", "lightgbm")) or name.startswith(
        "HistGradientBoosting"
    )


def build_preprocessor(X: Any, config: TrainConfig, *, trees: bool = False) -> Any:
    """A ColumnTransformer for the columns of ``X`` (see the module docstring); for a tree
    ensemble on numeric columns alone, :class:`pipeflow.models.NumericColumns`."""
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

    from pipeflow.models import as_strings as _as_strings
    from pipeflow.models import days_since_epoch as _days_since_epoch
    from pipeflow.models import flatten as _flatten

    roles = feature_roles(X, config)
    text = {c for c, role in roles.items() if role == "text"}
    numeric = [c for c, role in roles.items() if role == "numeric"]
    categorical = [c for c, role in roles.items() if role == "categorical"]
    dates = [c for c, role in roles.items() if role == "date"]
    parts = []
    for column in X.columns:
        if column in text:
            parts.append(
                (
                    f"text_{column}",
                    make_pipeline(
                        # pandas' and Arrow's string columns hold pd.NA, which the imputer
                        # cannot compare: strings with NaN for missing first
                        FunctionTransformer(_as_strings, feature_names_out="one-to-one"),
                        SimpleImputer(strategy="constant", fill_value=""),
                        FunctionTransformer(_flatten, feature_names_out="one-to-one"),
                        TfidfVectorizer(
                            ngram_range=(1, 2),
                            max_features=config.max_text_features,
                            sublinear_tf=True,
                        ),
                    ),
                    [column],
                )
            )
    if numeric and trees:  # xgboost / histogram boosting: NaN and scale are handled natively
        parts.append(("numeric", "passthrough", numeric))
    elif numeric:
        parts.append(
            ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric)
        )
    if categorical:
        parts.append(
            (
                "categorical",
                make_pipeline(
                    FunctionTransformer(_as_strings, feature_names_out="one-to-one"),
                    SimpleImputer(strategy="constant", fill_value="<missing>"),
                    OneHotEncoder(handle_unknown="ignore", min_frequency=5),
                ),
                categorical,
            )
        )
    if dates:
        parts.append(
            (
                "dates",
                make_pipeline(
                    FunctionTransformer(_days_since_epoch, feature_names_out="one-to-one"),
                    SimpleImputer(strategy="median"),
                    StandardScaler(),
                ),
                dates,
            )
        )
    if not parts:
        raise ValueError("no usable feature columns")
    if trees and len(parts) == 1 and numeric:  # numbers alone, as they are: no copies
        from pipeflow.models import NumericColumns

        return NumericColumns(numeric)
    # sparse only where it pays (TF-IDF vocabularies); many estimators want dense input
    return ColumnTransformer(parts, sparse_threshold=1.0 if text else 0.0)


def feature_roles(X: Any, config: TrainConfig) -> dict[str, str]:
    """Column -> numeric, categorical, text or date: how the preprocessing treats it."""
    import pandas as pd

    text = (
        set(config.text)
        if config.text is not None
        else {c for c in X.columns if _looks_like_text(X[c])}
    )
    roles = {}
    for column in X.columns:
        series = X[column]
        if column in text:
            roles[column] = "text"
        elif pd.api.types.is_datetime64_any_dtype(series):
            roles[column] = "date"
        elif (
            pd.api.types.is_bool_dtype(series)
            or isinstance(series.dtype, pd.CategoricalDtype)
            or not pd.api.types.is_numeric_dtype(series)
        ):
            roles[column] = "categorical"
        else:
            roles[column] = "numeric"
    return roles


def _looks_like_text(series: Any) -> bool:
    import pandas as pd

    if (
        pd.api.types.is_numeric_dtype(series)
        or pd.api.types.is_bool_dtype(series)
        or isinstance(series.dtype, pd.CategoricalDtype)
    ):
        return False
    values = series.dropna().astype(str)
    return bool(len(values)) and values.str.len().mean() > 30


def _plain(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool | type(None)) else repr(value)
