"""Business metrics of a model's decisions: what its mistakes cost, what its right answers earn,
and how often it answered slower than promised.

Declared once per model, at promotion (the ``promote`` stage's ``business:``,
:class:`BusinessConfig`), stored with the version record, and computed by one function,
:func:`business_metrics`, on the evaluation rows (at promotion: ``business.<metric>`` gates) and on
a monitoring window's rows with feedback (``pipeflow monitor``: ``business.<metric>`` alert rules).

The declaration:

- ``cost``: a cost matrix ``cost[true][predicted]`` of a classifier, as a mapping of mappings;
  a pair left out costs 0 (so a right answer usually needs no entry);
- ``cost_per_unit_error``: a regressor's cost per unit of absolute error (``|true - predicted|``);
- ``value_per_correct``: what one right answer of a classifier is worth;
- ``sla_latency_ms``: the promised latency; measured only on served traffic.

The metrics (every one ``None`` when what it needs was not declared or there are no rows):

- ``rows``: the rows with a known outcome (the denominators below);
- ``cost_total`` and ``cost_per_prediction``;
- ``value_total`` and ``value_per_prediction`` (classifiers, with ``value_per_correct``);
- ``net_value_per_prediction``: (value - cost) per prediction, either one counted as 0 when not
  declared, so a declared cost alone gives its negative;
- ``sla_breach_rate``: the share of predictions answered slower than ``sla_latency_ms``, over
  every answered row (feedback or not) of the window; ``None`` at promotion (no latency there).

Labels are compared as text, as in :mod:`pipeflow.governance.fairness` (``1`` and ``"1"`` are one
class). A class of the cost matrix the model cannot predict is refused at promotion
(:func:`unknown_classes`), naming the field.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: what :func:`business_metrics` computes, in order (``business.<metric>`` gates and rules)
METRICS = (
    "rows",
    "cost_total",
    "cost_per_prediction",
    "value_total",
    "value_per_prediction",
    "net_value_per_prediction",
    "sla_breach_rate",
)


class BusinessConfig(BaseModel):
    """What a model's decisions are worth (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    cost: dict[str, dict[str, float]] | None = Field(
        None,
        description="cost matrix of a classifier: cost[true][predicted], e.g. "
        "{fraud: {legit: 500}, legit: {fraud: 20}}; a pair left out costs 0",
    )
    cost_per_unit_error: float | None = Field(
        None, ge=0, description="a regressor's cost per unit of absolute error"
    )
    value_per_correct: float | None = Field(
        None, description="what one right answer of a classifier is worth"
    )
    sla_latency_ms: float | None = Field(
        None, gt=0, description="promised latency; sla_breach_rate is measured on served traffic"
    )

    @field_validator("cost", mode="before")
    @classmethod
    def _labels_as_text(cls, cost: Any) -> Any:
        """YAML reads ``1:`` and ``true:`` as a number and a boolean; labels are compared as text."""
        if isinstance(cost, dict):
            return {
                _text(t): {_text(p): c for p, c in row.items()} if isinstance(row, dict) else row
                for t, row in cost.items()
            }
        return cost

    @model_validator(mode="after")
    def _something(self) -> BusinessConfig:
        if not any(
            v is not None
            for v in (
                self.cost,
                self.cost_per_unit_error,
                self.value_per_correct,
                self.sla_latency_ms,
            )
        ):
            raise ValueError(
                "declare at least one of cost, cost_per_unit_error, value_per_correct, sla_latency_ms"
            )
        if self.cost is not None and self.cost_per_unit_error is not None:
            raise ValueError(
                "cost (a classifier's cost matrix) and cost_per_unit_error (a regressor's) "
                "exclude each other"
            )
        return self


def _text(label: Any) -> Any:
    if isinstance(label, bool):
        return str(label)
    return str(label) if isinstance(label, int | float) else label


def unknown_classes(declared: dict[str, Any], classes: list[Any]) -> list[str]:
    """The paths (``cost.<true>`` or ``cost.<true>.<predicted>``) of the cost matrix that name a
    class not in ``classes`` (compared as text)."""
    known = {str(c) for c in classes}
    out = []
    for true, row in (declared.get("cost") or {}).items():
        if str(true) not in known:
            out.append(f"cost.{true}")
        out += [f"cost.{true}.{p}" for p in row if str(p) not in known]
    return out


def business_metrics(
    y_true: Any,
    y_pred: Any,
    declared: dict[str, Any],
    *,
    latency_ms: Any = None,
) -> dict[str, Any]:
    """The business metrics (see the module docstring) of predictions ``y_pred`` against true
    outcomes ``y_true`` (equally long sequences), under ``declared`` (a :class:`BusinessConfig`'s
    dump); ``latency_ms``: every answered row's latency (None: not measured). Plain JSON-ready
    Python."""
    import numpy as np

    if len(y_true) != len(y_pred):
        raise ValueError(
            f"y_true and y_pred must be equally long, got {len(y_true)} and {len(y_pred)}"
        )
    n = len(y_true)
    cost_total = value_total = None
    if n and declared.get("cost") is not None:
        matrix = declared["cost"]
        table = {(str(t), str(p)): float(c) for t, row in matrix.items() for p, c in row.items()}
        cost_total = float(
            sum(table.get((str(t), str(p)), 0.0) for t, p in zip(y_true, y_pred, strict=True))
        )
    if n and declared.get("cost_per_unit_error") is not None:
        error = np.abs(np.asarray(y_true, dtype=float) - np.asarray(y_pred, dtype=float))
        cost_total = float(declared["cost_per_unit_error"]) * float(np.nansum(error))
    if n and declared.get("value_per_correct") is not None:
        right = sum(str(t) == str(p) for t, p in zip(y_true, y_pred, strict=True))
        value_total = float(declared["value_per_correct"]) * right
    net = None
    if cost_total is not None or value_total is not None:
        net = ((value_total or 0.0) - (cost_total or 0.0)) / n
    breach = None
    if declared.get("sla_latency_ms") is not None and latency_ms is not None:
        latency = np.asarray(latency_ms, dtype=float)
        latency = latency[np.isfinite(latency)]
        if latency.size:
            breach = float(np.mean(latency > float(declared["sla_latency_ms"])))
    return {
        "rows": int(n),
        "cost_total": cost_total,
        "cost_per_prediction": None if cost_total is None else cost_total / n,
        "value_total": value_total,
        "value_per_prediction": None if value_total is None else value_total / n,
        "net_value_per_prediction": net,
        "sla_breach_rate": breach,
    }
