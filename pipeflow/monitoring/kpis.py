"""Live bias and business metrics of a monitoring window: what the version declared at promotion,
measured on served traffic with feedback.

**Bias.** The sensitive attribute declared at promotion (the ``promote`` stage's
``bias.sensitive``; the version record's ``bias.attribute`` and ``bias.min_rows``) is measured
per window with the gate's own function, :func:`pipeflow.governance.fairness.bias_metrics`, over
the window's rows that have feedback (true outcome against the answer), the same ``min_rows``.
Where each row's sensitive value comes from:

1. the feedback's ``attributes`` (``{"id": ..., "outcome": ..., "attributes": {"region":
   "north"}}``): for an attribute that is deliberately not a model input, the one who reports the
   outcome says the group too;
2. else the audited inputs, when the attribute is a model input;
3. else it is missing (the ``"<missing>"`` group).

The report's ``bias`` holds the metrics (``bias.demographic_parity_difference``, per group
``bias.groups.<group>.accuracy``, ...), ``source`` (``feedback``, ``inputs``, both, or none), the
declared ``limits`` (the promote stage's ``bias.max``) and ``breaches``: each declared limit the
window exceeds, with both numbers, so a breach shows without an alert rule. With no sensitive value
at all (not an input, never sent in feedback) there is a ``note`` instead of metrics.

**Business.** The version's ``business`` declaration (:mod:`pipeflow.governance.business`) is
computed by :func:`~pipeflow.governance.business.business_metrics` on the window's rows with
feedback; ``sla_breach_rate`` on every answered row (its request's latency against
``sla_latency_ms``).

Alert rules may name ``bias.<metric>`` and ``business.<metric>``; :func:`check_rules` refuses one
the version cannot have (no sensitive attribute, no business declaration, no such metric) before
anything is read, naming the rule.
"""

from __future__ import annotations

from typing import Any

from pipeflow.errors import UsageError


def feedback_by_id(audit_dir: Any) -> dict[Any, dict[str, Any]]:
    """Prediction id -> its latest feedback record (from every replica's journal)."""
    from pipeflow.store import journal as audit

    return {record.get("id"): record for record in audit.read(audit_dir, "feedback")}


def check_rules(record: dict[str, Any], rules: list[Any]) -> None:
    """A UsageError naming the first rule on ``bias.*`` or ``business.*`` that ``record`` (a
    version) cannot answer."""
    from pipeflow.governance.business import METRICS

    label = f"{record.get('name')}@{record.get('version')}"
    for i, rule in enumerate(rules):
        head, _, rest = rule.metric.partition(".")
        where = f"alerts[{i}].metric '{rule.metric}'"
        if head == "bias" and not (record.get("bias") or {}).get("attribute"):
            raise UsageError(
                f"{where}: {label} declares no sensitive attribute to monitor (the promote "
                "stage's bias.sensitive)"
            )
        if head == "business":
            if not record.get("business"):
                raise UsageError(
                    f"{where}: {label} declares no business metrics (the promote stage's business:)"
                )
            if rest not in METRICS:
                raise UsageError(
                    f"{where}: no business metric '{rest}' (expected one of: {', '.join(METRICS)})"
                )


def live_kpis(
    record: dict[str, Any], inputs: Any, meta: Any, feedback: dict[Any, dict[str, Any]]
) -> dict[str, Any]:
    """``{"bias": ..., "business": ...}`` of a window (``inputs`` and ``meta`` as
    :func:`pipeflow.monitoring.monitor.load_window` returns them, row for row); None for what the
    version did not declare."""
    labelled = [i for i, pid in enumerate(meta["id"]) if pid in feedback] if len(meta) else []
    y_true = [feedback[meta["id"].iloc[i]].get("outcome") for i in labelled]
    y_pred = [meta["output"].iloc[i] for i in labelled]
    return {
        "bias": _bias(record, inputs, meta, feedback, labelled, y_true, y_pred),
        "business": _business(record, meta, y_true, y_pred),
    }


