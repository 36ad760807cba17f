"""Reaching a scheduler: the kinds pipeflow names, the LocalCluster it starts and that cluster's
settings, a cluster from a factory, a scheduler at an address (:func:`connect`).

**Schedulers.** ``sync``, ``threads`` and ``processes`` are Dask's local schedulers (``workers``
sizes the pool; ``None``: one per core); ``distributed`` is a ``distributed.Client``.
:func:`connect` gives a :class:`~pipeflow.execute.cluster.scheduler.Scheduler` for the one a
:class:`Target` names: an existing client (left open), a client of the scheduler at ``address``, a
cluster from a factory (:class:`ClusterFactory`), or a LocalCluster started for the block.

**A cluster from a factory** (:class:`ClusterFactory`, built by :mod:`pipeflow.execute.factory`
from a ``module:attribute`` name): started for the block, adapting between ``adapt``'s bounds when
asked (a cluster without ``adapt()`` is an error: the bounds are what the user agreed to pay for,
and a fixed-size cluster ignoring them could be too small to finish or larger than allowed), waited
on until its first worker joins (at most :data:`WORKERS_TIMEOUT`: pods and batch jobs take a
while), so stages' worker resources are checked against a real worker, and closed when the block
ends however it ends (an error, Ctrl-C), as the LocalCluster is.

**One set of defaults** (:data:`DEFAULTS`), for every LocalCluster pipeflow starts (``pipeflow
run`` and ``pipeflow predict`` with ``--executor distributed`` and no address): 2 worker processes
of 1 thread each unless told otherwise (a stage, or a partition, per process: a stage that crashes
its process takes no other with it), Dask's ``memory_limit="auto"`` (the host's memory shared
equally by the workers), the dashboard on a free port (``None`` still binds 8787; a random port
never collides with another cluster on the host), Dask's own log level for the cluster (WARNING)
and fewer of Dask's periodic chores (``settings``): the workers' statistical profiler samples the
running task at 10 Hz, not 100, the servers' event-loop tick runs every second, not every 20 ms
(it only measures how late the loop is), and the memory monitors every 500 ms, not 100 (an idle
2-worker cluster: 11 to 12% of a core, now 2.5%; benchmarks/README.md, drift at scale). Its
workers keep the memory of a partition they freed for the next one rather than take fresh pages
for each (glibc settings given to their processes before they start, and a check that hands the
memory back above half a worker's memory limit: :mod:`pipeflow.execute.cluster.heap`). Reaching
a scheduler by address gives up after 10 s with a :class:`~pipeflow.errors.UsageError` (``cannot
connect to Dask scheduler at ADDRESS: ...``), exit 2 from the CLI.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pipeflow.errors import UsageError
from pipeflow.execute.cluster.scheduler import Scheduler

#: Dask's local schedulers, by the name pipeflow gives them
LOCAL_KINDS = ("sync", "threads", "processes")
#: every scheduler an executor or a batch job can name
KINDS = (*LOCAL_KINDS, "distributed")
#: the environment variable naming the scheduler for ``distributed`` when nothing else does (read
#: by :class:`~pipeflow.execute.dask_executor.DaskExecutor`; ``pipeflow predict`` reads it too)
ADDRESS_ENV = "PIPEFLOW_DASK_ADDRESS"
#: how long connecting to a scheduler address may take before it is an error
CONNECT_TIMEOUT = "10s"
#: how long a cluster from a factory may take to offer its first worker (pods, batch jobs)
WORKERS_TIMEOUT = 600.0


@dataclass(frozen=True)
class LocalClusterDefaults:
    """How pipeflow sizes and starts a LocalCluster (see the module docstring)."""

    workers: int = 2
    threads_per_worker: int = 1
    processes: bool = True
    memory_limit: str | int = "auto"
    dashboard_address: str = ":0"
    silence_logs: int = logging.WARNING
    settings: tuple[tuple[str, str], ...] = (
        ("distributed.worker.profile.interval", "100ms"),
        ("distributed.admin.tick.interval", "1s"),
        ("distributed.worker.memory.monitor-interval", "500ms"),
        # a partition's memory kept for the next: the check that hands it back (the workers'
        # glibc settings come with their nannies: pipeflow.execute.cluster.heap says why each)
        ("distributed.worker.preload", "pipeflow.execute.cluster.heap"),
    )


DEFAULTS = LocalClusterDefaults()


def local_cluster(workers: int | None = None, threads_per_worker: int | None = None) -> Any:
    """A LocalCluster with :data:`DEFAULTS` (``workers`` and ``threads_per_worker`` when given).
    Its ``settings`` hold for every worker process (its nanny passes them on: to a worker added
    later by ``adapt`` too) and for the scheduler and the nannies started here; the caller's
    Dask configuration is left as it was. ``PIPEFLOW_MALLOC=default`` in the environment leaves
    the workers' memory to glibc's and Dask's defaults (:mod:`pipeflow.execute.cluster.heap`)."""
    import dask
    from distributed import LocalCluster

    from pipeflow.execute.cluster.heap import PRELOAD, kept_environment, nanny_class, wanted

    keep = wanted()
    settings: dict[str, Any] = {k: v for k, v in DEFAULTS.settings if keep or v != PRELOAD}
    if keep:  # after the caller's own preloads, not instead of them
        theirs = dask.config.get("distributed.worker.preload", None) or []
        theirs = [theirs] if isinstance(theirs, str) else list(theirs)
        settings["distributed.worker.preload"] = [*theirs, PRELOAD]
    with dask.config.set(settings), kept_environment():
        return LocalCluster(
            n_workers=workers or DEFAULTS.workers,
            threads_per_worker=threads_per_worker or DEFAULTS.threads_per_worker,
            processes=DEFAULTS.processes,
            memory_limit=DEFAULTS.memory_limit,
            dashboard_address=DEFAULTS.dashboard_address,
            silence_logs=DEFAULTS.silence_logs,
            config=settings,
            worker_class=nanny_class() if keep else None,
        )


