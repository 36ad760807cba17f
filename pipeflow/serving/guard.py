"""The guard of the served alias: roll the primary back automatically when it fails live.

``pipeflow serve NAME@ALIAS --guard error_rate=0.05,p95_ms=200,min_accuracy=0.9,window=5m,min_requests=200``
(or ``--guard guard.yaml``, the same keys plus ``sinks:``; or ``guard:`` in the spec's ``serve``
stage). The guard belongs to the deployment, not to the training pipeline, as Argo Rollouts'
analysis belongs to the Rollout and KServe's canary settings to the InferenceService: it judges
what a version does under live traffic, which only the servers see, and it is set where the
server's other limits are (``--max-error-rate`` and friends judge the canary the same way).

Every reload interval each guarded replica (:meth:`Guard.check`, from the watch loop) measures
the alias's holder **over the fleet** (:meth:`pipeflow.serving.fleet.Fleet.window`: every
replica's journal records) since the later of ``window`` ago and the moment it took the alias:

- ``error_rate``: the share of rows that failed in the model (``model_error`` events) among rows
  answered or failed; ``p95_ms``: the 95th percentile of the answered rows' request latency (the
  audit record's ``latency_ms``, queueing included); ``min_accuracy``: live accuracy of the
  feedback received in the window (judged once ``min_requests`` labels are in);
- nothing is judged before ``min_requests`` rows, so a quiet minute is not a verdict.

On a breach the replica rolls the alias back through the registry
(:meth:`pipeflow.registry.Registry.rollback` ``only_from`` the holder, ``guard`` = the limits,
the measurements, the window and the replica): the alias event records the reason and the
numbers. Exactly one replica wins: rollback claims the next alias event with an exclusive create,
and a replica that finds the holder already gone returns without writing. The winner alerts the
configured ``sinks`` (:mod:`pipeflow.monitoring.sinks`; default ``log``), appends the alert to
the store's alert history (the dashboard's) and a ``guard_rollback`` event to its audit journal.
Every replica then follows the alias within its reload interval, as after any rollback; the
swap is the hot reload's (requests queued on the old version finish there), so no request fails
because of it.

Never flapping: after a guarded rollback the guard of that alias waits ``cooldown`` (default: the
window) before judging again, whichever replica looks (the time is the alias event's); and the
version rolled back is blocked from that alias (:meth:`pipeflow.registry.Registry.blocked`):
promoting it again (``pipeflow models promote``, a ``promote`` stage) fails like a failed gate
until a person promotes it with ``--force --reason ...``. A new run that registers a different
model gets a new version number, which is not blocked. With no earlier holder to go back to, the
guard logs the breach once per holder and leaves the alias alone.
"""

from __future__ import annotations

import logging
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from pipeflow.monitoring.alerts import LIMITS, GuardConfig, parse_duration

if TYPE_CHECKING:
    from pipeflow.serving.state import Server

log = logging.getLogger("pipeflow.serve")


def parse_guard(text: str) -> dict[str, Any]:
    """``--guard``: ``key=value,...`` or a YAML file of the same keys (and ``sinks``), checked;
    the JSON-able mapping :class:`~pipeflow.serving.config.ServeConfig` carries."""
    from pipeflow.errors import UsageError

    path = Path(text)
    if text.endswith((".yaml", ".yml", ".json")) or path.is_file():
        import yaml

        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise UsageError(f"--guard {text}: cannot read it: {err.strerror or err}") from None
        except yaml.YAMLError as err:
            raise UsageError(f"--guard {text}: not YAML: {err}".splitlines()[0]) from None
        if isinstance(raw, dict) and set(raw) == {"guard"}:
            raw = raw["guard"]
    else:
        raw = {}
        for item in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = item.partition("=")
            if not sep:
                raise UsageError(f"--guard {text}: expected KEY=VALUE,... (got {item!r})")
            raw[key.strip()] = value.strip()
    return check_guard(raw, f"--guard {text}")


def check_guard(raw: Any, where: str) -> dict[str, Any]:
    """``raw`` validated as a :class:`GuardConfig`, as JSON; a one-line UsageError naming the key."""
    from pipeflow.errors import UsageError

    try:
        config = GuardConfig.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "guard"
        raise UsageError(f"{where}: {key}: {first['msg']}") from None
    return config.model_dump(mode="json", exclude_none=True)


def limit_breaches(
    m: dict[str, Any],
    *,
    error_rate: float | None,
    p95_ms: float | None,
    min_accuracy: float | None,
    min_requests: int,
) -> list[str]:
    """Which limits (None: not set) the measurements ``m`` of a window break, in words with both
    numbers; accuracy is judged once ``min_requests`` rows have feedback. The guard's and a
    canary rollout's (:func:`pipeflow.serving.rollout.breaches`) one reading of a window."""
    reasons = []
    if error_rate is not None and m["error_rate"] > error_rate:
        reasons.append(f"error rate {m['error_rate']:.3f} > {error_rate:g}")
    if p95_ms is not None and m["p95_ms"] is not None and m["p95_ms"] > p95_ms:
        reasons.append(f"p95 latency {m['p95_ms']:.1f} ms > {p95_ms:g} ms")
    if min_accuracy is not None and m["labelled"] >= min_requests and m["accuracy"] < min_accuracy:
        reasons.append(f"live accuracy {m['accuracy']:.3f} < {min_accuracy:g}")
    return reasons


