"""The canary: a second version of the served model on probation, on part of the traffic.

``--canary NAME@VERSION`` loads another version of the served model next to the primary
(:meth:`Rollout.load`); :meth:`Rollout.pick` sends it ``weight`` of the requests, at random.
Each request a version scored, or failed on, is observed on its handle (:meth:`Rollout.observe`:
requests, errors, latencies); feedback adds to the handles' live accuracy
(:meth:`pipeflow.serving.state.Server.record_feedback`). Once the canary has taken
``min_requests`` requests, each of its requests and each feedback checks it
(:meth:`Rollout.check`): when its error rate, p95 latency or live accuracy (once it has
``min_requests`` outcomes) breaches the limits of the config, it is withdrawn
(:meth:`Rollout.withdraw`): its weight drops to 0 (all traffic back on the primary), the event is
appended to the audit log's ``events``, the ``pipeflow_canary_weight`` gauge reads 0 and an
``ALERT`` is logged. A withdrawn canary stays loaded (its requests in flight finish) and is not
put back: that takes a restart.
"""

from __future__ import annotations

import logging
import random
import time
from typing import TYPE_CHECKING

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
