"""A worker of the LocalCluster pipeflow starts keeps a freed partition's memory for the next one
(pipeflow.execute.cluster.heap): the second partition-sized array it makes touches no fresh page,
where under Dask's own settings each is a fresh mapping (a page fault per page, or per huge page);
asked to (trim_above, what its periodic check does above half its memory limit), it hands the
free memory back, and the next array faults its pages in again."""

from __future__ import annotations

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


def _draws(size: int) -> dict[str, int | bool]:
    from pipeflow.execute.cluster.heap import trim_above

    first, again = _faults(size), _faults(size)
    handed_back = trim_above(0)
    return {"first": first, "again": again, "handed back": handed_back, "after": _faults(size)}


@pytest.mark.cluster
def test_a_worker_reuses_a_freed_partitions_memory_and_hands_it_back_above_its_threshold() -> None:
    from distributed import Client

    from pipeflow.execute.cluster import local_cluster

    with local_cluster(1) as cluster, Client(cluster) as client:
        seen = client.submit(_draws, 200 * MB, pure=False).result()
    assert seen["first"] >= 50  # 200 MB of fresh pages: 100 huge pages at the fewest
    assert seen["again"] <= seen["first"] // 10  # the freed memory, reused
    assert seen["handed back"] is True
    assert seen["after"] >= seen["first"] // 2  # given back: fresh pages again


def test_trim_above_leaves_a_process_under_its_threshold_alone() -> None:
    from pipeflow.execute.cluster.heap import trim_above

    assert trim_above(float("inf")) is False
