"""The Dask adapter: the one package of pipeflow that imports ``dask`` or ``distributed``.

Every Dask user in pipeflow goes through it: the pipeline executor
(:mod:`pipeflow.execute.dask_executor`), batch scoring (:mod:`pipeflow.scoring.batch`), the
``tune`` and ``train`` stages (code that runs inside a task) and drift at scale
(:mod:`pipeflow.monitoring.scale`). So there is one set of defaults, one way to reach a scheduler
and one place that knows the shapes of Dask's API (callback signatures, what ``as_completed`` gives
for a failed task, what the scheduler reports of its workers). Dask is imported inside the
functions: importing this package costs nothing, and ``pipeflow --help`` loads no Dask.

It is a low floor: its modules import :mod:`pipeflow.errors`, the standard library, Dask and each
other, nothing else of pipeflow (an import-linter contract says so), so stages may use it without
reaching the executor, the runner or the CLI.

Its modules, each with its own notes:

- :mod:`~pipeflow.execute.cluster.clusters`: reaching a scheduler (:func:`connect` a
  :class:`Target`), the LocalCluster pipeflow starts and its settings (:data:`DEFAULTS`), a
  cluster from a factory (:class:`ClusterFactory`), a scheduler by address;
- :mod:`~pipeflow.execute.cluster.scheduler`: a scheduler at work (:class:`Scheduler`): a graph
  run with progress, results in order as they land, a cluster's results as they complete
  (:func:`completed`) and what a failed task says;
- :mod:`~pipeflow.execute.cluster.workers`: what workers offer, and code inside a task (on a
  worker, its client, live updates through the cluster's event log);
- :mod:`~pipeflow.execute.cluster.lazy`: Dask collections (``delayed``, ``compute``, an array of
  blocks, a lazy dataframe of files);
- :mod:`~pipeflow.execute.cluster.task_spec`: each partition's function in the partition's task
  (:func:`per_partition`), on ``dask._task_spec``, a private Dask module, kept to that one module;
- :mod:`~pipeflow.execute.cluster.heap`: the memory of the workers pipeflow's LocalCluster starts
  (a freed partition's kept for the next; handed back above half a worker's limit), the workers'
  preload; it imports nothing of Dask.

Callers import from the package (``from pipeflow.execute.cluster import connect``); the names
below are the ones they use.
"""

from __future__ import annotations

from pipeflow.execute.cluster.clusters import (
    ADDRESS_ENV,
    DEFAULTS,
    KINDS,
    LOCAL_KINDS,
    ClusterFactory,
    Target,
    connect,
    is_client,
    local_cluster,
)
from pipeflow.execute.cluster.lazy import array_from_blocks, compute, delayed, read_table
from pipeflow.execute.cluster.scheduler import Scheduler, completed, describe_failure, task_error
from pipeflow.execute.cluster.task_spec import per_partition
from pipeflow.execute.cluster.workers import (
    current_client,
    on_worker,
    publish,
    subscribe,
    unsubscribe,
    worker_address,
    worker_client,
    worker_resources,
    workers_offering,
)

__all__ = [
    "ADDRESS_ENV",
    "DEFAULTS",
    "KINDS",
    "LOCAL_KINDS",
    "ClusterFactory",
    "Scheduler",
    "Target",
    "array_from_blocks",
    "completed",
    "compute",
    "connect",
    "current_client",
    "delayed",
    "describe_failure",
    "is_client",
    "local_cluster",
    "on_worker",
    "per_partition",
    "publish",
    "read_table",
    "subscribe",
    "task_error",
    "unsubscribe",
    "worker_address",
    "worker_client",
    "worker_resources",
    "workers_offering",
]
