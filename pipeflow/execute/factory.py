"""A Dask cluster named by ``module:attribute``: finding the callable that starts it.

``executor: {kind: distributed, cluster: "dask_jobqueue:SLURMCluster", options: {...}}`` (or
``pipeflow run --cluster MODULE:ATTR``) names any callable returning a Dask cluster manager:
dask-kubernetes' ``KubeCluster``, dask-jobqueue's ``SLURMCluster`` (and its PBS, SGE, LSF
siblings), Dask Gateway's ``GatewayCluster``, Coiled's ``Cluster``, ``distributed:LocalCluster``,
or a function of the user's in a module beside the spec (the spec's folder is put on
``sys.path`` first for the run, as for stage code: :mod:`pipeflow.core.importpath`). :func:`cluster_factory` imports it and gives a
:class:`~pipeflow.execute.cluster.ClusterFactory` that calls it with ``options`` as keyword
arguments; :mod:`pipeflow.execute.cluster` starts, adapts and closes the cluster.

The import happens when the executor is built, before a run is recorded, not when the spec is
loaded: ``pipeflow check`` works on a laptop without dask-kubernetes, and a misspelt factory
stops ``pipeflow run`` before anything starts. What cannot be imported, or is not callable, is
one line naming where the factory was named and what to install (``pip install
dask-kubernetes``); a class asked to adapt without an ``adapt`` method is refused here too. Options may also come from Dask's own configuration,
which these cluster managers read (``~/.config/dask/jobqueue.yaml``,
``DASK_JOBQUEUE__SLURM__QUEUE``): a ``--cluster`` from the command line takes its options from
there. No Dask import here: whatever the factory's module imports is its own business.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from pipeflow.core.importpath import put_first
from pipeflow.errors import UsageError
from pipeflow.execute.cluster import ClusterFactory

#: the package providing a factory's top-level module where it is not the module's name with
#: ``_`` for ``-`` (``dask_kubernetes`` -> ``dask-kubernetes``): what a missing module says to install
PACKAGES = {"dask_cloudprovider": "dask-cloudprovider[all]"}

_MISSING = object()


def cluster_factory(
    ref: str,
    options: Mapping[str, Any] | None = None,
    *,
    adapt: tuple[int, int] | None = None,
    where: str = "cluster",
    adapt_where: str = "adapt",
    search_path: str | None = None,
) -> ClusterFactory:
    """The factory ``ref`` (``module:attribute``) names, imported now, called with ``options``
    when the cluster starts. ``where`` and ``adapt_where`` name, in errors, where the user wrote
    the factory and the bounds; ``search_path`` (the spec's folder) is importable first."""
    make = resolve(ref, where, search_path)
    factory = ClusterFactory(
        name=ref,
        make=lambda: make(**dict(options or {})),
        adapt=adapt,
        where=where,
        adapt_where=adapt_where,
    )
    if adapt and isinstance(make, type) and not callable(getattr(make, "adapt", None)):
        raise UsageError(factory.no_adapt())  # refused before anything is started
    return factory


def resolve(ref: str, where: str = "cluster", search_path: str | None = None) -> Callable[..., Any]:
    """The callable ``ref`` names; a one-line UsageError if it cannot be imported or called."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise UsageError(
            f"{where}: {ref!r}: expected module:attribute, e.g. dask_kubernetes.operator:KubeCluster"
        )
    if search_path:
        put_first(search_path)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        missing = err.name or module_name
        top = missing.split(".")[0]
        package = PACKAGES.get(top, top.replace("_", "-"))
        if module_name == missing or module_name.startswith(missing + "."):
            raise UsageError(
                f"{where}: cannot import {module_name} for cluster {ref}: no module named "
                f"{missing!r}; install it where pipeflow runs (pip install {package})"
            ) from None
        raise UsageError(
            f"{where}: importing {module_name} for cluster {ref} failed: no module named "
            f"{missing!r} (pip install {package})"
        ) from None
    except Exception as err:
        first = (str(err).strip().splitlines() or [""])[0]
        raise UsageError(
            f"{where}: importing {module_name} for cluster {ref} failed: {type(err).__name__}: {first}"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, _MISSING)
        if obj is _MISSING:
            raise UsageError(f"{where}: module {module_name} has no attribute {attr!r} ({ref})")
    if not callable(obj):
        raise UsageError(
            f"{where}: {ref} is a {type(obj).__name__}, not a callable that returns a Dask cluster"
        )
    return obj


__all__ = ["PACKAGES", "cluster_factory", "resolve"]
