"""The dashboard's view of a monitoring report's live bias and business metrics
(:mod:`pipeflow.monitoring.kpis`): numbers made JSON-safe (NaN and infinities become null) and the
per-class rates left out, for the drift page's latest window and its series over windows."""

from __future__ import annotations

from typing import Any

from pipeflow.ui.traffic import finite_number

DIFFERENCES = ("demographic_parity_difference", "equalized_odds_difference", "accuracy_difference")


def kpi_point(r: dict[str, Any]) -> dict[str, Any]:
    """The numbers of one report charted over windows (null where not declared)."""
    business = r.get("business") if isinstance(r.get("business"), dict) else {}
    bias = r.get("bias") if isinstance(r.get("bias"), dict) else {}
    return {
        "cost_per_prediction": finite_number(business.get("cost_per_prediction")),
        "net_value_per_prediction": finite_number(business.get("net_value_per_prediction")),
        "sla_breach_rate": finite_number(business.get("sla_breach_rate")),
        "bias_difference": finite_number(bias.get("demographic_parity_difference")),
    }


def kpi_latest(r: dict[str, Any]) -> dict[str, Any]:
    """``business`` and ``bias`` of the latest report, as the drift page shows them."""
    return {"business": _business(r.get("business")), "bias": _bias(r.get("bias"))}


def _business(b: Any) -> dict[str, Any] | None:
    """A report's business metrics, numbers only (None: the version declared none)."""
    if not isinstance(b, dict):
        return None
    return {k: finite_number(v) for k, v in b.items() if k != "rows"} | {"rows": b.get("rows")}


def _bias(b: Any) -> dict[str, Any] | None:
    """A report's live bias without the per-class rates: the differences, each group's rows and
    accuracy, the declared limits and their breaches (None: no sensitive attribute declared)."""
    if not isinstance(b, dict):
        return None
    groups = b.get("groups") if isinstance(b.get("groups"), dict) else {}
    return {
        "attribute": b.get("attribute"),
        "source": b.get("source"),
        "rows": b.get("rows"),
        "note": b.get("note"),
        "differences": {k: finite_number(b.get(k)) for k in DIFFERENCES if k in b},
        "groups": [
            {
                "name": name,
                "rows": g.get("rows"),
                "accuracy": finite_number(g.get("accuracy")),
                "excluded": bool(g.get("excluded")),
            }
            for name, g in groups.items()
            if isinstance(g, dict)
        ],
        "limits": b.get("limits") or {},
        "breaches": [x for x in b.get("breaches") or [] if isinstance(x, dict)],
    }
