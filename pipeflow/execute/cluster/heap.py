"""Worker memory of the LocalCluster pipeflow starts: a partition's memory kept for the next one,
and handed back before Dask's memory manager would act on it.

A worker that streams partitions (drift at scale, batch scoring: read or draw a partition,
summarise or score it, free it, make the next) allocates and frees one partition-sized array after
another. Under glibc's defaults, and Dask's (its nanny starts workers with
``MALLOC_TRIM_THRESHOLD_=65536``), each of those arrays is a fresh ``mmap``: the kernel zeroes
every page of it on first touch and takes it back when it is freed, so every partition costs the
system time of clearing its size in fresh pages (0.01 to 0.9 s for 400 MB on the project's 2-core
VM, swinging with the machine's state: benchmarks/README.md, drift at scale, fifth and sixth
passes), which the same work in one long-lived process does not always pay.

So the workers of pipeflow's LocalCluster start with glibc told to keep that memory: their
nannies (:func:`nanny_class`) add :data:`ENV` to what Dask sets in a worker's environment before
its process starts (``pre-spawn-environ``: glibc reads it once, at start), for a worker added
later by ``adapt`` or restarted by its nanny too:

- ``MALLOC_MMAP_MAX_=0``: large arrays come from the heap, not from a mapping of their own (the
  threshold for mapping cannot be raised past 32 MB, and a partition is hundreds);
- ``MALLOC_ARENA_MAX=1``: one heap for every thread. A task runs in a worker thread, whose own
  arena grows in 64 MB heaps: an array larger than that falls back to a fresh mapping whatever
  ``MALLOC_MMAP_MAX_`` says;
- ``MALLOC_TRIM_THRESHOLD_=1 GiB`` (:data:`KEEP`): free memory at the heap's top is kept up to
  1 GiB (so one partition of up to 1 GiB is reused), and handed back whole when more is free.

What that costs, and the guard: the worker's resident memory no longer falls when a partition is
freed: one to two partitions are held (472 MB against 73 MB after 400 MB partitions; 874 to 925
MB in the drift benchmark, whose merges' small arrays land in a freed partition's memory, so the
next partition may not fit there), up to about twice the largest after partitions of changing
sizes (1.27 GB after 100 to 800 MB): docs/howto-cluster.md#worker-memory. Dask's memory manager
reads the process's resident memory: from 70% of the worker's memory limit it spills, from 80% it
pauses the worker, and from 95% the nanny restarts it. Free memory kept in the heap must not
trigger any of those, so this module is also the workers' preload (``distributed.worker.preload``):
every :data:`INTERVAL_MS` it reads the worker's resident memory and, above :data:`TRIM_ABOVE` of
its memory limit, asks glibc to return every free page (``malloc_trim(0)``); what is made next
takes fresh pages again, as under Dask's settings. Elsewhere than glibc (musl, macOS) the
variables mean nothing and the preload does nothing.

:mod:`pipeflow.core.malloc` is the same policy for a server: there the blocks are a request's
(about 1 MB), under the 32 MiB glibc's mmap threshold can be raised to, so ``mallopt`` in the
running process is enough; a worker's partitions are hundreds of MB, hence the environment here.
Its switch holds here too: ``PIPEFLOW_MALLOC=default`` in the environment of the process that
starts the cluster leaves these settings out (:func:`wanted`), and the workers get glibc's and
Dask's defaults. The environment's own ``MALLOC_*`` variables win over these settings as well
(Dask's rule for ``pre-spawn-environ``).

Not in the starting process: Dask's nanny writes a worker's ``pre-spawn-environ`` into the
environment of the process that starts it (``os.environ``) and leaves it there, so every process
that one starts afterwards (a server, a tool, a test's subprocess) would run with mmap off, one
arena and a 1 GiB trim threshold. :func:`kept_environment` puts the starting process's own values
of :data:`ENV`'s variables back once the cluster's workers have started (a worker the nanny
starts later writes them again: Dask's behaviour, as for its own ``MALLOC_TRIM_THRESHOLD_``). A
process that started a plain Dask cluster before holds Dask's ``MALLOC_TRIM_THRESHOLD_=65536``,
which wins then, so the preload sets the trim threshold itself (``mallopt``) wherever
``MALLOC_MMAP_MAX_`` is pipeflow's 0.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
from collections.abc import Iterator
from typing import Any

#: free memory a worker keeps at the top of its heap, bytes (glibc's trim threshold)
KEEP = 2**30
#: share of a worker's memory limit above which its free heap is handed back (below Dask's 70%)
TRIM_ABOVE = 0.5
#: how often a worker checks (Dask's memory monitors run every 500 ms on pipeflow's cluster)
INTERVAL_MS = 500
_M_TRIM_THRESHOLD = -1  # mallopt's parameter (glibc's malloc.h)
#: the variables a worker's process starts with (the module docstring says why each)
ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_ARENA_MAX": "1", "MALLOC_TRIM_THRESHOLD_": str(KEEP)}
#: this module as the workers' preload (left out under ``PIPEFLOW_MALLOC=default``)
PRELOAD = __name__


def wanted() -> bool:
    """Whether the workers' memory is kept (not asked off by ``PIPEFLOW_MALLOC=default``, the
    switch :mod:`pipeflow.core.malloc` reads for a server)."""
    return os.environ.get("PIPEFLOW_MALLOC", "").strip().lower() != "default"


@functools.cache
def nanny_class() -> type:
    """Dask's Nanny, with :data:`ENV` added to what it sets before its worker's process starts
    (the environment's own values win, as they do for Dask's ``pre-spawn-environ``)."""
    from distributed import Nanny

    class HeapNanny(Nanny):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            kept = {k: os.environ.get(k, v) for k, v in ENV.items()}
            self.pre_spawn_env.update(kept)
            self.env.update(kept)

    return HeapNanny


@contextlib.contextmanager
def kept_environment() -> Iterator[None]:
    """Put this process's own values of :data:`ENV`'s variables back on leaving (the nanny
    writes its worker's into ``os.environ``: the module docstring)."""
    saved = {k: os.environ[k] for k in ENV if k in os.environ}
    try:
        yield
    finally:
        for k in ENV:
            os.environ.pop(k, None)
        os.environ.update(saved)


def _libc() -> Any:
    """glibc, or None where the C library has no ``malloc_trim`` and ``mallopt``."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:
        return None


def dask_setup(worker: Any) -> None:
    """Dask's preload hook: the trim threshold made :data:`KEEP` where the heap settings are in
    force, and a periodic check that hands the free heap back when the worker's resident memory
    passes :data:`TRIM_ABOVE` of its memory limit (none without a limit)."""
    from tornado.ioloop import PeriodicCallback

    libc = _libc()
    if libc is None:
        return
    if os.environ.get("MALLOC_MMAP_MAX_") == "0":  # pipeflow's settings, not the user's own
        # set here too: a process that started a Dask cluster before holds Dask's
        # MALLOC_TRIM_THRESHOLD_=65536 in its environment (the nanny puts it there), which then
        # wins over pipeflow's setting for every worker started from it, and each freed
        # partition at the heap's top would be handed back
        libc.mallopt(_M_TRIM_THRESHOLD, KEEP)
    limit = getattr(getattr(worker, "memory_manager", None), "memory_limit", None)
    if not limit:
        return
    check = PeriodicCallback(lambda: trim_above(TRIM_ABOVE * limit, libc), INTERVAL_MS)
    worker.periodic_callbacks["pipeflow-heap-trim"] = check  # started with the worker's own


def trim_above(threshold: float, libc: Any = None) -> bool:
    """Return this process's free heap to the system if its resident memory is over
    ``threshold`` bytes; whether it did."""
    import psutil

    if psutil.Process().memory_info().rss <= threshold:
        return False
    libc = libc or _libc()
    return bool(libc is not None and libc.malloc_trim(0))
