"""The canary: a second version of the served model on probation, on part of the traffic.

``--canary NAME@VERSION`` loads another version of the served model next to the primary
(:meth:`Rollout.load`); :meth:`Rollout.pick` sends it ``weight`` of the requests, at random.
Each request a version scored, or failed on, is observed on its handle (:meth:`Rollout.observe`:
requests, errors, latencies: this replica's); its live accuracy is the fleet's (feedback to any
replica for predictions any replica answered, :mod:`pipeflow.serving.fleet`). Once the canary
has taken ``min_requests`` requests, each of its requests, each feedback and each pass of the
watch loop checks it (:meth:`Rollout.check`): when its error rate, p95 latency or live accuracy
(once it has ``min_requests`` outcomes) breaches the limits of the config, it is withdrawn
(:meth:`Rollout.withdraw`): its weight drops to 0 (all traffic back on the primary), the event is
appended to the audit log's ``events``, the ``pipeflow_canary_weight`` gauge reads 0 and an
``ALERT`` is logged.

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
import logging
import random
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeflow.serving.handle import Handle
    from pipeflow.serving.state import Server

log = logging.getLogger("pipeflow.serve")


class Rollout:
    """Which version answers a request: the primary, or the canary while it is on probation."""

    def __init__(self, server: Server):
        self.server = server
        self.canary: Handle | None = None
        self.weight = 0.0
        #: this replica's withdrawal, until it is recorded as a fleet event
        self.unpublished: dict[str, Any] | None = None
        config = server.config
        if config.canary:
            self.canary = self.load(config.canary)
            self.weight = config.canary_weight

    def load(self, ref: str) -> Handle:
        """The canary ``ref``: another version of the served model, by its version or alias."""
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
        canary = server.load(name, which, "canary")
        if canary.version == server.primary.version:
            raise UsageError(
                f"--canary {ref} is {canary.label}, the version "
                f"{config.model}@{config.which} already serves: name another version"
            )
        return canary

    @property
    def live(self) -> bool:
        """Whether a canary takes traffic (loaded and not withdrawn)."""
        return self.canary is not None and self.weight > 0

    def pick(self) -> Handle:
        if self.canary is not None and self.weight > 0 and random.random() < self.weight:
            return self.canary
        return self.server.primary

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
        if c is None or self.weight == 0:
            return
        self.weight = 0.0
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
        # no event loop (a direct call): the watch loop publishes it
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().run_in_executor(None, self.publish)

    def publish(self) -> None:
        """Record this replica's withdrawal as a fleet event (once for the fleet: nothing is
        written when any replica already recorded this version's withdrawal)."""
        event = self.unpublished
        if event is None:
            return
        version = event["version"]
        try:
            self.server.registry.record_fleet_event(
                self.server.config.model,
                event,
                unless=lambda events: any(_withdraws(e, version) for e in events),
            )
        except Exception as err:  # the store is unreachable: the watch loop tries again
            log.error("could not record the canary's withdrawal in the registry: %s", err)
            return
        self.unpublished = None

    def apply(self, event: dict[str, Any]) -> None:
        """A fleet event (:mod:`pipeflow.serving.fleet`): a withdrawal of this canary's version,
        by any replica, takes its traffic here too."""
        c, server = self.canary, self.server
        if c is None or not _withdraws(event, c.version) or self.weight == 0:
            return
        self.weight = 0.0
        server.metrics.canary_weight.set(0)
        log.warning(
            "canary %s withdrawn by replica %s: %s (all traffic back on %s)",
            c.label,
            event.get("replica"),
            event.get("reason"),
            server.primary.label,
        )


def _withdraws(event: dict[str, Any], version: int) -> bool:
    return event.get("event") == "canary_withdrawn" and event.get("version") == version
