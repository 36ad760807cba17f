"""The Dask adapter: the one module of pipeflow that imports ``dask`` or ``distributed``.

Every Dask user in the package goes through it: the pipeline executor
(:mod:`pipeflow.execute.dask_executor`), batch scoring (:mod:`pipeflow.scoring.batch`), the
``tune`` and ``train`` stages (code that runs inside a task) and drift at scale
(:mod:`pipeflow.monitoring.scale`). So there is one set of defaults, one way to reach a scheduler
and one place that knows the shapes of Dask's API (callback signatures, what ``as_completed`` gives
for a failed task, what the scheduler reports of its workers). Dask is imported inside the
functions: importing this module costs nothing, and ``pipeflow --help`` loads no Dask.

It is a low floor: it imports :mod:`pipeflow.errors`, the standard library and Dask, nothing else
of pipeflow (an import-linter contract says so), so stages may use it without reaching the
executor, the runner or the CLI.

**Schedulers.** ``sync``, ``threads`` and ``processes`` are Dask's local schedulers (``workers``
sizes the pool; ``None``: one per core); ``distributed`` is a ``distributed.Client``.
:func:`connect` gives a :class:`Scheduler` for the one a :class:`Target` names: an existing client
(left open), a client of the scheduler at ``address``, a cluster from a factory
(:class:`ClusterFactory`), or a LocalCluster started for the block.

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
2-worker cluster: 11 to 12% of a core, now 2.5%; benchmarks/README.md, drift at scale). Reaching
a scheduler by address gives up after 10 s with a :class:`~pipeflow.errors.UsageError` (``cannot
connect to Dask scheduler at ADDRESS: ...``), exit 2 from the CLI.

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

**Inside a task** (``tune``, ``train``, :mod:`pipeflow.execute.task`): :func:`worker_address` and
:func:`on_worker` tell whether the code runs on a distributed worker without importing
``distributed`` just to learn that it does not; :func:`worker_client` gives a client that may
submit more tasks from the task (it secedes from the worker's thread pool while in use). Live
updates (:mod:`pipeflow.execute.channel`): :func:`publish` on a worker puts a message in the
cluster's event log, :func:`subscribe` hands each one to the client's handler.

**Each partition's function in the partition's task** (:func:`per_partition`, drift at scale):
Dask fuses no ``fn(partition, profile)`` (two inputs), so a worker held the partition until the
scheduler released it, making the next meanwhile; fused, it holds one, freed first (scale's notes).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeflow.errors import UsageError

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
    )


DEFAULTS = LocalClusterDefaults()


# ------------------------------------------------------------------------------ reaching Dask


def local_cluster(workers: int | None = None, threads_per_worker: int | None = None) -> Any:
    """A LocalCluster with :data:`DEFAULTS` (``workers`` and ``threads_per_worker`` when given).
    Its ``settings`` hold for every worker process (its nanny passes them on: to a worker added
    later by ``adapt`` too) and for the scheduler and the nannies started here; the caller's
    Dask configuration is left as it was."""
    import dask
    from distributed import LocalCluster

    settings = dict(DEFAULTS.settings)
    with dask.config.set(settings):
        return LocalCluster(
            n_workers=workers or DEFAULTS.workers,
            threads_per_worker=threads_per_worker or DEFAULTS.threads_per_worker,
            processes=DEFAULTS.processes,
            memory_limit=DEFAULTS.memory_limit,
            dashboard_address=DEFAULTS.dashboard_address,
            silence_logs=DEFAULTS.silence_logs,
            config=settings,
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


class Scheduler:
    """A local Dask scheduler (``client`` is None) or a distributed client, from :func:`connect`."""

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


# ---------------------------------------------------------------------------- on a cluster


def worker_resources(client: Any) -> dict[str, dict[str, float]]:
    """Worker address -> the resources it offers (``{}`` for none), as the scheduler knows them."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    return {address: dict(w.get("resources", {})) for address, w in workers.items()}


def workers_offering(client: Any, resources: Mapping[str, float]) -> list[str]:
    """The addresses, sorted, of the workers that offer at least ``resources`` (every worker when
    it is empty)."""
    return sorted(
        address
        for address, offered in worker_resources(client).items()
        if all(offered.get(k, 0) >= v for k, v in resources.items())
    )


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


# ---------------------------------------------------------------------------- inside a task


def worker_address() -> str | None:
    """The address of the distributed worker running this code; None elsewhere."""
    if "distributed" not in sys.modules:  # never import distributed just to learn we are not on it
        return None
    from distributed import get_worker

    try:
        return str(get_worker().address)
    except ValueError:
        return None


