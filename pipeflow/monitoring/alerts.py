"""Alert rules declared in YAML, evaluated on monitoring reports, sent to sinks, deduplicated.

A rule::

    - name: amount drifted              # optional; default: "<metric> <op> <threshold>"
      metric: features.amount.psi       # a dotted path into the report
      threshold: "> 0.2"                # >, >=, <, <= and a number
      severity: warning                 # info | warning | critical
      cooldown: 1h                      # the same rule for the same model fires at most once per cooldown
      window: 1h                        # optional: only for reports over this window length

Special metrics: ``drift_share`` (share of drifted features), ``accuracy.accuracy`` (live accuracy
from feedback), ``prediction.psi``, ``latency_ms.p95``, ``errors.error_rate``, ``flagged_rate``, and
``features.<name>.<measure>``; ``features.*.psi`` matches any feature (one alert per feature;
for text features, ``psi`` is the PSI of their lengths); ``bias.<difference>`` and
``business.<metric>``, what the version declared at promotion (:mod:`pipeflow.monitoring.kpis`,
which refuses such a rule for a version that declared nothing of the kind). A version's declared
bias limits alert without a rule (:func:`declared_rules`, named ``declared bias limit <metric>``),
unless a rule watches the same metric.

Sinks: ``log`` (the ``pipeflow.alerts`` logger at the rule's severity), ``file`` (a JSON-lines file
you name), ``webhook`` (a JSON POST to a URL, with a timeout; a failing webhook is logged, never
raised: alerting must not break monitoring), or a plugin's: sink types load through the
``pipeflow.sinks`` entry points (:mod:`pipeflow.monitoring.sinks`). Every fired alert is also appended to the store's
alert history, which the dashboard reads (``triggers.on_drift`` reads the monitor's own report).

The guard of a served alias (``pipeflow serve --guard``, the ``serve`` stage's ``guard:``) is
declared here too (:class:`GuardConfig`: limits, window, sinks), so a spec is checked when it is
built; what it does is :mod:`pipeflow.serving.guard`'s.

Deduplication: a rule's key is ``(rule, model, feature)``; its last firing time is kept in
``monitoring/alerts/state.json`` (written atomically), and within the cooldown a repeat is counted
in the report but not sent.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import secrets
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

log = logging.getLogger("pipeflow.alerts")
_OP = re.compile(r"^\s*(>=|<=|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")


def parse_duration(text: str | float | int) -> float:
    """``90`` / ``"90s"`` / ``"15m"`` / ``"1h"`` / ``"2d"`` -> seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    found = _DURATION.match(str(text))
    if not found:
        raise ValueError(f"expected a duration such as 90s, 15m, 1h or 2d, got {text!r}")
    return float(found.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[found.group(2) or "s"]


class Sink(BaseModel):
    """A sink's declaration; its ``type`` names an installed sink (:mod:`pipeflow.monitoring.sinks`)."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="log, file, webhook, or a plugin's sink type")
    path: str | None = Field(None, description="file sink: the JSON-lines file")
    url: str | None = Field(None, description="webhook sink: where to POST")
    timeout_s: float = Field(5.0, gt=0)
    options: dict[str, Any] = Field(default_factory=dict, description="a plugin sink's settings")

    @field_validator("type")
    @classmethod
    def _installed(cls, name: str) -> str:
        from pipeflow.monitoring.sinks import check_type

        return check_type(name)

    @model_validator(mode="after")
    def _needs(self) -> Sink:
        if self.type == "file" and not self.path:
            raise ValueError("a file sink needs `path:` (the JSON-lines file to append to)")
        if self.type == "webhook" and not self.url:
            raise ValueError("a webhook sink needs `url:` (where to POST)")
        return self

    @field_validator("url")
    @classmethod
    def _http(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError("a webhook URL must start with http:// or https://")
        return url


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    metric: str = Field(min_length=1)
    threshold: str | float
    severity: Literal["info", "warning", "critical"] = "warning"
    cooldown: str | float = "1h"
    window: str | float | None = None

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, value: str | float) -> str | float:
        if isinstance(value, int | float):
            return value
        if not _OP.match(str(value)):
            raise ValueError(f"expected a comparison such as '> 0.2', got {value!r}")
        return value

    @field_validator("cooldown", "window")
    @classmethod
    def _duration(cls, value: str | float | None) -> str | float | None:
        if value is not None:
            parse_duration(value)
        return value

    def comparison(self) -> tuple[str, float]:
        if isinstance(self.threshold, int | float):
            return ">", float(self.threshold)
        found = _OP.match(str(self.threshold))
        assert found is not None
        return found.group(1), float(found.group(2))

    @property
    def label(self) -> str:
        op, limit = self.comparison()
        return self.name or f"{self.metric} {op} {limit:g}"


#: the limits of a guard: the most error rate, the most p95 latency, the least live accuracy
LIMITS = ("error_rate", "p95_ms", "min_accuracy")


class GuardConfig(BaseModel):
    """The guard of a served alias (:mod:`pipeflow.serving.guard`): its limits (at least one),
    its window and cool-down, and where its alerts go."""

    model_config = ConfigDict(extra="forbid")

    error_rate: float | None = Field(None, ge=0, le=1, description="most share of failed rows")
    p95_ms: float | None = Field(None, gt=0, description="most p95 request latency in ms")
    min_accuracy: float | None = Field(None, ge=0, le=1, description="least live accuracy")
    window: str | float = Field("5m", description="how far back to measure: 90s, 5m, 1h")
    min_requests: int = Field(200, ge=1, description="rows (and labels) before judging")
    cooldown: str | float | None = Field(None, description="quiet time after a rollback")
    sinks: list[Sink] = Field(default_factory=lambda: [Sink(type="log")])

    @field_validator("window", "cooldown")
    @classmethod
    def _duration(cls, value: str | float | None) -> str | float | None:
        if value is not None and parse_duration(value) <= 0:
            raise ValueError("expected a duration above 0")
        return value

    @model_validator(mode="after")
    def _some_limit(self) -> GuardConfig:
        if all(getattr(self, k) is None for k in LIMITS):
            raise ValueError(f"a guard needs at least one limit: {', '.join(LIMITS)}")
        return self


def declared_rules(report: dict[str, Any], rules: list[Rule]) -> list[Rule]:
    """The version's declared bias limits (the promote stage's ``bias.max``, in the report's
    ``bias.limits``) as rules, so a live breach alerts through the sinks, cool-down and alert
    history a written rule has, with no rule written: one per limit no rule already watches."""
    limits = (report.get("bias") or {}).get("limits") or {}
    watched = {r.metric for r in rules}
    return [
        Rule(
            name=f"declared bias limit {metric}", metric=f"bias.{metric}", threshold=f"> {limit!r}"
        )
        for metric, limit in limits.items()
        if f"bias.{metric}" not in watched
    ]


def _values(report: dict[str, Any], metric: str) -> list[tuple[str | None, float]]:
    """(feature or None, value) pairs the metric path picks out of the report."""
    parts = metric.split(".")
    if parts[0] == "features" and len(parts) == 3:
        out = []
        for name, entry in (report.get("features") or {}).items():
            if fnmatch.fnmatchcase(name, parts[1]):
                value = entry.get(parts[2])
                if value is None and parts[2] == "psi":
                    value = entry.get("length_psi")  # a text feature's PSI is over its lengths
                if isinstance(value, int | float) and not isinstance(value, bool):
                    out.append((name, float(value)))
        return out
    node: Any = report
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return []
        node = node[part]
    if isinstance(node, bool) or not isinstance(node, int | float):
        return []
    return [(None, float(node))]


def _breached(value: float, op: str, limit: float) -> bool:
    return {">": value > limit, ">=": value >= limit, "<": value < limit, "<=": value <= limit}[op]


def evaluate(
    report: dict[str, Any],
    rules: list[Rule],
    sinks: list[Sink],
    store_root: Any,  # a local store folder, or an open ArtifactStore (monitoring.history)
    *,
    now: float | None = None,
) -> list[dict[str, Any]]:
    """Fire the rules breached by ``report``; returns every breach (sent ones and suppressed)."""
    from pipeflow.monitoring.history import read_state, record_alerts, write_state

    now = time.time() if now is None else now
    state = read_state(store_root)
    fired: list[dict[str, Any]] = []
    window = (report.get("window") or {}).get("seconds")
    for rule in rules:
        if (
            rule.window is not None
            and window is not None
            and abs(parse_duration(rule.window) - window) > 1
        ):
            continue
        op, limit = rule.comparison()
        for feature, value in _values(report, rule.metric):
            if not _breached(value, op, limit):
                continue
            key = "|".join([rule.label, report.get("model", ""), feature or ""])
            last = state.get(key)
            suppressed = last is not None and now - last < parse_duration(rule.cooldown)
            metric = (
                rule.metric
                if feature is None
                else rule.metric.replace(rule.metric.split(".")[1], feature, 1)
            )
            alert = {
                "id": secrets.token_hex(6),
                "time": now,
                "key": key,
                "rule": rule.label,
                "metric": metric,
                "value": value,
                "op": op,
                "threshold": limit,
                "severity": rule.severity,
                "model": report.get("model"),
                "version": report.get("version"),
                "message": f"{report.get('model')}@{report.get('version')}: {metric} = {value:.4g} {op} {limit:g}",
                "suppressed": suppressed,
                "sinks": [] if suppressed else [s.type for s in sinks],
            }
            fired.append(alert)
            if suppressed:
                continue
            state[key] = now
            for sink in sinks:
                _send(sink, alert)
    sent = [a for a in fired if not a["suppressed"]]
    if sent:
        record_alerts(store_root, sent)
        write_state(store_root, state)
    return fired


def _send(sink: Sink, alert: dict[str, Any]) -> None:
    from pipeflow.monitoring.sinks import open_sink

    open_sink(sink).send(alert)
