"""The ``evaluate`` stage: score a model on held-out rows, overall and by slice.

::

    scores:
      type: evaluate
      inputs: {model: model, data: split.test}
      with:
        target: category
        slices: [region, policy_type]     # metrics per value of each column
        min: {accuracy: 0.94}             # optional: fail the stage below these

Classification: accuracy, balanced accuracy, macro precision / recall / F1, per-class precision,
recall, F1 and support, the confusion matrix (with its label order). Regression: MAE, RMSE, R².
The output ``metrics`` is JSON, recorded with the run; ``min`` turns it into a quality gate that
stops the pipeline (and whatever would ship the model) when the model is not good enough.
The top-level numbers (``accuracy``, ``f1_macro``, ``rmse``, ``r2`` ...) are also logged as
metrics (:mod:`pipeflow.core.tracking`), before the gate, so a failed gate still shows them and
``runs list --where 'metrics.accuracy > 0.9'`` finds the run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from pipeflow.core.stage import CheckContext, Port, Stage, StageConfig, StageContext


class EvaluateConfig(StageConfig):
    target: str = Field(min_length=1, description="the column holding the true values")
    slices: list[str] = Field(default_factory=list, description="columns to break metrics down by")
    min: dict[str, float] = Field(
        default_factory=dict, description="fail the stage if a metric is below this"
    )
    max: dict[str, float] = Field(
        default_factory=dict, description="fail the stage if a metric is above this (errors)"
    )


class EvaluateStage(Stage[EvaluateConfig]):
    """Score a model on held-out rows: overall, per class and per slice."""

    version: ClassVar[str] = "1"
    inputs: ClassVar[Mapping[str, Port]] = {
        "model": Port("model", description="a fitted model (from train)"),
        "data": Port("table", description="held-out rows with the target"),
    }
    outputs: ClassVar[Mapping[str, Port]] = {
        "metrics": Port("metrics", description="the scores, as JSON"),
        "report": Port("report", description="the same as a readable, self-contained HTML page"),
    }
    default_port = "metrics"
    description = (
        "Score a model on held-out rows (overall, per class, per slice), optionally as a gate."
    )

    #: the top-level keys of the ``metrics`` output (classification and regression together):
    #: gates and quality limits naming anything else can never be met (``pipeflow check``)
    METRICS: ClassVar[tuple[str, ...]] = (
        "task",
        "rows",
        "accuracy",
        "balanced_accuracy",
        "f1_macro",
        "precision_macro",
        "recall_macro",
        "per_class",
        "confusion_matrix",
        "calibration",
        "slices",
        "mae",
        "rmse",
        "r2",
    )

    @classmethod
    def check_config(cls, config: BaseModel, ctx: CheckContext) -> list[tuple[str, str]]:
        assert isinstance(config, EvaluateConfig)
        return unknown_metrics(
            [(f"{side}.{name}", name) for side in ("min", "max") for name in getattr(config, side)],
            cls.METRICS,
            "an evaluate stage",
        )

    def run(self, ctx: StageContext, inputs: dict[str, Any]) -> Mapping[str, Any]:
        from sklearn.base import is_classifier

        config = self.config
        model, data = inputs["model"], inputs["data"]
        for column in [config.target, *config.slices]:
            if column not in data.columns:
                raise ValueError(
                    f"column '{column}' not found (columns: {', '.join(map(str, data.columns))})"
                )
        rows = data[data[config.target].notna()]
        if rows.empty:
            raise ValueError(f"no rows with a '{config.target}' value to evaluate on")
        X, y = rows.drop(columns=[config.target]), rows[config.target]
        predicted = model.predict(X)
        classifier = is_classifier(model) or hasattr(model, "classes_")
        scorer = _classification if classifier else _regression
        metrics: dict[str, Any] = {
            "task": "classification" if classifier else "regression",
            "rows": int(len(rows)),
        }
        metrics.update(scorer(y.to_numpy(), predicted, detail=True))
        if classifier and hasattr(model, "predict_proba"):
            metrics["calibration"] = _calibration(y.to_numpy(), predicted, model.predict_proba(X))
        if config.slices:
            metrics["slices"] = {}
            for column in config.slices:
                keys = rows[column].astype("string").fillna("<missing>").to_numpy()
                metrics["slices"][column] = {
                    str(value): {
                        "rows": int((keys == value).sum()),
                        **scorer(
                            y.to_numpy()[keys == value], predicted[keys == value], detail=False
                        ),
                    }
                    for value in sorted(set(keys))
                }
        for name, value in metrics.items():  # the headline numbers, logged before any gate
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if number and name != "rows" and math.isfinite(value):
                ctx.log_metric(name, float(value))
        failures = [
            f"{name} {metrics.get(name)} < {limit}"
            for name, limit in config.min.items()
            if not _ok(metrics, name, limit, below=True)
        ]
        failures += [
            f"{name} {metrics.get(name)} > {limit}"
            for name, limit in config.max.items()
            if not _ok(metrics, name, limit, below=False)
        ]
        if failures:
            raise ValueError(f"model below the quality gate: {'; '.join(failures)}")
        return {"metrics": metrics, "report": _html(ctx.stage, metrics, config)}


def _calibration(y: Any, predicted: Any, proba: Any, bins: int = 10) -> dict[str, Any]:
    """Confidence of the predicted class against how often it is right, in equal-width bins;
    ``ece`` is the row-weighted mean gap (0 = perfectly calibrated)."""
    import numpy as np

    confidence = np.asarray(proba, dtype=float).max(axis=1)
    correct = np.asarray(y).astype(str) == np.asarray(predicted).astype(str)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    out, ece = [], 0.0
    for b in range(bins):
        mask = which == b
        n = int(mask.sum())
        conf = float(confidence[mask].mean()) if n else float((edges[b] + edges[b + 1]) / 2)
        acc = float(correct[mask].mean()) if n else 0.0
        ece += n * abs(conf - acc)
        out.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "rows": n,
                "confidence": conf,
                "accuracy": acc,
            }
        )
    return {"ece": ece / max(1, len(confidence)), "bins": out}


def _html(stage: str, metrics: dict[str, Any], config: EvaluateConfig) -> bytes:
    from pipeflow import reports as r

    classification = metrics["task"] == "classification"
    headline = (
        ("accuracy", "balanced_accuracy", "f1_macro") if classification else ("mae", "rmse", "r2")
    )
    sections = [
        r.kpis({"rows": metrics["rows"], **{k: metrics[k] for k in headline if k in metrics}})
    ]
    gates = [(n, f">= {v}", metrics.get(n)) for n, v in config.min.items()] + [
        (n, f"<= {v}", metrics.get(n)) for n, v in config.max.items()
    ]
    if gates:
        sections.append(
            "<h2>Quality gate</h2>"
            + r.table(
                ["metric", "required", "value", ""], [[n, req, v, "passed"] for n, req, v in gates]
            )
        )
    if classification:
        per_class = metrics["per_class"]
        sections.append("<h2>By class</h2>" + r.bars({k: v["f1"] for k, v in per_class.items()}))
        sections.append(
            r.table(
                ["class", "precision", "recall", "f1", "rows"],
                [
                    [k, v["precision"], v["recall"], v["f1"], v["support"]]
                    for k, v in per_class.items()
                ],
            )
        )
        cm = metrics["confusion_matrix"]
        sections.append("<h2>Confusion matrix</h2>" + r.heatmap(cm["labels"], cm["matrix"]))
        if "calibration" in metrics:
            cal = metrics["calibration"]
            sections.append(
                f"<h2>Calibration</h2><p>expected calibration error {cal['ece']:.4f}</p>"
                + r.reliability(cal["bins"])
            )
    for column, values in metrics.get("slices", {}).items():
        names = [k for k in next(iter(values.values())) if k != "rows"]
        sections.append(
            f"<h2>By {column}</h2>"
            + r.table(
                [column, "rows", *names],
                [[v, d["rows"], *[d[n] for n in names]] for v, d in values.items()],
            )
        )
    sections.append(r.raw_json(metrics))
    return r.page(f"Evaluation: {stage}", sections)


def _ok(metrics: dict[str, Any], name: str, limit: float, *, below: bool) -> bool:
    if name not in metrics or not isinstance(metrics[name], int | float):
        known = sorted(k for k, v in metrics.items() if isinstance(v, int | float))
        raise ValueError(f"quality gate on unknown metric '{name}' (metrics: {', '.join(known)})")
    return metrics[name] >= limit if below else metrics[name] <= limit


def _classification(y: Any, predicted: Any, *, detail: bool) -> dict[str, Any]:
    import numpy as np
    from sklearn import metrics as m

    y = np.asarray(y).astype(str)
    predicted = np.asarray(predicted).astype(str)
    out: dict[str, Any] = {
        "accuracy": float(m.accuracy_score(y, predicted)),
        "f1_macro": float(m.f1_score(y, predicted, average="macro", zero_division=0)),
    }
    if detail:
        labels = sorted(set(y) | set(predicted))
        precision, recall, f1, support = m.precision_recall_fscore_support(
            y, predicted, labels=labels, zero_division=0
        )
        out["balanced_accuracy"] = float(m.balanced_accuracy_score(y, predicted))
        out["precision_macro"] = float(np.mean(precision))
        out["recall_macro"] = float(np.mean(recall))
        out["per_class"] = {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
        }
        out["confusion_matrix"] = {
            "labels": labels,
            "matrix": m.confusion_matrix(y, predicted, labels=labels).tolist(),
        }
    return out


def _regression(y: Any, predicted: Any, *, detail: bool) -> dict[str, Any]:
    import numpy as np
    from sklearn import metrics as m

    y = np.asarray(y, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    out = {
        "mae": float(m.mean_absolute_error(y, predicted)),
        "rmse": float(np.sqrt(m.mean_squared_error(y, predicted))),
    }
    if len(y) > 1:
        out["r2"] = float(m.r2_score(y, predicted))
    return out


def unknown_metrics(
    named: list[tuple[str, str]], known: tuple[str, ...], producer: str
) -> list[tuple[str, str]]:
    """``(field, message)`` for each ``(field, metric)`` whose first dotted part ``producer`` never
    writes (``per_class.theft.recall`` is checked as ``per_class``)."""
    from pipeflow.core.static import hint

    out = []
    for field, metric in named:
        head = metric.split(".")[0]
        if head not in known:
            out.append(
                (
                    field,
                    f"metric '{metric}' is not one {producer} produces ({', '.join(known)})"
                    f"{hint(head, list(known))}",
                )
            )
    return out
