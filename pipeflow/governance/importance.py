"""Which input columns a fitted model relies on.

Permutation importance on the raw input columns (the columns a caller sends, before the model's
own preprocessing): shuffle one column, re-score, and the drop in score is that column's
importance. It works for any model that predicts from a table, so every registered version gets
the same, comparable figure. It is computed on at most ``max_rows`` rows, sampled without
replacement with ``seed``, so the same model and data always give the same numbers.

When the final estimator is an xgboost model, the mean absolute SHAP value of each *model*
feature (after preprocessing: one-hot columns, TF-IDF terms ...) is added as ``contributions``,
from xgboost's own exact tree SHAP (``pred_contribs``); it needs no extra library. It is a bonus:
a failure there is reported in the result, never raised.
"""

from __future__ import annotations

from typing import Any

TOP_CONTRIBUTIONS = 30


def feature_importance(
    model: Any,
    X: Any,  # noqa: N803 (sklearn naming)
    y: Any,
    *,
    task: str,
    max_rows: int = 2000,
    n_repeats: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Permutation importance of ``model`` (a fitted sklearn Pipeline, or a
    ``pipeflow.models.LabelDecodedClassifier`` around one) on the rows ``X`` / ``y``.

    ``task`` is ``classification`` (scored by accuracy) or ``regression`` (R²). Rows without a
    ``y`` value are left out. Errors of the permutation importance itself propagate.
    """
    import numpy as np
    import pandas as pd
    from sklearn.inspection import permutation_importance

    scoring = {"classification": "accuracy", "regression": "r2"}.get(task)
    if scoring is None:
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, got {max_rows}")
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
    target = y.reset_index(drop=True) if isinstance(y, pd.Series) else pd.Series(np.asarray(y))
    rows = np.flatnonzero(target.notna().to_numpy())
    if len(rows) > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(rows, size=max_rows, replace=False))
    if not len(rows):
        raise ValueError("no rows with a target value to compute feature importance on")
    if isinstance(X, pd.DataFrame):
        sample = X.iloc[rows].reset_index(drop=True)
        names = [str(c) for c in X.columns]
    else:  # an array: columns by position
        sample = np.asarray(X)[rows]
        names = [f"x{i}" for i in range(sample.shape[1])]
    truth = target.iloc[rows].reset_index(drop=True)
    result = permutation_importance(
        model, sample, truth, scoring=scoring, n_repeats=n_repeats, random_state=seed
    )
    features = sorted(
        (
            {"name": name, "mean": float(mean), "std": float(std)}
            for name, mean, std in zip(
                names, result.importances_mean, result.importances_std, strict=True
            )
        ),
        key=lambda f: -f["mean"],
    )
    out: dict[str, Any] = {
        "method": "permutation",
        "scoring": scoring,
        "rows": int(len(rows)),
        "n_repeats": int(n_repeats),
        "features": features,
    }
    contributions = xgboost_contributions(model, sample)
    if contributions is not None:
        out["contributions"] = contributions
    return out


def final_estimator(model: Any) -> tuple[Any, Any]:
    """(preprocessing, estimator) of a pipeflow model: ``LabelDecodedClassifier`` unwrapped, then
    a Pipeline split into everything before its last step and the last step. Preprocessing is
    ``None`` for a bare estimator or a one-step pipeline."""
    from sklearn.pipeline import Pipeline

    from pipeflow.models import LabelDecodedClassifier

    if isinstance(model, LabelDecodedClassifier):
        model = model.pipeline
    if isinstance(model, Pipeline):
        return (model[:-1] if len(model.steps) > 1 else None), model.steps[-1][1]
    return None, model


def xgboost_contributions(model: Any, X: Any) -> dict[str, Any] | None:
    """Mean |SHAP| per model feature when the final estimator is xgboost, else ``None``;
    ``{"error": ...}`` if computing them failed."""
    try:
        prepare, estimator = final_estimator(model)
    except Exception as err:  # an unusual model: no contributions, but say why
        return {"error": f"{type(err).__name__}: {err}"}
    if not type(estimator).__module__.startswith("xgboost"):
        return None
    try:
        import numpy as np
        import xgboost

        features = X if prepare is None else prepare.transform(X)
        contribs = np.asarray(
            estimator.get_booster().predict(xgboost.DMatrix(features), pred_contribs=True)
        )
        # (rows, features + 1) or, multiclass, (rows, classes, features + 1); last = bias
        per_feature = np.abs(contribs[..., :-1]).reshape(-1, contribs.shape[-1] - 1).mean(axis=0)
        names = _feature_names(prepare, X, len(per_feature))
        top = sorted(zip(names, per_feature.tolist(), strict=True), key=lambda item: -item[1])[
            :TOP_CONTRIBUTIONS
        ]
        return {
            "method": "xgboost pred_contribs (mean |SHAP| per model feature)",
            "features": [{"name": name, "mean_abs": float(value)} for name, value in top],
        }
    except Exception as err:  # a bonus figure: report, never fail the caller
        return {"error": f"{type(err).__name__}: {err}"}


def _feature_names(prepare: Any, X: Any, count: int) -> list[str]:
    names: list[str] | None = None
    try:
        if prepare is not None:
            names = [str(n) for n in prepare.get_feature_names_out()]
        elif hasattr(X, "columns"):
            names = [str(c) for c in X.columns]
    except Exception:  # a step without get_feature_names_out: positional names
        names = None
    if names is None or len(names) != count:
        names = [f"f{i}" for i in range(count)]
    return names
