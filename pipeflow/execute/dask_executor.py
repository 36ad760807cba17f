"""The Dask executor: one graph, four schedulers.

The plan becomes a Dask graph ``{stage: (run_stage, task, *upstream_stages)}``. The same graph is
handed to Dask's synchronous, threaded or process scheduler (``get(dsk, keys)``), or, for
``distributed``, submitted task by task to a ``distributed.Client`` so each stage carries its own
worker ``resources`` (a stage with ``resources: {GPU: 1}`` lands only on a worker started with
``--resources GPU=1``). Laptop and cluster share the graph and the worker function.

Progress: local schedulers report through Dask callbacks (``_pretask`` / ``_posttask``, called on
the scheduling thread); distributed through ``as_completed``. Either way ``on_event`` is called
from the calling thread only, so the recorder needs no locks.

Before submitting to a cluster, resources are checked against what its workers offer: a stage
that asks for ``GPU: 1`` on a cluster without GPU workers fails at once with a message naming the
stage and what the workers have, instead of waiting forever.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pipeflow.core.states import StageState
from pipeflow.errors import UsageError
from pipeflow.execute.task import StageResult, StageTask, run_stage

EventHandler = Callable[[str, StageState, "StageResult | None"], None]
KINDS = ("sync", "threads", "processes", "distributed")


class Executor(Protocol):
    """Runs stage tasks (already in topological order) and reports each result as it lands."""

    name: str

    def execute(
        self, tasks: Sequence[StageTask], on_event: EventHandler
    ) -> dict[str, StageResult]: ...


class DaskExecutor:
    def __init__(
        self,
        kind: str = "threads",
        *,
        address: str | None = None,
        workers: int | None = None,
        threads_per_worker: int | None = None,
        client: Any = None,
    ):
        if kind not in KINDS:
            raise UsageError(f"unknown executor {kind!r}; expected one of: {', '.join(KINDS)}")
        if address and kind != "distributed":
            raise UsageError(
                f"--address only applies to the distributed executor (got executor {kind!r})"
            )
        self.kind = kind
        self.address = address or (
            os.environ.get("PIPEFLOW_DASK_ADDRESS") if kind == "distributed" else None
        )
        self.workers = workers
        self.threads_per_worker = threads_per_worker
        self._client = client

    @property
    def name(self) -> str:
        if self.kind == "distributed":
            return f"distributed({self.address or 'LocalCluster'})"
        return self.kind

    def execute(self, tasks: Sequence[StageTask], on_event: EventHandler) -> dict[str, StageResult]:
        if not tasks:
            return {}
        if self.kind == "distributed":
            return self._distributed(tasks, on_event)
        return self._local(tasks, on_event)

    # -- sync / threads / processes ---------------------------------------------------------
    def _local(self, tasks: Sequence[StageTask], on_event: EventHandler) -> dict[str, StageResult]:
        from dask.callbacks import Callback

        dsk = {t.name: (run_stage, t, *t.upstream) for t in tasks}
        keys = list(dsk)

        class _Events(Callback):
            def _pretask(self, key: Any, dsk: Any, state: Any) -> None:
                on_event(key, StageState.RUNNING, None)

            def _posttask(
                self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any
            ) -> None:
                on_event(key, result.state, result)

        callbacks = [_Events()._callback]
        if self.kind == "sync":
            from dask.local import get_sync

            values = get_sync(dsk, keys, callbacks=callbacks)
        elif self.kind == "threads":
            from dask.threaded import get

            values = get(dsk, keys, num_workers=self.workers, callbacks=callbacks)
        else:
            from dask.multiprocessing import get

            values = get(dsk, keys, num_workers=self.workers, callbacks=callbacks)
        return dict(zip(keys, values, strict=True))

    # -- distributed -------------------------------------------------------------------------
    def _distributed(
        self, tasks: Sequence[StageTask], on_event: EventHandler
    ) -> dict[str, StageResult]:
        if self._client is not None:
            return self._submit(self._client, tasks, on_event)
        from distributed import Client, LocalCluster

        if self.address:
            try:
                client = Client(self.address, timeout="10s")
            except (OSError, TimeoutError) as err:
                raise UsageError(
                    f"cannot connect to Dask scheduler at {self.address}: {err}"
                ) from None
            with client:
                return self._submit(client, tasks, on_event)
        with (
            LocalCluster(
                n_workers=self.workers or 2,
                threads_per_worker=self.threads_per_worker or 1,
                processes=True,
                dashboard_address=":0",  # None still binds 8787; a random port never collides
            ) as cluster,
            Client(cluster) as client,
        ):
            return self._submit(client, tasks, on_event)

    def _submit(
        self, client: Any, tasks: Sequence[StageTask], on_event: EventHandler
    ) -> dict[str, StageResult]:
        from distributed import as_completed

        offered = [
            w.get("resources", {}) for w in client.scheduler_info(n_workers=-1)["workers"].values()
        ]
        results: dict[str, StageResult] = {}
        futures: dict[Any, str] = {}
        by_name: dict[str, Any] = {}
        run_id = tasks[0].run_id
        for t in tasks:
            if t.resources and not any(
                all(res.get(k, 0) >= v for k, v in t.resources.items()) for res in offered
            ):
                have = "; ".join(f"{r}" for r in offered if r) or "no resources"
                res = StageResult(
                    t.name,
                    StageState.FAILED,
                    error=f"needs worker resources {dict(t.resources)} but no worker of the cluster offers them (workers offer: {have})",
                )
                results[t.name] = res
                on_event(t.name, res.state, res)
                continue
            if any(u in results for u in t.upstream):
                res = StageResult(
                    t.name,
                    StageState.SKIPPED,
                    reason=f"upstream stage '{next(u for u in t.upstream if u in results)}' failed",
                )
                results[t.name] = res
                on_event(t.name, res.state, res)
                continue
            fut = client.submit(
                run_stage,
                t,
                *[by_name[u] for u in t.upstream],
                key=f"pipeflow-{run_id}-{t.name}",
                resources=dict(t.resources) or None,
                pure=False,
            )
            futures[fut] = t.name
            by_name[t.name] = fut
        waiting = {t.name: set(t.upstream) for t in tasks if t.name in by_name}
        dependants: dict[str, list[str]] = {}
        for name, deps in waiting.items():
            for dep in deps:
                dependants.setdefault(dep, []).append(name)
            if not deps:
                on_event(name, StageState.RUNNING, None)
        errored: dict[str, BaseException] = {}
        # with_results: results arrive in batches, not one round trip per stage
        for fut, res in as_completed(list(futures), with_results=True, raise_errors=False):
            name = futures[fut]
            if fut.status != "finished" or not isinstance(res, StageResult):
                # the worker died (KilledWorker) or the task could not run
                errored[name] = _task_error(fut, res)
                continue
            results[name] = res
            on_event(name, res.state, res)
            for other in dependants.get(name, ()):
                deps = waiting[other]
                deps.discard(name)
                if not deps and other not in results:
                    on_event(other, StageState.RUNNING, None)
        for t in tasks:  # topological order: a root cause is decided before its dependants
            if t.name not in errored:
                continue
            failed_up = [u for u in t.upstream if u in results and not results[u].state.ok]
            if failed_up:
                res = StageResult(
                    t.name, StageState.SKIPPED, reason=f"upstream stage '{failed_up[0]}' failed"
                )
            else:
                res = StageResult(
                    t.name, StageState.FAILED, error=_describe(errored[t.name]), worker=None
                )
            results[t.name] = res
            on_event(t.name, res.state, res)
        return results


def _task_error(fut: Any, res: Any) -> BaseException:
    """The exception of a task that did not finish. ``as_completed(raise_errors=False)`` gives
    an errored future's result as ``(type, exception, traceback)``, a cancelled one's as the
    exception itself."""
    if isinstance(res, BaseException):
        return res
    if isinstance(res, tuple) and len(res) == 3 and isinstance(res[1], BaseException):
        return res[1]
    return RuntimeError(f"task ended as {fut.status}")


def _describe(err: BaseException) -> str:
    """One line for a task Dask gave up on. ``run_stage`` never raises for a stage's own error,
    so what arrives here is the scheduler's: usually KilledWorker, raised when the workers
    running the task died ``allowed-failures + 1`` times (the stage may be killing its process:
    out of memory, a segfault, a signal)."""
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
