"""The canary: a second version of the served model on probation, on part of the traffic.

``--canary NAME@VERSION`` loads another version of the served model next to the primary
(:meth:`Rollout.load`); :meth:`Rollout.pick` sends it ``weight`` of the requests.

**Which requests** (:meth:`Rollout.pick`). Without ``--route-by`` each request is a coin toss. With
``--route-by header:X-User`` (or ``field:NAME``, a field of the request's first row) the request's
key is hashed with the model's name (:func:`bucket`: SHA-256 -> a number in [0, 1)) and the
request goes to the canary when that number is below the weight. The same key lands on the same
version on every replica and after every restart, with no state to share; raising the weight only
moves keys from the primary to the canary, never back (a key under 0.25 is under 0.5 too). A
request without the key is a coin toss (counted: ``pipeflow_route_unkeyed``). A field that is not
one of the model's features is taken out of the rows before they are checked (a routing key, not
an input); a request is answered by one version as a whole, so a request of several rows is
routed by its first row's key.

**Probation.** Each request a version scored, or failed on, is observed on its handle
(:meth:`Rollout.observe`: requests, errors, latencies: this replica's); its live accuracy is the
fleet's (feedback to any replica for predictions any replica answered, :mod:`pipeflow.serving.fleet`).
Once the canary has taken ``min_requests`` requests, each of its requests, each feedback and each
pass of the watch loop checks it (:meth:`Rollout.check`): when its error rate, p95 latency or live
accuracy (once it has ``min_requests`` outcomes) breaches the limits of the config, it is withdrawn
(:meth:`Rollout.withdraw`): its weight drops to 0 (all traffic back on the primary), the event is
appended to the audit log's ``events``, the ``pipeflow_canary_weight`` gauge reads 0 and an
``ALERT`` is logged.

**The ramp** (``--ramp 5,25,50,100 --ramp-every 5m``): the canary's weight climbs step by step,
and the last step, once held, promotes it. The steps are the fleet's: ``ramp_step`` fleet events
(step, weight, the plan, and the measurements that let it advance). The first replica to start
records step 0; every watch-loop pass each replica asks (:meth:`Rollout.advance`, off the event
loop) whether the current step has lasted ``every`` and taken ``min_requests`` canary rows over the
whole fleet (:meth:`pipeflow.serving.fleet.Fleet.window`, since the step's event) within the
canary's limits (:func:`breaches`, the same limits as its probation, measured fleet-wide); if so
it records the next step, claimed like every fleet event so exactly one replica writes it, and
every replica applies it within its reload interval (a restarted replica replays the chain and
resumes at the fleet's step). A breach over the step's window withdraws the canary (and so ends
the ramp). After the last step holds, one replica promotes the canary to the served alias through
the registry's gates (:func:`pipeflow.registry.gates.promote`, the path of ``pipeflow models
promote``: ``--ramp-gate`` thresholds on its recorded metrics, a version the guard rolled back is
refused; the reason names the steps and the measurements) and records ``ramp_promoted``; the alias
watch then makes every replica serve it as the primary and the canary retires
(:meth:`Rollout.retire`). A refused promotion withdraws the canary, with the gate's words as the
reason.

The withdrawal is the fleet's, not this process's: it is recorded as a ``canary_withdrawn``
fleet event in the registry (:meth:`Rollout.publish`; at once, off the event loop, and retried by
the watch loop if the store could not be written), unless another replica recorded the same
version first. Every replica applies it within its reload interval (:meth:`Rollout.apply`), and a
replica started later with the same ``--canary`` replays it at start and begins at weight 0. A
withdrawn canary stays loaded (its requests in flight finish) and is never put back, not even by
a restart: to try that version again, a person promotes it, or a new run registers a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeflow.serving.config import ServeConfig
    from pipeflow.serving.handle import Handle
    from pipeflow.serving.state import Server

log = logging.getLogger("pipeflow.serve")


def parse_route_by(text: str) -> str:
    """``header:X-User`` or ``field:NAME``, checked; headers are matched case-insensitively."""
    from pipeflow.errors import UsageError

    kind, sep, name = text.partition(":")
    kind, name = kind.strip().lower(), name.strip()
    if not sep or kind not in ("header", "field") or not name:
        raise UsageError(
            f"--route-by {text!r}: expected header:NAME (a request header, e.g. header:X-User) "
            "or field:NAME (a field of the request's first row)"
        )
    return f"{kind}:{name.lower() if kind == 'header' else name}"


def parse_ramp(text: str) -> list[float]:
    """``5,25,50,100`` (percent) -> ``[0.05, 0.25, 0.5, 1.0]``: rising, each above 0, at most 100."""
    from pipeflow.errors import UsageError

    try:
        steps = [float(p.strip().rstrip("%")) for p in text.split(",") if p.strip()]
    except ValueError:
        steps = []
    if (
        not steps
        or any(not 0 < s <= 100 for s in steps)
        or any(b <= a for a, b in zip(steps, steps[1:], strict=False))
    ):
        raise UsageError(
            f"--ramp {text!r}: expected rising percentages above 0 and at most 100, "
            "e.g. 5,25,50,100"
        )
    return [round(s / 100, 6) for s in steps]


def bucket(model: str, key: str) -> float:
    """Where ``key`` falls in [0, 1) for ``model``: the same on every replica, every run."""
    digest = hashlib.sha256(f"{model}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def breaches(m: dict[str, Any], config: ServeConfig) -> list[str]:
    """What the fleet's measurements ``m`` of the canary (:meth:`Fleet.window`) break of its
    limits, in words with both numbers (accuracy once ``min_requests`` labels are in)."""
    from pipeflow.serving.guard import limit_breaches

    return limit_breaches(
        m,
        error_rate=config.max_error_rate if m["requests"] else None,
        p95_ms=config.max_p95_ms,
        min_accuracy=config.min_accuracy,
        min_requests=config.min_requests,
    )


class Rollout:
    """Which version answers a request: the primary, or the canary while it is on probation."""

    def __init__(self, server: Server):
        self.server = server
        self.canary: Handle | None = None
        self.weight = 0.0
        self.withdrawn = False
        #: this replica's withdrawal, until it is recorded as a fleet event
        self.unpublished: dict[str, Any] | None = None
        #: the ramp: the fleet's plan (steps, every_s, min_requests), its current step and since when
        self.plan: dict[str, Any] | None = None
        self.step = -1
        self.step_since = 0.0
        self.promoted = False  # the ramp's last step held and the canary was promoted
        config = server.config
        route = config.route_by or ""
        self.route_kind, _, self.route_name = route.partition(":")
        if config.ramp:
            self.plan = {
                "steps": list(config.ramp),
                "every_s": config.ramp_every_s,
                "min_requests": config.ramp_min_requests or config.min_requests,
            }
        if config.canary:
            self.canary = self.load(config.canary)
            if self.canary is not None:
                self.weight = config.ramp[0] if config.ramp else config.canary_weight

    def load(self, ref: str) -> Handle | None:
        """The canary ``ref``: another version of the served model, by its version or alias
        (None: a ramped canary that already holds the alias, promoted by the fleet)."""
        from pipeflow.errors import UsageError
        from pipeflow.registry import parse_ref

        server, config = self.server, self.server.config
        name, which = parse_ref(ref)
        if name != config.model:
            raise UsageError(
                f"--canary {ref}: a canary is another version of {config.model}, "
                f"not a version of {name}"
            )
        if which is None:
            raise UsageError(f"--canary {ref}: name the version, e.g. {name}@3")
        record = server.registry.resolve(name, which)
        if int(record["version"]) == server.primary.version:
            if config.ramp:  # the ramp ended in its promotion: a restarted replica serves it
                log.info("canary %s@%s already holds %s@%s (the ramp promoted it): no canary",
                         name, record["version"], name, config.which)  # fmt: skip
                self.promoted = True
                return None
            raise UsageError(
                f"--canary {ref} is {name}@{record['version']}, the version "
                f"{config.model}@{config.which} already serves: name another version"
            )
        return server.load(name, which, "canary")

    @property
    def live(self) -> bool:
        """Whether a canary takes traffic (loaded and not withdrawn)."""
        return self.canary is not None and self.weight > 0

    @property
    def ramping(self) -> bool:
        return self.plan is not None and self.live and not self.promoted and self.step >= 0

    # -- routing --------------------------------------------------------------------------------
    def key_of(self, headers: Any, rows: list[Any]) -> str | None:
        """The request's routing key (``--route-by``), or None: none configured, or the request
        lacks it. A ``field:`` that is not a feature is taken out of the rows."""
        kind, name = self.route_kind, self.route_name
        if not kind:
            return None
        if kind == "header":
            value = headers.get(name)
        else:
            value = rows[0].get(name) if rows and isinstance(rows[0], dict) else None
            if name not in self.server.primary.signature.names:
                for row in rows:
                    if isinstance(row, dict):
                        row.pop(name, None)
        if value is None or value == "":
            self.server.metrics.unkeyed.inc()
            return None
        return str(value)

    def pick(self, key: str | None = None) -> Handle:
        """The version that answers a request with routing key ``key`` (None: at random)."""
        canary, weight = self.canary, self.weight
        if canary is None or weight <= 0:
            return self.server.primary
        if weight >= 1:
            return canary
        share = bucket(self.server.config.model, key) if key is not None else random.random()
        return canary if share < weight else self.server.primary

    # -- probation ------------------------------------------------------------------------------
    def observe(self, handle: Handle, seconds: float, failed: bool) -> None:
        handle.requests += 1
        handle.errors += failed
        handle.latencies.append(seconds)
        if handle is self.canary and self.weight > 0:
            self.check()

    def check(self) -> None:
        c, cfg = self.canary, self.server.config
        if c is None or c.requests < cfg.min_requests:
            return
        reasons = []
        rate = c.errors / c.requests
        if rate > cfg.max_error_rate:
            reasons.append(f"error rate {rate:.3f} > {cfg.max_error_rate:g}")
        if cfg.max_p95_ms is not None and c.latencies:
            ordered = sorted(c.latencies)
            p95 = ordered[int(0.95 * (len(ordered) - 1))] * 1000
            if p95 > cfg.max_p95_ms:
                reasons.append(f"p95 latency {p95:.1f} ms > {cfg.max_p95_ms:g} ms")
        correct, total = c.feedback
        if cfg.min_accuracy is not None and total >= cfg.min_requests:
            accuracy = correct / total
            if accuracy < cfg.min_accuracy:
                reasons.append(f"live accuracy {accuracy:.3f} < {cfg.min_accuracy:g}")
        if reasons:
            self.withdraw("; ".join(reasons))

    def withdraw(self, why: str) -> None:
        c, server = self.canary, self.server
        if c is None or self.withdrawn:
            return
        self.weight, self.withdrawn = 0.0, True
        server.metrics.canary_weight.set(0)
        event = {
            "id": server.new_id(),
            "time": time.time(),
            "event": "canary_withdrawn",
            "model": c.name,
            "version": c.version,
            "primary": server.primary.label,
            "reason": why,
            "requests": c.requests,
            "errors": c.errors,
        }
        server.events.append([event])
        log.warning(
            "ALERT canary %s withdrawn: %s (all traffic back on %s)",
            c.label,
            why,
            server.primary.label,
        )
        self.unpublished = {
            "event": "canary_withdrawn",
            "version": c.version,
            "primary": server.primary.label,
            "reason": why,
            "requests": c.requests,
            "errors": c.errors,
            "replica": server.replica,
        }
        # no event loop (a direct call, or the watch loop's thread): the watch loop publishes it
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().run_in_executor(None, self.publish)

    def publish(self) -> None:
        """Record this replica's withdrawal as a fleet event (once for the fleet: nothing is
        written when any replica already recorded this version's withdrawal)."""
        from pipeflow.registry.gates import withdraws

        event = self.unpublished
        if event is None:
            return
        version = event["version"]
        try:
            self.server.registry.record_fleet_event(
                self.server.config.model,
                event,
                unless=lambda events: any(withdraws(e, version) for e in events),
            )
        except Exception as err:  # the store is unreachable: the watch loop tries again
            log.error("could not record the canary's withdrawal in the registry: %s", err)
            return
        self.unpublished = None

    # -- the fleet's decisions ------------------------------------------------------------------
    def apply(self, event: dict[str, Any]) -> None:
        """A fleet event (:mod:`pipeflow.serving.fleet`) about this canary's version, by any
        replica: a withdrawal takes its traffic here too, a ramp step sets its weight, a ramp's
        promotion stops the ramp."""
        c, server = self.canary, self.server
        if c is None or event.get("version") != c.version:
            return
        kind = event.get("event")
        if kind == "canary_withdrawn" and not self.withdrawn:
            self.weight, self.withdrawn = 0.0, True
            server.metrics.canary_weight.set(0)
            log.warning(
                "canary %s withdrawn by replica %s: %s (all traffic back on %s)",
                c.label,
                event.get("replica"),
                event.get("reason"),
                server.primary.label,
            )
        elif kind == "ramp_step" and not self.withdrawn and event.get("step", -1) > self.step:
            self.step, self.step_since = int(event["step"]), float(event["time"])
            self.plan = {k: event[k] for k in ("steps", "every_s", "min_requests")}
            self.weight = float(event["weight"])
            server.metrics.canary_weight.set(self.weight)
            log.info(
                "ramp of canary %s: step %d of %d, %.0f%% of traffic",
                c.label,
                self.step + 1,
                len(self.plan["steps"]),
                100 * self.weight,
            )
        elif kind == "ramp_promoted":
            self.promoted = True

    def begin(self) -> None:
        """Record the ramp's first step for the fleet, unless a replica already did (or this
        canary was withdrawn or promoted): the step's time starts every replica's clock."""
        c, plan = self.canary, self.plan
        if c is None or plan is None or self.withdrawn or self.promoted or self.step >= 0:
            return
        self._record_step(0, {})

    def _record_step(self, step: int, measured: dict[str, Any]) -> None:
        c, plan, server = self.canary, self.plan, self.server
        assert c is not None and plan is not None
        version = c.version
        recorded = server.registry.record_fleet_event(
            server.config.model,
            {
                "event": "ramp_step",
                "version": version,
                "step": step,
                "weight": plan["steps"][step],
                **plan,
                "primary": server.primary.label,
                "measurements": measured,
                "replica": server.replica,
            },
            unless=lambda events: any(
                e.get("version") == version
                and (
                    (e.get("event") == "ramp_step" and e.get("step", -1) >= step)
                    or e.get("event") in ("canary_withdrawn", "ramp_promoted")
                )
                for e in events
            ),
        )
        if recorded is not None:
            log.info("ramp of canary %s: this replica moved the fleet to step %d (%.0f%%)",
                     c.label, step + 1, 100 * plan["steps"][step])  # fmt: skip

    def advance(self, now: float) -> None:
        """One look at the ramp (from the watch loop's thread): the next step, the promotion, or
        the withdrawal, when the current step has lasted ``every_s`` and taken ``min_requests``
        canary rows over the fleet (see the module docstring)."""
        c, plan, server = self.canary, self.plan, self.server
        if not self.ramping or c is None or plan is None:
            return
        if now - self.step_since < plan["every_s"]:
            return
        m = server.fleet.window(c.name, c.version, self.step_since, now)
        if m["requests"] < plan["min_requests"]:
            return
        reasons = breaches(m, server.config)
        if reasons:
            self.withdraw(f"ramp step {self.step + 1} ({100 * self.weight:.0f}%): "
                          + "; ".join(reasons))  # fmt: skip
            self.publish()
            return
        if self.step + 1 < len(plan["steps"]):
            self._record_step(self.step + 1, m)
        else:
            self.promote(m)

    def promote(self, m: dict[str, Any]) -> None:
        """The last step held: the canary takes the served alias through the registry's gates
        (one replica writes the alias event; the others find it held)."""
        from pipeflow.errors import GateFailed
        from pipeflow.registry.gates import gates_from_flags, promote

        c, plan, server = self.canary, self.plan, self.server
        assert c is not None and plan is not None
        config = server.config
        model, alias = config.model, str(config.which)
        steps = " -> ".join(f"{100 * s:g}%" for s in plan["steps"])
        reason = (
            f"ramp {steps} held ({m['requests']} rows in the last step, error rate "
            f"{m['error_rate']:g}, p95 {m['p95_ms']} ms, accuracy {m['accuracy']})"
        )
        gates = gates_from_flags(config.ramp_gates, "--ramp-gate")
        try:
            event = promote(
                server.registry, model, c.version, alias, gates=gates, reason=reason,
                user="pipeflow-ramp", unless_held=True,
            )  # fmt: skip
        except GateFailed as err:
            self.withdraw(f"ramp: promotion refused: {err}")
            self.publish()
            return
        self.promoted = True
        server.registry.record_fleet_event(
            model,
            {
                "event": "ramp_promoted",
                "version": c.version,
                "alias": alias,
                "alias_event": None if event is None else event["seq"],
                "reason": reason,
                "measurements": m,
                "replica": server.replica,
            },
            unless=lambda events: any(
                e.get("event") == "ramp_promoted" and e.get("version") == c.version for e in events
            ),
        )
        if event is not None:
            log.warning("ramp of canary %s complete: %s@%s -> v%d (%s)",
                        c.label, model, alias, c.version, reason)  # fmt: skip

    def retire(self) -> None:
        """The canary now holds the served alias (the ramp promoted it, or a person did): it is
        the primary, and there is no canary any more."""
        c = self.canary
        if c is None:
            return
        log.info("canary %s now holds %s@%s: no canary any more",
                 c.label, c.name, self.server.config.which)  # fmt: skip
        self.canary, self.weight, self.promoted = None, 0.0, True
        self.server.metrics.canary_weight.set(0)