@dataclass(frozen=True)
class ClusterFactory:
    """A cluster to start for a block: ``make()`` returns it; ``name`` names it in messages;
    ``adapt`` is ``(minimum, maximum)`` or None; ``where`` and ``adapt_where`` say where the user
    named the factory and the bounds (``spec.yaml:4:12 executor.cluster``, ``--cluster``)."""

    name: str
    make: Callable[[], Any]
    adapt: tuple[int, int] | None = None
    where: str = "cluster"
    adapt_where: str = "adapt"

    def __str__(self) -> str:
        bounds = f", adapt {self.adapt[0]}-{self.adapt[1]}" if self.adapt else ""
        return f"{self.name}{bounds}"

    def no_adapt(self) -> str:
        return (
            f"{self.adapt_where}: cluster {self.name} has no adapt(), so it cannot scale itself: "
            "remove adapt and size it with its options"
        )


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


@contextlib.contextmanager
def start_cluster(factory: ClusterFactory) -> Iterator[Any]:
    """The cluster ``factory`` makes, adapting when asked, closed when the block ends."""
    try:
        cluster = factory.make()
    except Exception as err:
        raise UsageError(
            f"{factory.where}: cannot start {factory.name}: {_one_line(err)}"
        ) from None
    adaptive = None
    try:
        if factory.adapt:
            adapt = getattr(cluster, "adapt", None)
            if not callable(adapt):
                raise UsageError(factory.no_adapt())
            minimum, maximum = factory.adapt
            try:
                adaptive = adapt(minimum=minimum, maximum=maximum)
            except Exception as err:
                raise UsageError(
                    f"{factory.adapt_where}: {factory.name}.adapt(minimum={minimum}, "
                    f"maximum={maximum}) failed: {_one_line(err)}"
                ) from None
        yield cluster
    finally:
        _close(cluster, factory.name, adaptive)


#: seconds a cluster pipeflow started may take to close (its workers are then left to die)
CLOSE_TIMEOUT = 10


def _close(cluster: Any, name: str, adaptive: Any = None) -> None:
    """Close a cluster pipeflow started, its adaptive loop first (else it retires workers while
    they are being closed); a failure to close is logged, never raised over the error that may
    be on its way out."""
    try:
        stop = getattr(adaptive, "stop", None)
        if callable(stop):
            stop()
        try:  # bounded: Ctrl-C must not wait on a worker busy with a long stage
            cluster.close(timeout=CLOSE_TIMEOUT)
        except TypeError:  # a cluster manager whose close takes no timeout
            cluster.close()
    except Exception as err:  # pragma: no cover - depends on the cluster manager
        logging.getLogger("pipeflow.cluster").warning(
            "closing cluster %s failed: %s", name, _one_line(err)
        )


def wait_for_workers(client: Any, what: str, timeout: float = WORKERS_TIMEOUT) -> None:
    """Wait until the cluster has a worker; a UsageError after ``timeout`` seconds."""
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (TimeoutError, OSError) as err:
        raise UsageError(
            f"no worker of cluster {what} joined within {timeout:g} s ({_one_line(err)})"
        ) from None


def client_at(address: str) -> Any:
    """A client of the scheduler at ``address``; a UsageError if it cannot be reached in time."""
    from distributed import Client

    try:
        return Client(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as err:
        raise UsageError(f"cannot connect to Dask scheduler at {address}: {err}") from None


def is_client(value: Any) -> bool:
    """Whether ``value`` looks like a ``distributed.Client`` (without importing distributed)."""
    return hasattr(value, "scatter") and hasattr(value, "compute")


@dataclass(frozen=True)
class Target:
    """The scheduler a block runs on (:func:`connect`). ``kind``: one of :data:`KINDS`; a local
    kind's pool has ``workers`` (``None``: one per core). ``distributed``: ``client`` if given (left
    open), else a client of ``address``, else a cluster from ``factory``, else a LocalCluster with
    :data:`DEFAULTS` (``adapt``: its ``(minimum, maximum)``); those three closed after the block."""

    kind: str = "threads"
    address: str | None = None
    client: Any = None
    workers: int | None = None
    threads_per_worker: int | None = None
    factory: ClusterFactory | None = None
    adapt: tuple[int, int] | None = None


@contextlib.contextmanager
def connect(target: Target) -> Iterator[Scheduler]:
    """The scheduler ``target`` names, for the ``with`` block."""
    kind, client, factory, adapt = target.kind, target.client, target.factory, target.adapt
    if kind in LOCAL_KINDS:
        yield Scheduler(kind, workers=target.workers)
        return
    if kind != "distributed":
        raise UsageError(f"unknown scheduler {kind!r}; expected one of: {', '.join(KINDS)}")
    from distributed import Client

    with contextlib.ExitStack() as stack:
        if client is None and target.address:
            client = stack.enter_context(client_at(target.address))
        elif client is None and factory is not None:
            cluster = stack.enter_context(start_cluster(factory))
            client = stack.enter_context(Client(cluster))
            wait_for_workers(client, factory.name)
        elif client is None:
            cluster = stack.enter_context(local_cluster(target.workers, target.threads_per_worker))
            if adapt:
                cluster.adapt(minimum=adapt[0], maximum=adapt[1])
            client = stack.enter_context(Client(cluster))
        scheduler = Scheduler(kind, client=client)
        try:
            yield scheduler
        finally:  # before the client closes; a caller's cluster keeps no copy of what we shared
            scheduler.release()
