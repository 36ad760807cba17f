"""Promotion gates: the checks a model version must pass before an alias may point at it.

Three kinds, each evaluated to a record that carries *both numbers* (the value and the limit), so
a refusal says exactly which gate failed and by how much:

- ``threshold``: a metric against a fixed limit, written ``"accuracy": ">= 0.94"`` (``>=``, ``>``,
  ``<=``, ``<``; a bare number means ``>=``). Metric names may be dotted paths into the metrics,
  e.g. ``slices.region.north.accuracy``.
- ``champion``: no worse than the current holder of the alias by more than a margin. Whether
  higher or lower is better follows the metric's name (errors such as ``rmse`` are lower-better).
  With no current holder (first promotion) the gate passes and says so.
- ``bias``: a bias metric across the declared sensitive attribute at most a limit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

_GATE = re.compile(r"^\s*(>=|<=|>|<|==)?\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
#: metrics where a smaller value is better (errors, losses, calibration gap)
LOWER_IS_BETTER = ("rmse", "mse", "mae", "mape", "log_loss", "ece", "brier", "error", "loss")


def parse_gate(metric: str, expression: Any) -> tuple[str, float]:
    """``">= 0.94"`` -> ``(">=", 0.94)``; a bare number means ``>=``. Raises ValueError."""
    if isinstance(expression, bool):
        raise ValueError(
            f"gate for '{metric}': expected a comparison such as '>= 0.9', got {expression!r}"
        )
    if isinstance(expression, int | float):
        return ">=", float(expression)
    found = _GATE.match(str(expression))
    if not found:
        raise ValueError(
            f"gate for '{metric}': expected a comparison such as '>= 0.94' or '< 0.1', got {expression!r}"
        )
    return found.group(1) or ">=", float(found.group(2))


def metric_value(metrics: Mapping[str, Any], name: str) -> float | None:
    """The number at ``name`` (a dotted path) in ``metrics``, or None if absent / not a number."""
    node: Any = metrics
    for part in name.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    if isinstance(node, bool) or not isinstance(node, int | float):
        return None
    return float(node)


def lower_is_better(metric: str) -> bool:
    leaf = metric.rsplit(".", 1)[-1].lower()
    return any(leaf == word or leaf.endswith(word) for word in LOWER_IS_BETTER)


def _compare(value: float, op: str, limit: float) -> bool:
    if math.isnan(value):
        return False
    return {
        ">=": value >= limit,
        ">": value > limit,
        "<=": value <= limit,
        "<": value < limit,
        "==": value == limit,
    }[op]


def threshold_gates(metrics: Mapping[str, Any], gates: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for metric, expression in gates.items():
        op, limit = parse_gate(metric, expression)
        value = metric_value(metrics, metric)
        out.append(
            {
                "kind": "threshold",
                "gate": f"{metric} {op} {limit:g}",
                "metric": metric,
                "op": op,
                "threshold": limit,
                "value": value,
                "passed": value is not None and _compare(value, op, limit),
                "detail": None if value is not None else f"metric '{metric}' was not recorded",
            }
        )
    return out


def champion_gate(
    metrics: Mapping[str, Any],
    champion: Mapping[str, Any] | None,
    *,
    metric: str,
    margin: float,
    holder: str | None,
) -> dict[str, Any]:
    """The challenger (``metrics``) against the current holder's metrics (``champion``)."""
    value = metric_value(metrics, metric)
    lower = lower_is_better(metric)
    record: dict[str, Any] = {
        "kind": "champion",
        "metric": metric,
        "op": "<=" if lower else ">=",
        "value": value,
        "champion": holder,
        "margin": margin,
    }
    if champion is None:
        return {
            **record,
            "gate": f"{metric} vs current holder (none)",
            "threshold": None,
            "passed": value is not None,
            "detail": "no current holder: nothing to compare with"
            if value is not None
            else f"metric '{metric}' was not recorded",
        }
    best = metric_value(champion, metric)
    if best is None:
        return {
            **record,
            "gate": f"{metric} vs {holder}",
            "threshold": None,
            "passed": value is not None,
            "detail": f"the current holder {holder} has no '{metric}': not compared",
        }
    limit = best + margin if lower else best - margin
    return {
        **record,
        "gate": f"{metric} {record['op']} {holder}'s {best:.6g} {'+' if lower else '-'} {margin:g}",
        "threshold": limit,
        "champion_value": best,
        "passed": value is not None and _compare(value, record["op"], limit),
        "detail": None if value is not None else f"metric '{metric}' was not recorded",
    }


