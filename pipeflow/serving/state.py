"""The state of one server process, shared by the routes: :class:`Server`.

It holds the store and registry, the handle of the primary version (the alias's holder) and the
canary's rollout (:mod:`pipeflow.serving.rollout`), the metrics, the prediction ids, the recent
predictions (for live accuracy from feedback) and the three audit logs: ``predictions`` (written
by the batchers), ``feedback`` and ``events`` (canary withdrawn, reloaded, model errors). The
audit folder is repaired and checked writable at start: a server that cannot audit does not
start. On a remote store the folder is a local spool (``--audit-dir``, else
``$PIPEFLOW_SPOOL``), and :attr:`Server.shipper` ships its closed segments to
``<store>/journal/audit/`` every ``ship_interval_s`` and at shutdown, having first shipped what a
crashed predecessor left there (:mod:`pipeflow.store.shipping`).

Authentication: optional bearer tokens with scopes (``predict``, ``feedback``, ``metrics``;
``*`` = all). Only their SHA-256 digests are kept, and a presented token's digest is compared
with every known one in constant time; the caller is named in the audit log by a digest
fingerprint, never by the token.

Hot reload: the alias is re-read every ``reload_interval_s`` (:meth:`Server.watch_alias`); when it
moves (promote, rollback), the new version is loaded off the request path and swapped in;
requests already queued finish on the old one.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from pipeflow.errors import BadRequest
from pipeflow.serving.batcher import Batcher
from pipeflow.serving.config import ServeConfig
from pipeflow.serving.handle import Handle
from pipeflow.serving.metrics import Metrics
from pipeflow.serving.rollout import Rollout
from pipeflow.store.journal import AuditLog
from pipeflow.store.shipping import Shipper

log = logging.getLogger("pipeflow.serve")


class RecentPredictions:
    """The outputs of roughly the last ``keep`` to ``2 * keep`` predictions by id, for live accuracy
    from feedback. Two generations of plain dicts, one per model version, filled with one C-level
    ``dict.update`` per batch; when the young generation is full it becomes the old one and the
    old one is dropped: O(1) per batch, no per-row eviction."""

    def __init__(self, keep: int = 100_000):
        self.keep = keep
        self._young: dict[tuple[str, int], dict[str, Any]] = {}
        self._old: dict[tuple[str, int], dict[str, Any]] = {}
        self._size = 0
        self._lock = threading.Lock()

    def add(self, name: str, version: int, ids: list[str], outputs: list[Any]) -> None:
        with self._lock:
            if self._size >= self.keep:
                self._old, self._young, self._size = self._young, {}, 0
            self._young.setdefault((name, version), {}).update(zip(ids, outputs, strict=True))
            self._size += len(ids)

    def get(self, pid: str) -> tuple[str, int, Any] | None:
        """(model, version, output) of a recent prediction id, or None."""
        with self._lock:
            for generation in (self._young, self._old):
                for (name, version), outputs in generation.items():
                    if pid in outputs:
                        return name, version, outputs[pid]
        return None


class Server:
    """State shared by the routes: handles, audit, metrics, rollout."""

    def __init__(self, config: ServeConfig):
        from pipeflow.registry import Registry
        from pipeflow.store.artifacts import ArtifactStore
        from pipeflow.store.journal import default_folder, repair

        self.config = config
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
        self.recent = RecentPredictions()
        #: whether the latest label of a recent prediction matched it (a relabel replaces it)
        self._labels: dict[str, bool] = {}
        self.arriving = 0  # predict requests whose body is being read (event loop only)
        self.primary = self.load(config.model, config.which, "primary")
        self.rollout = Rollout(self)
        self.metrics = Metrics()
        self.metrics.canary_weight.set(self.rollout.weight)
        self.tokens = {
            hashlib.sha256(t.encode()).digest(): frozenset(s)
            for t, s in (config.tokens or {}).items()
        }

    @property
    def canary(self) -> Handle | None:
        """The canary version, withdrawn or not (:mod:`pipeflow.serving.rollout`)."""
        return self.rollout.canary

    def load(self, name: str, which: str | int | None, role: str) -> Handle:
        """A version of a registered model, loaded, with its batcher."""
        model, record = self.registry.load_model(name, which)
        handle = Handle(name, record, model, role)
        handle.batcher = Batcher(handle, self)
        return handle

    def new_id(self) -> str:
        return self.new_ids(1)[0]

    def new_ids(self, n: int) -> list[str]:
        """``n`` prediction ids, unique in this process (one lock for a whole batch)."""
        with self._id_lock:
            first = self._counter + 1
            self._counter += n
        prefix = self._prefix
        return [f"{prefix}-{i:x}" for i in range(first, first + n)]

    # -- auth ------------------------------------------------------------------------------
    def authorize(self, authorization: str | None, scope: str) -> str:
        """The caller's name (a token fingerprint) or raises 401/403; open when no tokens."""
        if not self.tokens:
            return "anonymous"
        if not authorization or not authorization.lower().startswith("bearer "):
            raise BadRequest(
                401, "unauthorized", "a bearer token is required (Authorization: Bearer TOKEN)"
            )
        digest = hashlib.sha256(authorization[7:].strip().encode()).digest()
        scopes = None
        for known, granted in self.tokens.items():  # constant time per comparison, all compared
            if hmac.compare_digest(known, digest):
                scopes = granted
        if scopes is None:
            raise BadRequest(401, "unauthorized", "the bearer token is not valid")
        if scope not in scopes and "*" not in scopes:
            raise BadRequest(403, "forbidden", f"the token lacks the '{scope}' scope")
        return "token:" + digest.hex()[:12]

    # -- alias watch ------------------------------------------------------------------------
    async def watch_alias(self) -> None:
        """Swap in the alias's new holder when it moves (promote / rollback)."""
        which = self.config.which
        if which is None or str(which).isdigit():
            return
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.config.reload_interval_s)
            try:
                held = await loop.run_in_executor(
                    None, self.registry.holder, self.config.model, which
                )
                if held is None or held == self.primary.version:
                    continue
                fresh = await loop.run_in_executor(
                    None, self.load, self.config.model, held, "primary"
                )
            except Exception as err:  # keep serving the version we have
                log.error("could not reload %s@%s: %s", self.config.model, which, err)
                continue
            old = self.primary
            self.primary = fresh
            self.events.append(
                [
                    {
                        "id": self.new_id(),
                        "time": time.time(),
                        "event": "reloaded",
                        "model": fresh.name,
                        "alias": which,
                        "from_version": old.version,
                        "version": fresh.version,
                    }
                ]
            )
            log.info(
                "%s@%s moved: now serving v%d (was v%d)",
                fresh.name,
                which,
                fresh.version,
                old.version,
            )

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
        live accuracy (here and in ``pipeflow monitor``) counts each prediction once, by its
        latest label."""
        self.check_outcomes(items)
        now = time.time()
        records = []
        for item in items:
            pid, outcome = item["id"], item["outcome"]
            seen = self.recent.get(pid)
            if seen is not None:
                name, version, predicted = seen
                correct = str(predicted) == str(outcome)
                before = self._labels.pop(pid, None)
                self._labels[pid] = correct
                while len(self._labels) > 2 * self.recent.keep:  # as long as predictions are kept
                    self._labels.pop(next(iter(self._labels)))
                for h in (self.primary, self.rollout.canary):
                    if h is not None and h.name == name and h.version == version:
                        if before is not None:  # the earlier label no longer counts
                            h.feedback[0] -= before
                            h.feedback[1] -= 1
                        h.feedback[0] += correct
                        h.feedback[1] += 1
            records.append(
                {
                    "id": pid,
                    "time": now,
                    "outcome": outcome,
                    "caller": caller,
                    "model": self.primary.name,
                }
            )
        self.feedback_log.append(records)
        if self.rollout.live:
            self.rollout.check()
        return len(records)
