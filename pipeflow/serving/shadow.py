"""The shadow: a challenger scored on live traffic without answering with it.

``--shadow NAME@VERSION`` loads another version (of the served model, or of another model that
takes the same rows) and scores every answered request's rows with it, **off the answer path**:
once the answering version's batch is audited, the request is offered to the shadow's queue
(:meth:`Shadow.offer`, ``put_nowait``: constant time, never waits) and answered at once. One
thread of its own (:meth:`Shadow._run`) takes what has queued up, scores it as one batch and
appends the results to the ``shadow`` journal (``<audit>/shadow/``, shipped like the others on an
object store). So the shadow adds neither its latency nor its failures to any answer: a shadow
that fails is counted (``pipeflow_shadow_errors``) and recorded, and a shadow that cannot keep up
loses requests, not time: beyond ``shadow_queue`` waiting requests a request is dropped and
counted (``pipeflow_shadow_dropped``). What it costs the answers is CPU: its thread shares the
process (and Python's GIL) with the server.

A shadow record carries the **same prediction id** as the answer's record (row for row), its
``model``, ``version``, ``"role": "shadow"``, ``answered_by`` (the version that answered),
``output`` and ``probabilities``, and ``latency_ms``: from being queued to scored (its queueing
behind other shadow work and its scoring; not the client's request latency, which the
answering version's record holds). A failed row is recorded with ``error`` instead of
``output``. Feedback posted for the id is the true outcome of both predictions, so
``pipeflow models compare A B --live`` (:mod:`pipeflow.monitoring.compare`) scores the shadow
on the same rows and labels as the version that answered. The shadow's records are in their own
journal kind so that nothing reading ``predictions`` (live accuracy, the guard, ``monitor``,
``lineage``, the dashboard) mistakes them for answers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeflow.serving.batcher import Pending
    from pipeflow.serving.handle import Handle
    from pipeflow.serving.state import Server
    from pipeflow.store.journal import AuditLog

log = logging.getLogger("pipeflow.serve")


class Shadow:
    """Scores answered requests with another version on its own thread (module docstring)."""

    def __init__(self, server: Server, handle: Handle, journal: AuditLog, limit: int):
        self.server, self.handle, self.journal = server, handle, journal
        self.queue: queue.Queue[tuple[Pending, list[str], int, float] | None] = queue.Queue(limit)
        labels = (handle.name, str(handle.version))
        metrics = server.metrics
        self.scored = metrics.shadow_rows.labels(*labels)
        self.failed = metrics.shadow_errors.labels(*labels)
        self.dropped = metrics.shadow_dropped.labels(*labels)
        self.thread: threading.Thread | None = None
        self._errors_logged = 0

    def start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(
                target=self._run, name=f"pipeflow-shadow-{self.handle.label}", daemon=True
            )
            self.thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Score what is queued (for at most ``timeout`` seconds), then stop the thread."""
        if self.thread is None:
            return
        with contextlib.suppress(queue.Full):
            self.queue.put(None, timeout=timeout)
        self.thread.join(timeout)
        self.thread = None

    def offer(self, item: Pending, ids: list[str], answered_by: int) -> bool:
        """Queue an answered request for the shadow; False (counted) when the queue is full."""
        try:
            self.queue.put_nowait((item, ids, answered_by, time.perf_counter()))
        except queue.Full:
            self.dropped.inc()
            return False
        return True

    def _run(self) -> None:
        limit = self.server.config.max_rows
        while True:
            first = self.queue.get()
            if first is None:
                return
            batch, rows, stop = [first], len(first[1]), False
            while rows < limit:
                try:
                    more = self.queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
                rows += len(more[1])
            try:
                self._score(batch)
            except Exception as err:  # the journal could not be written: log, go on
                log.error("shadow %s: could not record its predictions: %s", self.handle.label, err)
            if stop:
                return

    def _score(self, batch: list[tuple[Pending, list[str], int, float]]) -> None:
        handle = self.handle
        names = handle.signature.names
        items = [i if i.columns == names else _as(i, names) for i, _, _, _ in batch]
        groups: list[list[tuple[Pending, list[str], int, float]]] = [batch]
        results: list[Any] = []
        try:
            results.append(handle.score(handle.frame(items)))
        except Exception as err:
            if len(batch) == 1:
                results.append(err)
            else:  # one request the shadow cannot score must not lose the others
                groups, results = [], []
                for entry, item in zip(batch, items, strict=True):
                    groups.append([entry])
                    try:
                        results.append(handle.score(handle.frame([item])))
                    except Exception as alone:
                        results.append(alone)
        now, done = time.time(), time.perf_counter()
        base = {"model": handle.name, "version": handle.version, "role": "shadow"}
        records: list[dict[str, Any]] = []
        labels = [str(c) for c in handle.classes]
        for group, result in zip(groups, results, strict=True):
            if isinstance(result, Exception):
                error = self._failure(result)
                for _, ids, answered_by, _queued in group:
                    records += [
                        {"id": pid, "time": now, **base, "answered_by": answered_by, "error": error}
                        for pid in ids
                    ]
                    self.failed.inc(len(ids))
                continue
            predicted, proba = result
            at = 0
            for _, ids, answered_by, queued in group:
                latency = round((done - queued) * 1000, 3)
                for pid in ids:
                    probs = dict(zip(labels, proba[at], strict=True)) if proba is not None else None
                    records.append(
                        {"id": pid, "time": now, **base, "answered_by": answered_by,
                         "output": predicted[at], "probabilities": probs, "latency_ms": latency}
                    )  # fmt: skip
                    at += 1
                self.scored.inc(len(ids))
        self.journal.append(records)

    def _failure(self, err: Exception) -> str:
        """Why the shadow failed on a request, in words (logged for the first few)."""
        why = f"{type(err).__name__}: {err}"[:500]
        self._errors_logged += 1
        if self._errors_logged <= 5:
            log.error("shadow %s failed on a request (the answer is not affected): %s",
                      self.handle.label, why)  # fmt: skip
        return why


def _as(item: Pending, names: list[str]) -> Pending:
    """The request's rows as the shadow's own columns (its signature may order or name them
    differently): a frame built from the rows, not from the answering version's columns."""
    return dataclasses.replace(item, columns=names, data=None)