def bias_gates(bias: Mapping[str, Any] | None, limits: Mapping[str, float]) -> list[dict[str, Any]]:
    out = []
    for name, limit in limits.items():
        value = None if bias is None else metric_value(bias, name)
        out.append(
            {
                "kind": "bias",
                "gate": f"{name} <= {limit:g}",
                "metric": name,
                "op": "<=",
                "threshold": float(limit),
                "value": value,
                "passed": value is not None and _compare(value, "<=", float(limit)),
                "detail": None if value is not None else f"bias metric '{name}' was not computed",
            }
        )
    return out


def split_gate(text: str, flag: str = "--gate") -> tuple[str, str, str]:
    """``accuracy>=0.9`` -> ``("accuracy", ">=", "0.9")``; a UsageError naming ``flag``."""
    from pipeflow.errors import UsageError

    found = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(>=|<=|>|<|==)\s*(\S+)\s*$", text)
    if not found:
        raise UsageError(f"{flag} {text!r}: expected METRIC>=VALUE (or >, <=, <, ==)")
    return found.group(1), found.group(2), found.group(3)


def gates_from_flags(texts: Iterable[str], flag: str = "--gate") -> dict[str, str]:
    """``["accuracy>=0.9", ...]`` (``flag``'s values) as the gates :func:`promote` takes:
    ``{"accuracy": ">= 0.9"}``; a UsageError naming ``flag`` for one it cannot read."""
    return {metric: f"{op} {limit}" for metric, op, limit in (split_gate(t, flag) for t in texts)}


def describe_failures(gates: list[dict[str, Any]]) -> str:
    """One line per failed gate, with both numbers."""
    lines = []
    for g in gates:
        if g["passed"]:
            continue
        if g["value"] is None:
            lines.append(f"{g['kind']} gate '{g['gate']}' failed: {g.get('detail')}")
        else:
            lines.append(
                f"{g['kind']} gate '{g['gate']}' failed: {g['metric']} is {g['value']:.6g}, "
                f"needed {g['op']} {g['threshold']:.6g}"
            )
    return "; ".join(lines)


def failed_gates(gates: list[dict[str, Any]]) -> str:
    """The failed gates in a few words: ``champion gate 'accuracy >= v1's 0.97 - 0.01' failed``
    (several joined by ``; ``); "" when every gate passed."""
    return "; ".join(
        f"{g.get('kind') or 'a'} gate '{g.get('gate')}' failed"
        for g in gates
        if g.get("passed") is not True
    )


def gates_check(
    gates: list[dict[str, Any]], *, prefix: str = ""
) -> Callable[[int | None], list[dict[str, Any]]]:
    """The ``check`` for :meth:`Registry.move_alias` when there is no champion gate: ``gates``
    as they are, or :class:`~pipeflow.errors.GateFailed` if one failed."""
    from pipeflow.errors import GateFailed

    def check(holder: int | None) -> list[dict[str, Any]]:
        failure = describe_failures(gates)
        if failure:
            raise GateFailed(prefix + failure, gates)
        return gates

    return check


def champion_check(
    registry: Any,
    name: str,
    metrics: Mapping[str, Any],
    gates: list[dict[str, Any]],
    *,
    metric: str,
    margin: float,
    prefix: str = "",
) -> Callable[[int | None], list[dict[str, Any]]]:
    """The ``check`` for :meth:`Registry.move_alias`: ``gates`` plus the champion gate against
    whichever version holds the alias at the moment of the move; raises
    :class:`~pipeflow.errors.GateFailed` (its message starting with ``prefix``) if any of them
    failed (the champion is judged even when a threshold failed, so a refusal has every
    verdict)."""
    from pipeflow.errors import GateFailed

    def check(holder: int | None) -> list[dict[str, Any]]:
        held = None if holder is None else registry.version(name, holder)
        gate = champion_gate(
            metrics,
            None if held is None else held.get("metrics") or {},
            metric=metric,
            margin=margin,
            holder=None if holder is None else f"v{holder}",
        )
        result = [*gates, gate]
        if not all(g["passed"] for g in result):
            raise GateFailed(prefix + describe_failures(result), result)
        return result

    return check


