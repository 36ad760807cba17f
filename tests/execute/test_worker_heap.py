"""A worker of the LocalCluster pipeflow starts keeps a freed partition's memory for the next one
(pipeflow.execute.cluster.heap): the second partition-sized array it makes touches no fresh page,
where under Dask's own settings each is a fresh mapping (a page fault per page, or per huge page);
asked to (trim_above, what its periodic check does above half its memory limit), it hands the
free memory back, and the next array faults its pages in again. Both hold in a process that holds
Dask's own MALLOC_TRIM_THRESHOLD_ in its environment (as one that started a Dask cluster before
does), which would otherwise hand each freed partition at the heap's top straight back."""

from __future__ import annotations

import os
from typing import Any

import pytest

MB = 2**20


def _faults(size: int) -> int:
    """Minor page faults of this thread while it fills a fresh array of ``size`` bytes."""
    import resource

    import numpy as np

    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    block = np.empty(size // 8)
    block.fill(1.0)
    faults = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before
    del block
    return faults


def _kept(size: int) -> int:
    """What the heap keeps at its top after ``size`` bytes are taken from it and given back
    (glibc's ``mallinfo2().keepcost``), the most of three tries (another thread's allocation
    between the two calls would leave the block below the top)."""
    import ctypes

    class Mallinfo2(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks")
            + ("uordblks", "fordblks", "keepcost")
        ]

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    libc.mallinfo2.restype = Mallinfo2
    kept = 0
    for _ in range(3):
        libc.free(libc.malloc(size))
        kept = max(kept, libc.mallinfo2().keepcost)
    return kept


def _draws(size: int) -> dict[str, int | bool]:
    from pipeflow.execute.cluster.heap import trim_above

    first, again = _faults(size), _faults(size)
    handed_back = trim_above(0)
    return {"first": first, "again": again, "handed back": handed_back, "after": _faults(size)}


@pytest.mark.cluster
def test_a_worker_reuses_a_freed_partitions_memory_and_hands_it_back_above_its_threshold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from distributed import Client

    from pipeflow.execute.cluster import local_cluster

    # what a process that started a Dask cluster before holds (its nanny put it there), which
    # wins over pipeflow's settings in the environment: the workers keep their memory all the same
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    with local_cluster(1) as cluster, Client(cluster) as client:
        seen = client.submit(_draws, 400 * MB, pure=False).result()
    assert seen["first"] >= 100  # 400 MB of fresh pages: 200 huge pages at the fewest
    assert seen["again"] <= seen["first"] // 10  # the freed memory, reused
    assert seen["handed back"] is True
    assert seen["after"] >= seen["first"] // 2  # given back: fresh pages again


def test_trim_above_leaves_a_process_under_its_threshold_alone() -> None:
    from pipeflow.execute.cluster.heap import trim_above

    assert trim_above(float("inf")) is False


@pytest.mark.cluster
def test_a_worker_keeps_a_freed_partition_at_its_heaps_top_though_dask_left_its_threshold_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A process that started a Dask cluster before holds Dask's MALLOC_TRIM_THRESHOLD_=65536 in
    its environment, which wins over pipeflow's setting: the workers' preload sets it again, so a
    freed 400 MB block at the heap's top stays there (under 65536 it is handed back at once)."""
    from distributed import Client

    from pipeflow.execute.cluster import local_cluster

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    with local_cluster(1) as cluster, Client(cluster) as client:
        kept = client.submit(_kept, 400 * MB, pure=False).result()
    assert kept >= 400 * MB


def _settings(dask_worker: Any = None) -> dict[str, Any]:
    import os

    return {
        "environ": {
            k: v for k, v in os.environ.items() if k in ("MALLOC_MMAP_MAX_", "MALLOC_ARENA_MAX")
        },
        "heap trim": "pipeflow-heap-trim" in dask_worker.periodic_callbacks,
    }


@pytest.mark.cluster
def test_pipeflow_malloc_default_leaves_the_workers_memory_to_glibc_and_dask(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The switch pipeflow.core.malloc reads for a server: the workers start without the heap
    settings and the check, and a freed partition's memory is a fresh mapping again."""
    from distributed import Client

    from pipeflow.execute.cluster import local_cluster

    for name in ("MALLOC_MMAP_MAX_", "MALLOC_ARENA_MAX", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(name, raising=False)  # put there by an earlier cluster's nanny
    monkeypatch.setenv("PIPEFLOW_MALLOC", "default")
    with local_cluster(1) as cluster, Client(cluster) as client:
        [seen] = client.run(_settings).values()
        draws = client.submit(_draws, 400 * MB, pure=False).result()
    assert seen == {"environ": {}, "heap trim": False}
    assert draws["again"] >= draws["first"] // 2  # fresh pages again, as under Dask's settings


@pytest.mark.cluster
def test_the_starting_process_keeps_its_own_environment_and_the_callers_preloads_stay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Dask's nanny writes a worker's pre-spawn variables into the starting process's
    os.environ: pipeflow's heap settings are taken out again once the workers run (a server or
    tool started from this process afterwards would inherit mmap off and one arena), while the
    workers keep them; a preload the caller configured still runs, beside pipeflow's."""
    import dask
    from distributed import Client

    from pipeflow.execute.cluster import local_cluster
    from pipeflow.execute.cluster.heap import ENV, PRELOAD

    for name in ENV:
        monkeypatch.delenv(name, raising=False)  # put there by an earlier test's nanny
    theirs = {"distributed.worker.preload": ["pipeflow.core.malloc"]}
    with dask.config.set(theirs), local_cluster(1) as cluster, Client(cluster) as client:
        here = {k: os.environ.get(k) for k in ENV}
        [seen] = client.run(_settings).values()
        [preloads] = client.run(
            lambda dask_worker: sorted(p.name for p in dask_worker.preloads)
        ).values()
    assert here == dict.fromkeys(ENV)
    assert seen == {
        "environ": {"MALLOC_MMAP_MAX_": "0", "MALLOC_ARENA_MAX": "1"},
        "heap trim": True,
    }
    assert preloads == sorted(["pipeflow.core.malloc", PRELOAD])
