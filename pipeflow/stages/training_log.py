"""What ``train`` and ``tune`` log about a fit (:mod:`pipeflow.core.tracking`).

The ``estimator`` and the params the spec set (for ``tune``, the fixed and the best ones) as
params, ``train_score`` as a metric, and the per-iteration curves the fitted estimator keeps
anyway (:func:`training_history`: a neural net's loss, gradient boosting's per-stage scores) as
steps. xgboost's evaluation history is logged only when the estimator has one: computing it needs
evaluation sets, which would change how the pipeline is fitted, so it is not asked for. A value
that is not a finite number is left out rather than failing the stage.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pipeflow.core.stage import StageContext


def log_training(
    ctx: StageContext, info: dict[str, Any], model: Any, chosen: Mapping[str, Any]
) -> None:
    """Log what a fit gave (:mod:`pipeflow.core.tracking`): the estimator and the params the
    spec chose as params, ``train_score`` as a metric, and the per-iteration history the fitted
    estimator keeps anyway (see :func:`training_history`) as steps."""
    ctx.log_param("estimator", info["estimator"])
    trained = info.get("params") or {}
    for name in sorted(chosen):
        ctx.log_param(name, trained.get(name, chosen[name]))
    _log_finite(ctx, "train_score", info.get("train_score"))
    for name, values in training_history(model).items():
        for step, value in enumerate(values):
            _log_finite(ctx, name, value, step)


def _log_finite(ctx: StageContext, name: str, value: Any, step: int | None = None) -> None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return
    if math.isfinite(number):
        ctx.log_metric(name, number, step)


def training_history(model: Any) -> dict[str, list[float]]:
    """Per-iteration curves a fitted estimator already holds, at no cost: a neural net's
    ``loss_curve_``, gradient boosting's ``train_score_`` (and ``validation_score_`` with early
    stopping), xgboost's ``evals_result()`` when it was given evaluation sets. Metric names:
    ``loss``, ``train_score``/``train_loss``... as below; nothing for other estimators."""
    estimator = getattr(model, "pipeline", model)  # LabelDecodedClassifier wraps the pipeline
    steps = getattr(estimator, "steps", None)
    if steps:
        estimator = steps[-1][1]
    out: dict[str, list[float]] = {}
    if hasattr(estimator, "loss_curve_"):
        out["loss"] = list(estimator.loss_curve_)
    if hasattr(estimator, "validation_scores_") and estimator.validation_scores_ is not None:
        out["validation_score"] = list(estimator.validation_scores_)
    if hasattr(estimator, "train_score_"):  # GradientBoosting*: loss; HistGradientBoosting*: score
        out["iteration_train_score"] = [float(v) for v in estimator.train_score_]
    if hasattr(estimator, "validation_score_"):
        out["iteration_validation_score"] = [float(v) for v in estimator.validation_score_]
    evals = getattr(estimator, "evals_result", None)
    if callable(evals) and type(estimator).__module__.startswith("xgboost"):
        try:
            history = evals()
        except Exception:  # not fitted with evaluation sets
            history = {}
        for data_name, by_metric in (history or {}).items():
            for metric, values in by_metric.items():
                out[f"{data_name}-{metric}"] = [float(v) for v in values]
    return out