class Guard:
    """Judges the alias's holder over the fleet; rolls it back on a breach (module docstring)."""

    def __init__(self, config: dict[str, Any]):
        self.config = GuardConfig.model_validate(config)
        self.window_s = parse_duration(self.config.window)
        cooldown = self.config.cooldown
        self.cooldown_s = self.window_s if cooldown is None else parse_duration(cooldown)
        self._stuck: int | None = None  # the holder already reported as having no predecessor

    def limits(self) -> dict[str, Any]:
        c = self.config
        return {k: getattr(c, k) for k in (*LIMITS, "min_requests") if getattr(c, k) is not None}

    def breaches(self, m: dict[str, Any]) -> list[str]:
        """What the measurements ``m`` break, in words with both numbers."""
        c = self.config
        if m["requests"] < c.min_requests:
            return []
        return limit_breaches(
            m,
            error_rate=c.error_rate,
            p95_ms=c.p95_ms,
            min_accuracy=c.min_accuracy,
            min_requests=c.min_requests,
        )

    def check(
        self, server: Server, history: list[dict[str, Any]], now: float
    ) -> dict[str, Any] | None:
        """Judge the holder of the served alias (``history``: its events, just read); the
        rollback event when this replica rolled it back, else None."""
        from pipeflow.registry import alias_stack

        stack = alias_stack(history)
        if not stack:
            return None
        holder, model, alias = stack[-1], server.config.model, str(server.config.which)
        guarded = [e for e in history if e.get("action") == "rollback" and e.get("guard")]
        if guarded and now - guarded[-1]["time"] < self.cooldown_s:
            return None
        start = max(now - self.window_s, history[-1]["time"])
        m = server.fleet.window(model, holder, start, now)
        reasons = self.breaches(m)
        if not reasons:
            return None
        why = "; ".join(reasons)
        if len(stack) < 2:
            if self._stuck != holder:
                self._stuck = holder
                log.error("guard: %s@%s (v%d) breaches its guard (%s) but there is no earlier "
                          "holder to roll back to", model, alias, holder, why)  # fmt: skip
            return None
        record = {
            "limits": self.limits(),
            "window_s": self.window_s,
            "measured_from": round(start, 3),
            "measured_to": round(now, 3),
            "measurements": m,
            "replica": server.replica,
        }
        from pipeflow.errors import ArchivedVersion

        try:
            event = server.registry.rollback(
                model, alias, reason=f"guard: {why}", user="pipeflow-guard", only_from=holder,
                guard=record,
            )  # fmt: skip
        except ArchivedVersion as err:  # the earlier holder was archived: nothing to go back to
            if self._stuck != holder:
                self._stuck = holder
                log.error("guard: %s@%s (v%d) breaches its guard (%s) but %s", model, alias,
                          holder, why, err)  # fmt: skip
            return None
        if event is None:  # another replica rolled it back (or a person moved it) first
            return None
        self.alert(server, event, why, m)
        return event

    def alert(self, server: Server, event: dict[str, Any], why: str, m: dict[str, Any]) -> None:
        """Tell the sinks, the store's alert history and this replica's audit journal."""
        from pipeflow.monitoring.history import record_alerts
        from pipeflow.monitoring.sinks import open_sink

        model, alias = event["model"], event["alias"]
        message = (
            f"{model}@{event['from_version']} rolled back from {alias} to "
            f"v{event['to_version']} by the guard: {why}"
        )
        alert = {
            "id": secrets.token_hex(8),
            "time": event["time"],
            "rule": "guard",
            "severity": "critical",
            "model": model,
            "version": event["from_version"],
            "alias": alias,
            "to_version": event["to_version"],
            "alias_event": event["seq"],
            "message": message,
            "measurements": m,
            "limits": self.limits(),
            "suppressed": False,
            "sinks": [s.type for s in self.config.sinks],
        }
        log.warning("%s (alias event %d; alerted: %s)", message, event["seq"],
                    ", ".join(alert["sinks"]))  # fmt: skip
        for sink in self.config.sinks:
            try:
                open_sink(sink).send(alert)
            except Exception as err:  # alerting must not stop the server
                log.error("guard alert to the %s sink failed: %s", sink.type, err)
        try:
            record_alerts(server.store, [alert])
        except Exception as err:
            log.error("could not record the guard's alert in %s: %s", server.store.url, err)
        server.events.append(
            [
                {
                    "id": server.new_id(),
                    "time": time.time(),
                    "event": "guard_rollback",
                    "model": model,
                    "alias": alias,
                    "from_version": event["from_version"],
                    "version": event["to_version"],
                    "reason": event["reason"],
                    "measurements": m,
                }
            ]
        )
