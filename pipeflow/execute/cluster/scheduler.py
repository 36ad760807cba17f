"""A scheduler at work (:class:`Scheduler`, from :func:`pipeflow.execute.cluster.connect`):
running a graph with progress, values shared with every task, results in order as they land, and
a cluster's results as they complete, failed tasks included (:func:`completed`).

**Progress.** A local scheduler reports through Dask callbacks (``pretask`` / ``posttask``), which
Dask calls on the scheduling thread, that is the calling thread; a cluster's results arrive through
``as_completed`` (:func:`completed`), in batches, not one round trip per task. Either way the
caller's handlers run in one thread and need no locks.

**Results in order, as they land** (:meth:`Scheduler.in_order`, batch scoring): every part is
computed in parallel and yielded in input order as soon as it and those before it are done, so the
consumer (a file writer) overlaps with the computation. A local scheduler computes in a background
thread whose per-task callback hands each finished part over, and keeps each part in this process
until consumed; a cluster keeps each on its worker until consumed, then releases it. A consumer
that stops (closes the generator) stops the computation: on a local scheduler the next task to
start raises, on a cluster the remaining futures are cancelled. On a cluster the tasks may ask for
worker ``resources`` (``{"GPU": 1}``: only workers offering them compute); local ones ignore them.

**A task that did not finish** (:func:`task_error`, :func:`describe_failure`): ``as_completed``
gives its error in one of two shapes (an errored task's ``(type, exception, traceback)``, a
cancelled one's exception), made one exception here; a task whose workers kept dying ends as
``KilledWorker``, described in one line that says what usually causes that (the task killing its
process).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any


class Scheduler:
    """A local Dask scheduler (``client`` is None) or a distributed client, from
    :func:`~pipeflow.execute.cluster.connect`."""

    def __init__(self, kind: str, *, client: Any = None, workers: int | None = None):
        self.kind: str = kind
        self.client: Any = client
        self.workers: int | None = workers
        self._shared: list[Any] = []

    def run_graph(
        self,
        dsk: Mapping[Any, Any],
        keys: Sequence[Any],
        *,
        on_start: Callable[[Any], None] | None = None,
        on_finish: Callable[[Any, Any], None] | None = None,
    ) -> list[Any]:
        """Compute ``keys`` of the raw Dask graph ``dsk`` on this local scheduler; the values in
        the order of ``keys``. ``on_start(key)`` and ``on_finish(key, value)`` are called for every
        task, on the calling thread."""
        from dask.callbacks import Callback

        callback = Callback(
            pretask=(lambda key, dsk, state: on_start(key)) if on_start else None,
            posttask=(lambda key, result, dsk, state, worker_id: on_finish(key, result))
            if on_finish
            else None,
        )
        callbacks = [callback._callback]
        if self.kind == "sync":
            from dask.local import get_sync

            return list(get_sync(dsk, keys, callbacks=callbacks))
        if self.kind == "threads":
            from dask.threaded import get
        elif self.kind == "processes":
            from dask.multiprocessing import get
        else:
            raise ValueError(f"run_graph needs a local scheduler, not {self.kind!r}")
        return list(get(dsk, keys, num_workers=self.workers, callbacks=callbacks))

    def share(self, value: Any) -> Any:
        """What tasks should receive for ``value``: the value itself on a local scheduler, on a
        cluster a future of it scattered once to every worker (released when the block ends)."""
        if self.client is None:
            return value
        future = self.client.scatter(value, broadcast=True, hash=False)
        self._shared.append(future)
        return future

    def release(self) -> None:
        """Drop what :meth:`share` put on the cluster."""
        while self._shared:
            self._shared.pop().release()

    def in_order(
        self, parts: Sequence[Any], *, thread: str = "pipeflow-dask", resources: Any = None
    ) -> Iterator[Any]:
        """The values of the Dask collections ``parts`` (delayed objects), in order, each as soon
        as it and those before it are done; all are computed in parallel (module docstring).
        A local scheduler computes in a background thread named ``thread``."""
        if self.client is None:
            yield from _local_in_order(parts, self.kind, self.workers, thread)
            return
        futures = self.client.compute(list(parts), resources=resources)
        try:
            for future in futures:
                yield future.result()
                future.release()  # consumed: the worker may drop it
        except BaseException:
            self.client.cancel(futures)
            raise


def _local_in_order(
    parts: Sequence[Any], kind: str, workers: int | None, thread: str
) -> Iterator[Any]:
    """A local Dask scheduler runs in a background thread; its per-task callback hands each
    finished part over. If the consumer stops, the next task to start raises, which ends the
    computation."""
    import dask
    from dask.callbacks import Callback

    index = {part.key: i for i, part in enumerate(parts)}
    done: dict[int, Any] = {}
    state: dict[str, Any] = {"finished": False, "error": None, "stop": False}
    ready = threading.Condition()

    def pretask(key: Any, dsk: Any, st: Any) -> None:
        if state["stop"]:
            raise _Stopped

    def posttask(key: Any, result: Any, dsk: Any, st: Any, worker_id: Any) -> None:
        if key in index:
            with ready:
                done[index[key]] = result
                ready.notify()

    def compute() -> None:
        from threadpoolctl import threadpool_limits

        callback = Callback(pretask=pretask, posttask=posttask)
        # Dask's threads already use every core: BLAS and OpenMP pools of their own in each
        # task would oversubscribe them (OpenBLAS threads spin while they wait), as Dask's own
        # workers avoid by setting OMP_NUM_THREADS=1 and the like
        limit = threadpool_limits(1) if kind == "threads" else contextlib.nullcontext()
        pool = {} if workers is None or kind == "sync" else {"num_workers": workers}
        try:
            with limit:
                dask.compute(*parts, scheduler=kind, callbacks=[callback._callback], **pool)
        except BaseException as err:
            state["error"] = err
        finally:
            with ready:
                state["finished"] = True
                ready.notify()

    worker = threading.Thread(target=compute, name=thread, daemon=True)
    worker.start()
    try:
        for i in range(len(parts)):
            with ready:
                while i not in done and not state["finished"]:
                    ready.wait()
                if i not in done:
                    raise state["error"] or RuntimeError("the Dask computation ended early")
                value = done.pop(i)
            yield value
    finally:
        state["stop"] = True
        worker.join()


class _Stopped(Exception):
    """Raised in a task about to start after the consumer of the results has given up."""


def completed(futures: Sequence[Any]) -> Iterator[tuple[Any, Any, BaseException | None]]:
    """``(future, value, None)`` for each future that finished, ``(future, None, error)`` for one
    that did not (the worker died, the task was cancelled), as they land; results come in
    batches, not one round trip per future."""
    from distributed import as_completed

    for future, value in as_completed(list(futures), with_results=True, raise_errors=False):
        if future.status == "finished":
            yield future, value, None
        else:
            yield future, None, task_error(future, value)


def task_error(future: Any, value: Any) -> BaseException:
    """The exception of a task that did not finish. ``as_completed(raise_errors=False)`` gives
    an errored future's result as ``(type, exception, traceback)``, a cancelled one's as the
    exception itself."""
    if isinstance(value, BaseException):
        return value
    if isinstance(value, tuple) and len(value) == 3 and isinstance(value[1], BaseException):
        return value[1]
    return RuntimeError(f"task ended as {future.status}")


def describe_failure(err: BaseException) -> str:
    """One line for a task Dask gave up on: usually KilledWorker, raised when the workers running
    it died ``allowed-failures + 1`` times (the task may be killing its process: out of memory, a
    segfault, a signal)."""
    if type(err).__name__ == "KilledWorker":
        tries = getattr(err, "allowed_failures", None)
        last = getattr(getattr(err, "last_worker", None), "address", None)
        times = f"{tries + 1} times" if isinstance(tries, int) else "repeatedly"
        return (
            f"the Dask worker running it died {times}{f' (last {last})' if last else ''}, so Dask "
            "gave up (distributed.scheduler.allowed-failures): the stage may be crashing its "
            "process (out of memory, a segfault, a signal); see the worker logs"
        )
    return f"{type(err).__name__}: {err}"