def promote(
    registry: Any,
    name: str,
    which: str | int,
    alias: str,
    *,
    gates: Mapping[str, str] | None = None,
    champion: tuple[str, float] | None = None,
    reason: str = "",
    user: str | None = None,
    force: bool = False,
    unless_held: bool = False,
) -> dict[str, Any] | None:
    """Point ``alias`` at the version ``which`` means if it passes ``gates`` (``metric ->
    ">= 0.9"``, on its recorded metrics) and, with ``champion`` (metric, margin), is no worse than
    the holder at the moment of the move; the alias event. One path for ``pipeflow models promote``
    and the serving ramp (:mod:`pipeflow.serving.rollout`). Raises
    :class:`~pipeflow.errors.GateFailed` (the alias untouched) on a failed gate, a blocked version
    included. With ``unless_held``: None, and nothing written, when the version already holds the
    alias (another replica of a fleet promoted it first). A refusal is recorded in the registry
    (:meth:`~pipeflow.registry.Registry.record_refusal`) with every gate's verdict."""
    record = registry.resolve(name, which)
    checked = threshold_gates(record.get("metrics") or {}, dict(gates or {}))
    prefix = f"{name}@{record['version']} not promoted: "
    check = (  # a failed gate is recorded in the registry as a refusal, with every verdict
        gates_check(checked, prefix=prefix)
        if champion is None
        else champion_check(
            registry,
            name,
            record.get("metrics") or {},
            checked,
            metric=champion[0],
            margin=champion[1],
            prefix=prefix,
        )
    )
    version = int(record["version"])

    def guarded(holder: int | None) -> list[dict[str, Any]]:
        if unless_held and holder == version:
            raise _Held
        return check(holder)

    try:
        return registry.move_alias(
            name, alias, version, reason=reason, user=user, check=guarded, force=force
        )
    except _Held:
        return None


class _Held(Exception):
    """The version already holds the alias: nothing to promote."""


def withdrawn_canary(registry: Any, name: str, version: int) -> dict[str, Any] | None:
    """The serving fleet's last ``canary_withdrawn`` event for ``name`` v``version``, or None.
    Promoting such a version is allowed (it is how a person tries it again:
    :mod:`pipeflow.serving.rollout`), but ``pipeflow models promote`` says what happened to it."""
    found = None
    for event in registry.fleet_events(name):
        if withdraws(event, version):
            found = event
    return found


def withdraws(event: dict[str, Any], version: int) -> bool:
    """Whether a fleet event is the withdrawal of canary v``version``."""
    return event.get("event") == "canary_withdrawn" and event.get("version") == version


def verdicts(
    versions: list[dict[str, Any]],
    history: list[dict[str, Any]],
    refusals: list[dict[str, Any]],
) -> dict[int, dict[str, Any]]:
    """Per version number: what its gates said when last checked, and whether it was promoted.

    ``gates``: those of its latest promotion or refused promotion, whichever came last (they
    include the champion gate), else its registration's (thresholds and bias); ``promoted``:
    whether any alias ever pointed at it; ``refused``: the latest refusal, if that came last;
    ``status``: one line, e.g. ``not promoted: champion gate 'accuracy >= v1's 0.97 - 0.01'
    failed`` for a version that never held an alias."""
    checks: dict[int, list[tuple[float, str, dict[str, Any]]]] = {}
    promoted: set[int] = set()
    for event in history:
        if event.get("action") == "rollback":
            continue
        version = event.get("to_version")
        promoted.add(version)
        if event.get("gates"):
            checks.setdefault(version, []).append((event.get("time") or 0, "promote", event))
    for refusal in refusals:
        checks.setdefault(refusal.get("version"), []).append(
            (refusal.get("time") or 0, "refused", refusal)
        )
    out: dict[int, dict[str, Any]] = {}
    for record in versions:
        number = record.get("version")
        latest = max(checks.get(number, []), key=lambda c: c[0], default=None)
        refused = latest[2] if latest is not None and latest[1] == "refused" else None
        gates = latest[2].get("gates") if latest is not None else None
        gates = [g for g in (gates or record.get("gates") or []) if isinstance(g, dict)]
        failed = failed_gates(gates)
        if number not in promoted:
            status = f"not promoted: {failed}" if failed else "not promoted"
        elif refused is not None and failed:
            status = f"refused for '{refused.get('alias')}': {failed}"
        else:
            status = "promoted"
        out[number] = {
            "gates": gates,
            "promoted": number in promoted,
            "refused": refused,
            "status": status,
        }
    return out
