"""The LocalCluster pipeflow starts (pipeflow.execute.cluster.local_cluster) runs its scheduler,
nannies and workers with DEFAULTS.settings (fewer of Dask's periodic chores; the workers' heap
kept for the next partition, with pipeflow.execute.cluster.heap's check), a worker added later
too, and leaves the caller's Dask configuration as it was."""

from __future__ import annotations

from typing import Any

import pytest


def _seen(keys: list[str], dask_worker: Any = None) -> dict[str, Any]:
    import os

    import dask

    trim = dask_worker.periodic_callbacks.get("pipeflow-heap-trim")
    return {
        # (the trim threshold is the environment's when it has one: Dask's, if this process
        # started a plain Dask cluster before; the heap module's preload sets it then)
        "environ": {k: os.environ.get(k) for k in ("MALLOC_MMAP_MAX_", "MALLOC_ARENA_MAX")},
        "heap trim": trim is not None and trim.is_running(),
        "config": [dask.config.get(k) for k in keys],
        "tick": dask_worker._tick_interval,
        "memory monitor": dask_worker.memory_manager.memory_monitor_interval,
        "profiling": "profile" in dask_worker.periodic_callbacks,
    }


@pytest.mark.cluster
def test_the_local_cluster_runs_every_worker_with_the_settings_and_leaves_the_callers_config() -> (
    None
):
    import dask
    from distributed import Client

    from pipeflow.execute.cluster import DEFAULTS, local_cluster

    keys = [k for k, _ in DEFAULTS.settings]
    values = [v for _, v in DEFAULTS.settings]
    before = [dask.config.get(k, None) for k in keys]
    assert before != values  # Dask's own defaults differ, so the test can tell them apart
    with local_cluster(1) as cluster, Client(cluster) as client:
        assert [dask.config.get(k, None) for k in keys] == before  # the caller's config untouched
        assert client.run_on_scheduler(lambda dask_scheduler: dask_scheduler._tick_interval) == 1
        cluster.scale(2)  # a worker started later (as adapt does) gets them from its nanny
        client.wait_for_workers(2, timeout=60)
        seen = client.run(_seen, keys)
    assert len(seen) == 2
    for worker in seen.values():
        assert worker == {
            "environ": {"MALLOC_MMAP_MAX_": "0", "MALLOC_ARENA_MAX": "1"},
            "heap trim": True,
            # (the preload joins the caller's list: none here)
            "config": [
                [v] if k == "distributed.worker.preload" else v for k, v in DEFAULTS.settings
            ],
            "tick": 1.0,
            "memory monitor": 0.5,
            "profiling": True,  # still sampling, at 10 Hz
        }
