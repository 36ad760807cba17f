"""The state of one server process, shared by the routes: :class:`Server`.

It holds the store and registry, the handle of the primary version (the alias's holder), the
canary's rollout (:mod:`pipeflow.serving.rollout`: sticky routing, the ramp), the shadow
(:mod:`pipeflow.serving.shadow`), the metrics, the prediction ids, the fleet's
view (:mod:`pipeflow.serving.fleet`: every replica's predictions and feedback, for live accuracy,
and the fleet events), the alias's guard (:mod:`pipeflow.serving.guard`) and the three audit
logs: ``predictions`` (written by the batchers), ``feedback`` and ``events`` (canary withdrawn,
reloaded, guard rollback, model errors). The
audit folder is repaired and checked writable at start: a server that cannot audit does not
start. On a remote store the folder is a local spool (``--audit-dir``, else
``$PIPEFLOW_SPOOL``), and :attr:`Server.shipper` ships its closed segments to
``<store>/journal/audit/`` every ``ship_interval_s`` and at shutdown, having first shipped what a
crashed predecessor left there (:mod:`pipeflow.store.shipping`).

Authentication: optional bearer tokens with scopes (``predict``, ``feedback``, ``metrics``;
``*`` = all), checked by :class:`pipeflow.auth.Tokens` (the dashboard's too): only their SHA-256
digests are kept, and a presented token's digest is compared with every known one in constant
time; the caller is named in the audit log by a digest fingerprint, never by the token.

The watch loop (:meth:`Server.watch_alias`), every ``reload_interval_s``, off the request path
(:meth:`Server.tick`): fold the fleet's new journal records, apply new fleet events (a canary
another replica withdrew, a step of the canary's ramp), move the ramp on, let the guard judge the
alias's holder, and re-read the alias. When it
moved (promote, rollback, the guard's rollback), the new version is loaded off the request path
and swapped in by one assignment: a request picks its handle once, and requests already queued
on the old one finish there, so nothing in flight fails. At start the same records are replayed,
so a restarted replica begins where the fleet is.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any

from pipeflow.auth import Tokens
from pipeflow.errors import BadRequest
from pipeflow.serving.batcher import Batcher
from pipeflow.serving.config import ServeConfig
from pipeflow.serving.fleet import Fleet, RecentPredictions
from pipeflow.serving.guard import Guard
from pipeflow.serving.handle import Handle
from pipeflow.serving.metrics import Metrics
from pipeflow.serving.rollout import Rollout
from pipeflow.serving.shadow import Shadow
from pipeflow.store.journal import AuditLog
from pipeflow.store.shipping import Shipper

log = logging.getLogger("pipeflow.serve")

__all__ = ["RecentPredictions", "Server"]

# the last two hex digits of a number, 00 to ff
_LOW_DIGITS = [f"{i:02x}" for i in range(256)]


def hex_ids(prefix: str, first: int, n: int) -> list[str]:
    """``<prefix>-<k in hex>`` for the ``n`` numbers k from ``first``: each run of up to 256
    numbers sharing their leading digits is that head joined to each of the last two digits in
    C, half the time of formatting every number (below 256 they are formatted: no leading 0)."""
    ids: list[str] = []
    at, end = first, first + n
    while at < end:
        high, low = divmod(at, 256)
        stop = min(end, (high + 1) * 256)
        if high == 0:
            ids += map(f"{prefix}-%x".__mod__, range(at, stop))
        else:
            ids += map(f"{prefix}-{high:x}".__add__, _LOW_DIGITS[low : low + stop - at])
        at = stop
    return ids


class Server:
    """State shared by the routes: handles, audit, metrics, rollout."""

    def __init__(self, config: ServeConfig):
        from pipeflow.registry import Registry
        from pipeflow.store.artifacts import ArtifactStore
        from pipeflow.store.journal import default_folder, repair

        self.config = config
        pinned = config.which is None or str(config.which).isdigit()
        if config.guard and pinned:
            from pipeflow.errors import UsageError

            raise UsageError(
                f"--guard guards an alias: serve {config.model}@ALIAS, not a pinned version"
            )
        if config.ramp and (pinned or not config.canary):
            from pipeflow.errors import UsageError

            raise UsageError(
                "--ramp ramps a canary up to the served alias: serve "
                f"{config.model}@ALIAS --canary {config.model}@VERSION --ramp ..."
            )
        self.store = ArtifactStore(config.store_url, config.storage_options)
        self.registry = Registry(self.store)
        # a local store's journal is <store>/audit; a remote store's is a local spool, shipped
        folder = config.audit_dir or default_folder(config.store_url)
        self.audit_dir = str(folder)
        try:
            repair(self.audit_dir)
            for kind in ("predictions", "feedback", "events"):
                probe = Path(self.audit_dir) / kind
                probe.mkdir(parents=True, exist_ok=True)
                if not os.access(probe, os.W_OK):
                    raise PermissionError(13, "not writable", str(probe))
        except OSError as err:
            from pipeflow.errors import UsageError

            raise UsageError(
                f"cannot write the audit log at {err.filename or self.audit_dir}: {err.strerror or err} "
                "(pass --audit-dir DIR to put it somewhere writable)"
            ) from None
        self.shipper: Shipper | None = None
        if self.store.is_local:
            self.audit = AuditLog(self.audit_dir, "predictions", sync=config.audit_sync)
            self.feedback_log = AuditLog(self.audit_dir, "feedback", sync=config.audit_sync)
            self.events = AuditLog(self.audit_dir, "events", sync=True)
        else:
            self.shipper = Shipper(
                self.store, "audit", self.audit_dir, interval_s=config.ship_interval_s
            )
            self.audit = self.shipper.log("predictions", sync=config.audit_sync)
            self.feedback_log = self.shipper.log("feedback", sync=config.audit_sync)
            self.events = self.shipper.log("events", sync=True)
            adopted = self.shipper.adopt()  # what a crashed predecessor left in this spool
            if adopted:
                log.info("shipped %d segment(s) left in %s", adopted, self.audit_dir)
        # a letter first: an id such as "1305603e-1" would read back from CSV as a number
        self._prefix = "p" + secrets.token_hex(4)
        self._counter = 0
        self._id_lock = threading.Lock()
        #: this process among the replicas, in the fleet events it writes
        self.replica = f"{socket.gethostname()}-{os.getpid()}-{self._prefix}"
        self.guard = Guard(config.guard) if config.guard else None
        self.fleet = self._fleet()
        self.recent: RecentPredictions = self.fleet.recent
        self.arriving = 0  # predict requests whose body is being read (event loop only)
        self.primary = self.load(config.model, config.which, "primary")
        self.metrics = Metrics()
        self.rollout = Rollout(self)
        # what the fleet decided and observed before this replica started; the ramp's first
        # step is recorded by the first replica (and replayed by the others)
        for event in self.fleet_events():
            self.rollout.apply(event)
        if self.rollout.plan is not None and self.rollout.step < 0:
            self.rollout.begin()
            for event in self.fleet_events():
                self.rollout.apply(event)
        if self.rollout.promoted and self.rollout.live:
            # its ramp promoted it and the alias has moved on since (a rollback): the ramp is
            # over, and a restarted replica does not send it traffic again
            self.rollout.weight = 0.0
        self.shadow = self._shadow() if config.shadow else None
        self.fleet.refresh(time.time())
        self.metrics.fleet(self.fleet.accuracies())
        self.metrics.canary_weight.set(self.rollout.weight)
        self.tokens = Tokens(config.tokens)

    @property
    def canary(self) -> Handle | None:
        """The canary version, withdrawn or not (:mod:`pipeflow.serving.rollout`)."""
        return self.rollout.canary

    def load(self, name: str, which: str | int | None, role: str) -> Handle:
        """A version of a registered model, loaded, with its batcher; its live accuracy is the
        fleet's (:mod:`pipeflow.serving.fleet`). An archived version is refused
        (:class:`~pipeflow.errors.ArchivedVersion`): at start the server does not start; the alias
        watch logs it and keeps serving the version it has."""
        model, record = self.registry.servable(name, which)
        handle = Handle(name, record, model, role)
        handle.feedback = self.fleet.counts_of(name, handle.version)
        handle.batcher = Batcher(handle, self)
        return handle

    def _shadow(self) -> Shadow:
        """The shadow version (``--shadow``), with its journal (:mod:`pipeflow.serving.shadow`)."""
        from pipeflow.errors import UsageError
        from pipeflow.registry import parse_ref

        config = self.config
        assert config.shadow is not None
        name, which = parse_ref(config.shadow)
        if which is None:
            raise UsageError(f"--shadow {config.shadow}: name the version, e.g. {name}@3")
        record = self.registry.resolve(name, which)
        if name == config.model and int(record["version"]) == self.primary.version:
            raise UsageError(
                f"--shadow {config.shadow} is {name}@{record['version']}, the version "
                f"{config.model}@{config.which} already serves: name another version"
            )
        handle = self.load(name, which, "shadow")
        if self.shipper is not None:
            journal = self.shipper.log("shadow")
        else:
            journal = AuditLog(self.audit_dir, "shadow", sync=config.audit_sync)
        return Shadow(self, handle, journal, config.shadow_queue)

    def _fleet(self) -> Fleet:
        """The reader of every replica's journal (this one's own segments told apart)."""
        from pipeflow.store.shipping import open_journal

        where: Any = self.audit_dir
        if not self.store.is_local:
            where = open_journal(self.store, "audit", self.audit_dir, remember=False)

        def own() -> set[str]:
            return self.audit.names | self.feedback_log.names | self.events.names

        horizon = max(3600.0, self.guard.window_s) if self.guard is not None else 3600.0
        return Fleet(where, own, horizon)

    def fleet_events(self) -> list[dict[str, Any]]:
        """The fleet events recorded since the last call (all of them, the first time)."""
        fresh = self.registry.fleet_events(self.config.model, after=self.fleet.seq)
        if fresh:
            self.fleet.seq = fresh[-1]["seq"]
        return fresh

    def others_fields(self, handle: Handle) -> frozenset[str]:
        """The features of the other versions this server answers or shadows with (primary,
        canary, shadow) that ``handle`` does not take: a request may carry them for whichever
        version picks it up, and ``handle`` is checked without them (a mitigated canary needs
        the group attribute its thresholds are picked by; the plain primary has no such
        feature). Empty while every live version has ``handle``'s features."""
        own = handle.signature.names
        found: set[str] = set()
        shadow = self.shadow.handle if self.shadow is not None else None
        for other in (self.primary, self.rollout.canary, shadow):
            if other is not None and other is not handle and other.signature.names != own:
                found.update(other.signature.names)
        return frozenset(found.difference(own))

    def new_id(self) -> str:
        return self.new_ids(1)[0]

    def new_ids(self, n: int) -> list[str]:
        """``n`` prediction ids, unique in this process (one lock for a whole batch)."""
        with self._id_lock:
            first = self._counter + 1
            self._counter += n
        return hex_ids(self._prefix, first, n)

    # -- auth ------------------------------------------------------------------------------
    def authorize(self, authorization: str | None, scope: str) -> str:
        """The caller's name (a token fingerprint) or raises 401/403; open when no tokens."""
        return self.tokens.check(authorization, scope)

    # -- the watch loop ---------------------------------------------------------------------
    def tick(self) -> int | None:
        """One pass of the watch loop, off the event loop: fold the fleet's new journal records,
        publish a withdrawal not yet recorded, apply new fleet events, move the canary's ramp on
        (:meth:`pipeflow.serving.rollout.Rollout.advance`), let the guard judge the alias's
        holder, and read who holds the alias now (None for a pinned version)."""
        from pipeflow.registry import alias_stack

        now = time.time()
        self.fleet.refresh(now)
        if self.rollout.unpublished is not None:
            self.rollout.publish()
        for event in self.fleet_events():
            self.rollout.apply(event)
        if self.rollout.ramping:
            self.rollout.advance(now)
        which = self.config.which
        if which is None or str(which).isdigit():
            return None
        history = self.registry.history(self.config.model, str(which))
        if self.guard is not None and self.guard.check(self, history, now) is not None:
            history = self.registry.history(self.config.model, str(which))
        stack = alias_stack(history)
        return stack[-1] if stack else None

    async def watch_alias(self) -> None:
        """Every ``reload_interval_s``: apply what the fleet decided (:meth:`tick`), and swap in
        the alias's new holder when it moved (promote, rollback, the guard's rollback)."""
        loop = asyncio.get_running_loop()
        which = self.config.which
        while True:
            await asyncio.sleep(self.config.reload_interval_s)
            try:
                held = await loop.run_in_executor(None, self.tick)
            except Exception as err:  # keep serving what we have; try again next interval
                log.error("could not read the fleet's state in %s: %s", self.store.url, err)
                continue
            self.metrics.fleet(self.fleet.accuracies())
            if self.rollout.live:
                self.rollout.check()  # feedback from other replicas may have come in
            if held is None or held == self.primary.version:
                continue
            try:
                fresh_handle = await loop.run_in_executor(
                    None, self.load, self.config.model, held, "primary"
                )
            except Exception as err:  # keep serving the version we have
                log.error("could not reload %s@%s: %s", self.config.model, which, err)
                continue
            old = self.primary
            self.primary = fresh_handle
            self.events.append(
                [
                    {
                        "id": self.new_id(),
                        "time": time.time(),
                        "event": "reloaded",
                        "model": fresh_handle.name,
                        "alias": which,
                        "from_version": old.version,
                        "version": fresh_handle.version,
                    }
                ]
            )
            log.info(
                "%s@%s moved: now serving v%d (was v%d)",
                fresh_handle.name,
                which,
                fresh_handle.version,
                old.version,
            )
            canary = self.rollout.canary
            if canary is not None and canary.version == fresh_handle.version:
                self.rollout.retire()  # promoted (by its ramp, or by a person)

    # -- feedback -----------------------------------------------------------------------------
    def check_outcomes(self, items: list[dict[str, Any]]) -> None:
        """422 unless every outcome is one the served model could have answered: one of its
        classes for a classifier (as text or as the label itself), a finite number otherwise."""
        handles = [h for h in (self.primary, self.rollout.canary) if h is not None]
        classes = {str(c) for h in handles for c in h.classes}
        problems = []
        for i, item in enumerate(items):
            outcome = item["outcome"]
            if classes:
                if isinstance(outcome, bool | int | float | str) and str(outcome) in classes:
                    continue
                expected = f"one of the model's classes: {', '.join(sorted(classes))}"
            else:
                number = isinstance(outcome, int | float) and not isinstance(outcome, bool)
                if number and math.isfinite(outcome):
                    continue
                expected = "a finite number (the model is a regressor)"
            problems.append(
                {"row": i, "field": "outcome", "expected": expected, "got": repr(outcome)[:80]}
            )
        if problems:
            raise BadRequest(
                422, "validation_error", "feedback outcomes the model cannot have", problems
            )

    def record_feedback(self, items: list[dict[str, Any]], caller: str) -> int:
        """Record true outcomes. A second label for the same prediction id replaces the first:
        live accuracy (here, over the fleet, and in ``pipeflow monitor``) counts each prediction
        once, by its latest label. A prediction another replica answered counts once its record
        is read from the journal (:meth:`pipeflow.serving.fleet.Fleet.label`)."""
        self.check_outcomes(items)
        now = time.time()
        records = []
        for item in items:
            pid, outcome = item["id"], item["outcome"]
            self.fleet.label(pid, outcome, now)
            entry = {
                "id": pid,
                "time": now,
                "outcome": outcome,
                "caller": caller,
                "model": self.primary.name,
            }
            if item.get("attributes"):  # e.g. a sensitive attribute for live bias
                entry["attributes"] = item["attributes"]
            records.append(entry)
        self.feedback_log.append(records)
        if self.rollout.live:
            self.rollout.check()
        return len(records)
