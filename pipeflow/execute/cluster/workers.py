"""The workers: what they offer, as the scheduler knows it, and code that runs on them.

**What workers offer** (:func:`worker_resources`, :func:`workers_offering`): the resources each
worker of a cluster declared (``{"GPU": 1}``), so a stage or a batch job asking for what no worker
offers is an error at once, not a task Dask waits on forever, and a task can pick the workers
that fit (``train``'s xgboost.dask).

**Inside a task** (``tune``, ``train``, :mod:`pipeflow.execute.task`): :func:`worker_address` and
:func:`on_worker` tell whether the code runs on a distributed worker without importing
``distributed`` just to learn that it does not; :func:`worker_client` gives a client that may
submit more tasks from the task (it secedes from the worker's thread pool while in use). Live
updates (:mod:`pipeflow.execute.channel`): :func:`publish` on a worker puts a message in the
cluster's event log, :func:`subscribe` hands each one to the client's handler.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


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
