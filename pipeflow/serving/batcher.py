"""The micro-batcher: concurrent requests for one model version scored in one model call.

Valid rows join a **micro-batch**: concurrent requests queue up while the model is busy and are
scored together in one ``predict`` call on a dedicated thread. A lone request is scored at once;
under load, the batch is whatever arrived meanwhile, plus what is still arriving for at most
``batch_wait_ms`` (:meth:`Batcher.collect` says why). One DataFrame and one ``predict`` per batch
instead of per request is where the throughput comes from.

Before any answer leaves, the batch's audit records (one per request: its rows' ids, time, model
and version, inputs as columns, outputs, flags, latency, caller) are appended in one ``write()``
(:mod:`pipeflow.store.journal`),
so every acknowledged prediction is in the audit trail, even if the process is killed; when the
log cannot be written the whole batch fails with
:class:`~pipeflow.errors.AuditUnavailable` (503) and nothing is answered. Once written, the
batch's predictions are remembered (for feedback) and its requests counted in the fleet's
per-second cells (:meth:`pipeflow.serving.fleet.Fleet.answered`) here, so this replica's own
records are never parsed back.

A request that asks for explanations (``?explain=true``) never joins a micro-batch: explaining
costs from a second model call (xgboost, linear models) to thousands of evaluations per row (the
kernel method, :mod:`pipeflow.governance.explain`), which would hold up every request batched
with it. :meth:`Batcher.explain` scores it alone on a thread of its own, through the same
:meth:`Batcher._score`, so its answer and its audit record are the other requests' plus the
explanations (the record's ``explanation``, as columns); requests without it are untouched.
"""

from __future__ import annotations

import asyncio
import functools
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeflow.errors import AuditUnavailable
from pipeflow.registry.signature import Columns

if TYPE_CHECKING:
    from pipeflow.serving.handle import Handle
    from pipeflow.serving.state import Server


@dataclass
class Pending:
    """One request's checked rows in a batcher's queue, and the future its answer is set on."""

    rows: list[dict[str, Any]]
    columns: list[str]  # feature names, in the order of the signature the rows were checked against
    data: Columns | None  # the rows' columns, when the signature's fast path took them
    flags: list[list[str]]
    caller: str
    route: str
    started: float
    future: asyncio.Future[Any]
    explain: bool = False  # answer and audit each row's explanation (scored off the batch)


# how long a batcher remembers the most requests it saw at once: a few large requests' time, so
# that a change of traffic (a burst of clients gone) stops the waiting for them within it
PEAK_S = 0.2


