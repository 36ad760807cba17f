"""The Dask executor: one graph, four schedulers.

The plan becomes a Dask graph ``{stage: (run_stage, task, *upstream_stages)}``. The same graph is
handed to Dask's synchronous, threaded or process scheduler, or, for ``distributed``, submitted
task by task to a ``distributed.Client`` so each stage carries its own worker ``resources`` (a
stage with ``resources: {GPU: 1}`` lands only on a worker started with ``--resources GPU=1``).
Laptop and cluster share the graph and the worker function. Dask itself is reached through
:mod:`pipeflow.execute.cluster`, which owns the schedulers, the LocalCluster defaults, connecting
by address and how progress arrives (``on_event`` is called from the calling thread only, so the
recorder needs no locks). A stage's result is reported after its upstream stages' results on
every scheduler: a cluster's results land in batches in no set order, so one that lands early is
held until the stages it depends on are reported.

Before submitting to a cluster, resources are checked against what its workers offer: a stage
that asks for ``GPU: 1`` on a cluster without GPU workers fails at once with a message naming the
stage and what the workers have, instead of waiting forever. Workers of a cluster at an address
or from a factory may share nothing with the client but the store: such an executor
``ships_code``, and the runner puts the spec's code in the store for them
(:mod:`pipeflow.execute.bundle`). A task Dask gives up on (its worker
died too often) fails its stage with one line saying so; its dependants are skipped.

Given ``on_progress``, the tasks carry a sender of live updates (``ctx.progress``, the latest
log line) for the kind of scheduler (:mod:`pipeflow.execute.channel`); without it they carry
none and nothing is opened.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

from pipeflow.core import progress
from pipeflow.core.states import StageState
from pipeflow.errors import UsageError
from pipeflow.execute import cluster
from pipeflow.execute.channel import Deliver, open_channel
from pipeflow.execute.cluster import ADDRESS_ENV, KINDS, ClusterFactory, Target
from pipeflow.execute.factory import cluster_factory
from pipeflow.execute.protocol import EventHandler, Executor
from pipeflow.execute.task import StageResult, StageTask, run_stage


class DaskExecutor:
    """The built-in :class:`~pipeflow.execute.protocol.Executor`: ``kind`` is one of
    :data:`~pipeflow.execute.cluster.KINDS`; ``workers`` sizes a local pool or a LocalCluster,
    ``threads_per_worker`` a LocalCluster; ``address`` (else ``$PIPEFLOW_DASK_ADDRESS``) or
    ``client`` names an existing cluster for ``distributed``, ``cluster`` a factory
    (``module:attribute``, or a :class:`~pipeflow.execute.cluster.ClusterFactory` from
    :func:`~pipeflow.execute.factory.cluster_factory`) that starts one for each run, called with
    ``options``; ``adapt`` is ``(minimum, maximum)`` for the cluster the run starts."""

    #: ``execute`` takes ``on_progress`` (see :mod:`pipeflow.execute.protocol`)
    reports_progress = True
    #: the scheduler each run connects to (:func:`pipeflow.execute.cluster.connect`)
    target: Target

    def __init__(
        self,
        kind: str = "threads",
        *,
        address: str | None = None,
        workers: int | None = None,
        threads_per_worker: int | None = None,
        client: Any = None,
        cluster: str | ClusterFactory | None = None,
        options: Mapping[str, Any] | None = None,
        adapt: tuple[int, int] | None = None,
    ):
        if kind not in KINDS:
            raise UsageError(f"unknown executor {kind!r}; expected one of: {', '.join(KINDS)}")
        for flag, value in (("--address", address), ("--cluster", cluster), ("adapt", adapt)):
            if value and kind != "distributed":
                raise UsageError(
                    f"{flag} only applies to the distributed executor (got executor {kind!r})"
                )
        if address and cluster:
            raise UsageError(
                "--address and --cluster are exclusive: a running scheduler, or a new cluster"
            )
        if adapt and address:
            raise UsageError(
                "adapt scales a cluster pipeflow starts, not the scheduler at --address"
            )
        if isinstance(cluster, str):
            cluster = cluster_factory(cluster, options, adapt=adapt, where="--cluster")
        adapt = cluster.adapt if cluster is not None else adapt
        address = address or (
            os.environ.get(ADDRESS_ENV) if kind == "distributed" and not cluster else None
        )
        if adapt and address:
            raise UsageError(
                f"adapt scales a cluster pipeflow starts, not the scheduler at {address} "
                f"(from ${ADDRESS_ENV})"
            )
        self.target = Target(
            kind,
            address,
            client=client,
            workers=workers,
            threads_per_worker=threads_per_worker,
            factory=cluster,
            adapt=adapt,
        )

    @property
    def name(self) -> str:
        t = self.target
        if t.kind != "distributed":
            return t.kind
        if t.factory is not None:
            return f"distributed({t.factory})"
        bounds = f", adapt {t.adapt[0]}-{t.adapt[1]}" if t.adapt else ""
        return f"distributed({t.address or 'LocalCluster'}{bounds})"

    @property
    def ships_code(self) -> bool:
        """Whether the workers may not share this machine's files, so the spec's code goes to
        them through the store (:mod:`pipeflow.execute.bundle`): a cluster at an address, from a
        factory or a given client. The local schedulers and the LocalCluster pipeflow starts run
        here and import the spec's folder directly."""
        t = self.target
        return t.kind == "distributed" and bool(t.address or t.factory or t.client)

    def execute(
        self,
        tasks: Sequence[StageTask],
        on_event: EventHandler,
        on_progress: Deliver | None = None,
    ) -> dict[str, StageResult]:
        if not tasks:
            return {}
        with contextlib.ExitStack() as stack:
            scheduler = stack.enter_context(cluster.connect(self.target))
            if on_progress is not None:
                sender = stack.enter_context(
                    open_channel(self.target.kind, on_progress, scheduler.client)
                )
                tasks = [dataclasses.replace(t, progress=sender) for t in tasks]
            if scheduler.client is not None:
                return self._submit(scheduler.client, tasks, on_event)
            return self._local(scheduler, tasks, on_event)

    # -- sync / threads / processes ---------------------------------------------------------
    def _local(
        self, scheduler: cluster.Scheduler, tasks: Sequence[StageTask], on_event: EventHandler
    ) -> dict[str, StageResult]:
        dsk = {t.name: (run_stage, t, *t.upstream) for t in tasks}
        keys = list(dsk)

        def started(key: Any) -> None:
            on_event(key, StageState.RUNNING, None)

        def finished(key: Any, result: Any) -> None:
            on_event(key, result.state, result)

        # stages running in this process log through one handler installed for the whole graph
        in_process = self.target.kind in ("sync", "threads")
        with progress.held() if in_process else contextlib.nullcontext():
            values = scheduler.run_graph(dsk, keys, on_start=started, on_finish=finished)
        return dict(zip(keys, values, strict=True))

    # -- distributed -------------------------------------------------------------------------
    def _submit(
        self, client: Any, tasks: Sequence[StageTask], on_event: EventHandler
    ) -> dict[str, StageResult]:
        offered = list(cluster.worker_resources(client).values())
        results: dict[str, StageResult] = {}
        futures: dict[Any, str] = {}
        by_name: dict[str, Any] = {}
        run_id = tasks[0].run_id

        def settle(res: StageResult) -> None:
            """A stage decided here, not on a worker: recorded and reported at once."""
            results[res.name] = res
            on_event(res.name, res.state, res)

        for t in tasks:
            if t.resources and not any(
                all(res.get(k, 0) >= v for k, v in t.resources.items()) for res in offered
            ):
                have = "; ".join(f"{r}" for r in offered if r) or "no resources"
                needs = f"needs worker resources {dict(t.resources)} but no worker of the cluster offers them (workers offer: {have})"
                settle(StageResult(t.name, StageState.FAILED, error=needs))
                continue
            if any(u in results for u in t.upstream):
                up = next(u for u in t.upstream if u in results)
                settle(
                    StageResult(t.name, StageState.SKIPPED, reason=f"upstream stage '{up}' failed")
                )
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
        # results land in batches, in no set order within one: a stage's result that lands
        # before its upstream stages' is held until theirs are reported, so every handler sees
        # (and ``pipeflow run`` prints) a stage after the stages it depends on
        parked: dict[str, StageResult] = {}

        def report(name: str, res: StageResult) -> None:
            ready = [(name, res)]
            while ready:
                name, res = ready.pop()
                results[name] = res
                on_event(name, res.state, res)
                for other in dependants.get(name, ()):
                    deps = waiting[other]
                    deps.discard(name)
                    if not deps and other not in results:
                        on_event(other, StageState.RUNNING, None)
                        if other in parked:
                            ready.append((other, parked.pop(other)))

        for fut, res, err in cluster.completed(futures):
            name = futures[fut]
            if err is not None or not isinstance(res, StageResult):
                # the worker died (KilledWorker) or the task could not run
                errored[name] = err or cluster.task_error(fut, res)
            elif waiting[name]:
                parked[name] = res
            else:
                report(name, res)
        for t in tasks:  # an upstream stage that did not finish holds nothing back now
            if t.name in parked:
                report(t.name, parked.pop(t.name))
        for t in tasks:  # topological order: a root cause is decided before its dependants
            if t.name not in errored:
                continue
            failed_up = [u for u in t.upstream if u in results and not results[u].state.ok]
            if failed_up:
                why = f"upstream stage '{failed_up[0]}' failed"
                settle(StageResult(t.name, StageState.SKIPPED, reason=why))
            else:
                error = cluster.describe_failure(errored[t.name])
                settle(StageResult(t.name, StageState.FAILED, error=error))
        return results


__all__ = ["KINDS", "DaskExecutor", "EventHandler", "Executor"]