def _bias(
    record: dict[str, Any],
    inputs: Any,
    meta: Any,
    feedback: dict[Any, dict[str, Any]],
    labelled: list[int],
    y_true: list[Any],
    y_pred: list[Any],
) -> dict[str, Any] | None:
    from pipeflow.governance.fairness import bias_metrics

    declared = record.get("bias") or {}
    attribute = declared.get("attribute")
    if not attribute:
        return None
    limits = {k: float(v) for k, v in (record.get("bias_limits") or {}).items()}
    base = {"attribute": attribute, "limits": limits, "breaches": []}
    if not labelled:
        return {**base, "rows": 0, "source": None, "note": "no feedback in the window"}
    given = [
        (feedback[meta["id"].iloc[i]].get("attributes") or {}).get(attribute) for i in labelled
    ]
    served = (
        inputs[attribute].iloc[labelled].to_numpy(dtype=object, na_value=None).tolist()
        if attribute in getattr(inputs, "columns", ())
        else [None] * len(labelled)
    )
    sensitive = [g if g is not None else s for g, s in zip(given, served, strict=True)]
    sources = [
        name
        for name, values in (("feedback", given), ("inputs", served))
        if any(v is not None for v in values)
    ]
    if not sources:
        return {
            **base,
            "rows": len(labelled),
            "source": None,
            "note": f"'{attribute}' is neither a model input nor sent as a feedback attribute "
            f'(feedback body: {{"id": ..., "outcome": ..., "attributes": {{"{attribute}": ...}}}})',
        }
    metrics = bias_metrics(
        y_true,
        y_pred,
        sensitive,
        attribute=attribute,
        min_rows=int(declared.get("min_rows") or 1),
    )
    breaches = [
        {"metric": name, "value": metrics[name], "limit": limit}
        for name, limit in limits.items()
        if isinstance(metrics.get(name), int | float) and metrics[name] > limit
    ]
    return {**metrics, **base, "source": " and ".join(sources), "breaches": breaches}


def _business(
    record: dict[str, Any], meta: Any, y_true: list[Any], y_pred: list[Any]
) -> dict[str, Any] | None:
    from pipeflow.governance.business import business_metrics

    declared = record.get("business")
    if not declared:
        return None
    latency = meta["latency_ms"].to_numpy(dtype=float, na_value=float("nan")) if len(meta) else None
    return business_metrics(y_true, y_pred, declared, latency_ms=latency)


def kpi_sections(report: dict[str, Any]) -> list[str]:
    """The bias and business parts of the monitoring report's HTML page (every value escaped)."""
    from html import escape

    from pipeflow.reports import kpis, table

    out: list[str] = []
    business = report.get("business")
    if business:
        out += [
            "<h2>Business metrics (rows with feedback)</h2>",
            kpis({k: "-" if v is None else v for k, v in business.items()}),
        ]
    bias = report.get("bias")
    if bias:
        out.append(f"<h2>Bias across {escape(str(bias['attribute']))} (rows with feedback)</h2>")
        if bias.get("note"):
            out.append(f"<p>{escape(bias['note'])}</p>")
        else:
            out.append(
                kpis(
                    {
                        k: bias[k]
                        for k in (
                            "demographic_parity_difference",
                            "equalized_odds_difference",
                            "accuracy_difference",
                        )
                    }
                )
            )
            out.append(
                table(
                    ["group", "rows", "accuracy", "compared"],
                    [
                        [g, e["rows"], e["accuracy"], "no" if e.get("excluded") else "yes"]
                        for g, e in bias["groups"].items()
                    ],
                    left=1,
                )
            )
        out += [
            f"<p>limit breached: {escape(b['metric'])} = {b['value']:.4g} &gt; {b['limit']:g}</p>"
            for b in bias["breaches"]
        ]
    return out