class Batcher:
    """Scores queued requests together on one thread; audits each batch before answering."""

    def __init__(self, handle: Handle, server: Server):
        self.handle, self.server = handle, server
        self.queue: asyncio.Queue[Pending] = asyncio.Queue()
        self.pool = ThreadPoolExecutor(1, thread_name_prefix=f"pipeflow-{handle.label}")
        self.task: asyncio.Task[None] | None = None
        self.scoring = 0  # requests in the batch being scored
        # the most requests seen in the system at once (queued, arriving or being scored) in
        # the last PEAK_S seconds: how many clients are taking turns
        self.peak, self.peak_at = 0, 0.0
        self.explaining: ThreadPoolExecutor | None = None  # requests with explanations

    async def submit(self, item: Pending) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        if self.task is None or self.task.done():
            self.task = loop.create_task(self._run())
        await self.queue.put(item)
        self.count_clients(loop.time())
        return await item.future

    async def explain(self, item: Pending) -> list[dict[str, Any]]:
        """Score a request that asks for explanations alone, on a thread of its own (see the
        module docstring); :class:`~pipeflow.errors.ExplainUnavailable` when the model cannot
        be explained, before anything is scored."""
        loop = asyncio.get_running_loop()
        if self.explaining is None:
            self.explaining = ThreadPoolExecutor(
                1, thread_name_prefix=f"pipeflow-{self.handle.label}-explain"
            )
        await loop.run_in_executor(self.explaining, self.handle.explainer)
        (result,) = await loop.run_in_executor(self.explaining, self._score, [item])
        return result

    def count_clients(self, now: float) -> None:
        """Note how many requests are in the system (queued, arriving, being scored)."""
        seen = self.queue.qsize() + self.scoring + self.server.arriving
        if seen >= self.peak or now - self.peak_at > PEAK_S:
            self.peak, self.peak_at = seen, now

    async def collect(self) -> list[Pending]:
        """The next batch: the first queued request, everything queued behind it, and requests
        still *arriving* (body being read or parsed), for at most ``batch_wait_ms``. Without
        waiting for those, concurrent large requests settle into batches of one, each paying the
        model's fixed cost per call (a scikit-learn ColumnTransformer: ~2.5 ms) alone. While
        the batch holds fewer requests than were in the system at once a moment ago, it
        also waits (as long) for the clients just answered to send their next request: else
        four clients taking turns settle into two alternating pairs, each batch paying the fixed
        costs for half the rows. A lone client's request is scored at once."""
        loop = asyncio.get_running_loop()
        items = [await self.queue.get()]
        rows, limit = len(items[0].rows), self.server.config.max_rows
        deadline = loop.time() + self.server.config.batch_wait_ms / 1000
        expect = self.peak if loop.time() - self.peak_at <= PEAK_S else 0
        while rows < limit:
            if not self.queue.empty():
                items.append(self.queue.get_nowait())
            elif (self.server.arriving > 0 or len(items) < expect) and (
                left := deadline - loop.time()
            ) > 0:
                try:
                    items.append(await asyncio.wait_for(self.queue.get(), left))
                except TimeoutError:
                    break
            else:
                break
            rows += len(items[-1].rows)
        return items

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.scoring = 0
            items = await self.collect()
            self.scoring = len(items)
            try:
                results = await loop.run_in_executor(self.pool, self._score, items)
            except AuditUnavailable as err:  # nothing can be answered
                for item in items:
                    if not item.future.done():
                        item.future.set_exception(err)
                continue
            except Exception as err:
                if len(items) == 1:
                    if not items[0].future.done():
                        items[0].future.set_exception(err)
                    continue
                # the model failed on the batch: score each request alone, so one request the
                # model cannot handle does not fail the others that happened to share its batch
                for item in items:
                    try:
                        (result,) = await loop.run_in_executor(self.pool, self._score, [item])
                    except Exception as alone:
                        if not item.future.done():
                            item.future.set_exception(alone)
                    else:
                        if not item.future.done():
                            item.future.set_result(result)
                continue
            for item, result in zip(items, results, strict=True):
                if not item.future.done():
                    item.future.set_result(result)

    def _score(self, items: list[Pending]) -> list[list[dict[str, Any]]]:
        handle, server = self.handle, self.server
        predicted, proba = self._predict(items)
        now = time.time()
        ids = server.new_ids(len(predicted))
        labels = [str(c) for c in handle.classes]
        # the batch's probabilities as one list of floats per class: each request's answers and
        # its record's columns are slices of them (no list per row made, then transposed back)
        by_class = _by_class(labels, proba) if proba is not None else None
        name, version, role = handle.name, handle.version, handle.role
        results: list[list[dict[str, Any]]] = []
        records: list[dict[str, Any]] = []
        at = 0
        for item in items:
            n = len(item.rows)
            mine, values = ids[at : at + n], predicted[at : at + n]
            columns = [c[at : at + n] for c in by_class] if by_class is not None and n else None
            at += n
            out = _answers(mine, values, labels, columns)
            flagged = any(item.flags)
            if flagged:
                for result, flags in zip(out, item.flags, strict=False):
                    if flags:
                        result["flags"] = flags
            explained = None
            if item.explain:
                explained = handle.explainer().explain(handle.model, handle.frame([item]))
                for result, explanation in zip(out, explained.rows(), strict=True):
                    result["explanation"] = explanation
            results.append(out)
            # one record per request (pipeflow.store.journal): the request's latency up to it
            record: dict[str, Any] = {
                "id": mine[0] if mine else None,
                "ids": mine,
                "rows": len(mine),
                "time": now,
                "model": name,
                "version": version,
                "role": role,
                "route": item.route,
                "inputs": inputs_of(item),
                "output": values,
                "probabilities": dict(zip(labels, columns, strict=True)) if columns else None,
                "flags": item.flags if flagged else None,
                "latency_ms": round((time.perf_counter() - item.started) * 1000, 3),
                "caller": item.caller,
            }
            if explained is not None:
                record["explanation"] = explained.record()
            records.append(record)
        try:
            server.audit.append(records)
        except OSError as err:
            raise AuditUnavailable(f"{server.audit.folder}: {err.strerror or err}") from None
        server.recent.add(name, version, ids, predicted)
        server.fleet.answered(name, version, now, [(r["rows"], r["latency_ms"]) for r in records])
        return results

    def _predict(self, items: list[Pending]) -> tuple[list[Any], Any]:
        """The items' predictions (Python values) and probabilities (a (rows, classes) array,
        or None): one frame for the batch, or one per request when a reload changed the
        signature between requests."""
        handle = self.handle
        columns = items[0].columns
        if all(i.columns == columns for i in items):
            return handle.predict(handle.frame(items))
        predicted: list[Any] = []
        probas = []
        for i in items:
            p, q = handle.predict(handle.frame([i]))
            predicted += p
            probas.append(q)
        if not handle.proba or any(q is None for q in probas):
            return predicted, None
        import numpy as np

        return predicted, np.concatenate(probas)