def on_worker() -> bool:
    """Whether this code runs in a task on a distributed worker."""
    return worker_address() is not None


def current_client() -> Any:
    """The client of the cluster this task runs on (or the default client of this process)."""
    from distributed import get_client

    return get_client()


def publish(topic: str, message: Any) -> None:
    """Put ``message`` (msgpack-able) in the cluster's event log under ``topic``, from a task on
    a worker (or from a process with a default client)."""
    from distributed import get_client, get_worker

    try:
        get_worker().log_event(topic, message)
    except ValueError:  # not on a worker
        get_client().log_event(topic, message)


def subscribe(client: Any, topic: str, handler: Callable[[Any], None]) -> None:
    """Call ``handler(message)`` for each event under ``topic`` (on the client's loop thread)."""
    client.subscribe_topic(topic, lambda event: handler(event[1]))


def unsubscribe(client: Any, topic: str) -> None:
    with contextlib.suppress(Exception):  # a closed client has no subscriptions left
        client.unsubscribe_topic(topic)


def worker_client() -> Any:
    """A context manager giving a client that may submit tasks from this task (it secedes from
    the worker's thread pool while in use); None when not on a distributed worker."""
    if not on_worker():
        return None
    from distributed import worker_client as _worker_client

    return _worker_client()


# ------------------------------------------------------------------------ lazy collections


def delayed(obj: Any, **kwargs: Any) -> Any:
    """``dask.delayed``: ``delayed(fn, pure=False)(*args)`` is a task; ``delayed(future)`` a
    placeholder for a value already on the cluster."""
    import dask

    return dask.delayed(obj, **kwargs)


def compute(*collections: Any, scheduler: str | None = None) -> tuple[Any, ...]:
    """``dask.compute``: the values of ``collections``, on ``scheduler`` (a local kind) or, when
    None, Dask's current one (the default client if there is one, else threads)."""
    import dask

    return tuple(dask.compute(*collections, **({"scheduler": scheduler} if scheduler else {})))


def per_partition(fn: Callable[..., Any], collection: Any, *args: Any) -> list[Any]:
    """``fn(partition, *args)`` of each partition of a dask Array or DataFrame, in order, as
    delayed objects, each in the task that makes its partition; ``args``: delayed or values."""
    from dask._task_spec import Task, TaskRef, convert_legacy_graph
    from dask.base import tokenize
    from dask.delayed import Delayed
    from dask.highlevelgraph import HighLevelGraph

    parts = list(getattr(found := collection.to_delayed(), "flat", found))  # optimised, 1 graph
    graph = convert_legacy_graph(dict(parts[0].__dask_graph__())) if parts else {}
    uses = Counter(dep for node in graph.values() for dep in node.dependencies)
    refs = [TaskRef(a.key) if isinstance(a, Delayed) else a for a in args]
    name = f"{getattr(fn, '__name__', 'part')}-{tokenize(fn, [p.key for p in parts], *args)}"
    layer, shared = {}, [a for a in args if isinstance(a, Delayed)]  # their graphs join this one
    for i, part in enumerate(parts):  # its task, and what that alone uses, back to the sources
        chain, todo = [], [part.key]
        for key in todo:  # grows as it goes
            if key in graph and uses[key] == (1 if chain else 0) and not graph[key].block_fusion:
                chain.append(graph.pop(key))
                todo.extend(chain[-1].dependencies)
        layer[(name, i)] = Task.fuse(*chain, Task((name, i), fn, TaskRef(part.key), *refs))
    layer.update(graph)  # what partitions share stays a task of its own
    graph = HighLevelGraph.from_collections(name, layer, dependencies=shared)
    return [Delayed((name, i), graph, layer=name) for i in range(len(parts))]


def array_from_blocks(blocks: Sequence[Any], shapes: Sequence[tuple[int, ...]], dtype: Any) -> Any:
    """One dask array of the row ``blocks`` (values or futures on a cluster) stacked in order;
    ``shapes`` and ``dtype`` describe them, so nothing is computed to learn them."""
    import dask.array as da

    pairs = zip(blocks, shapes, strict=True)
    return da.concatenate([da.from_delayed(delayed(b), shape=s, dtype=dtype) for b, s in pairs])


def read_table(kind: str, path: Any, **kwargs: Any) -> Any:
    """``dask.dataframe.read_parquet`` (``kind`` "parquet") or ``read_csv`` ("csv"): a lazy
    dataframe of one file or a list of files."""
    import dask.dataframe as dd

    return dd.read_parquet(path, **kwargs) if kind == "parquet" else dd.read_csv(path, **kwargs)