def _by_class(labels: list[str], proba: Any) -> list[list[float]]:
    """The probabilities of a (rows, classes) array as one list of Python floats per class (a
    ``ValueError`` when the model answers another number of classes than it has labels)."""
    if proba.ndim != 2 or proba.shape[1] != len(labels):
        raise ValueError(
            f"the model answered probabilities of shape {proba.shape} for {len(labels)} classes"
        )
    return proba.T.tolist()  # type: ignore[no-any-return]


def _answers(
    ids: list[str], values: list[Any], labels: list[str], columns: list[list[float]] | None
) -> list[dict[str, Any]]:
    """A request's answers, a row each: its id, prediction and (with ``columns``, one list per
    class) probabilities as ``{class: p}``, made in one pass: a dict display per row for two
    classes, the common case (a third of the time of ``dict(zip(...))``), else ``dict`` over
    ``zip`` in C."""
    if columns is None:
        return [{"id": pid, "prediction": value} for pid, value in zip(ids, values, strict=False)]
    if len(labels) == 2:
        first, second = labels
        return [
            {"id": pid, "prediction": value, "probabilities": {first: a, second: b}}
            for pid, value, a, b in zip(ids, values, *columns, strict=False)
        ]
    by_row = map(dict, map(functools.partial(zip, labels, strict=True), zip(*columns, strict=True)))
    return [
        {"id": pid, "prediction": value, "probabilities": p}
        for pid, value, p in zip(ids, values, by_row, strict=False)
    ]


def inputs_of(item: Pending) -> dict[str, Any]:
    """A request's inputs as columns for its audit record, in signature order: the numbers as
    the float64 the model saw (numpy arrays, written by orjson; a missing one is null), the others
    as they came."""
    data = item.data
    if data is None:  # the rows were checked row by row: take the columns out of them
        return {c: [r.get(c) for r in item.rows] for c in item.columns}
    columns: dict[str, Any] = dict.fromkeys(data.names)
    if data.matrix is not None:
        import numpy as np

        columns.update(zip(data.numeric, np.ascontiguousarray(data.matrix.T), strict=True))
    columns.update(data.others)
    return columns
