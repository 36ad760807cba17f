"""pipeflow.execute.cluster.per_partition: a function of each partition of a dask Array or
DataFrame runs in the task that makes the partition (drift at scale's passes), with the results
of a task per partition, and leaves what partitions share as a task of its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeflow.execute.cluster import compute, delayed, per_partition


def _summary(part: Any, scale: Any, offset: float) -> tuple[float, int]:
    values = np.asarray(part, dtype=float)
    return float((values * scale).sum() + offset), len(values)


def _block(i: int) -> Any:
    return np.arange(12.0).reshape(4, 3) + 100 * i


def _apart(collection: Any, *args: Any) -> tuple[Any, ...]:
    """The same function as a task after each partition's own (Dask's way)."""
    parts = collection.to_delayed()
    parts = list(parts.ravel()) if hasattr(parts, "ravel") else list(parts)
    return compute(*[delayed(_summary)(p, *args) for p in parts], scheduler="sync")


def _collections(tmp_path: Path) -> dict[str, Any]:
    import dask
    import dask.array as da
    import dask.dataframe as dd

    for i in range(3):
        frame = pd.DataFrame(np.arange(15.0).reshape(5, 3) + 10 * i, columns=["a", "b", "c"])
        frame.to_parquet(tmp_path / f"part{i}.parquet")
    drawn = [da.from_delayed(dask.delayed(_block)(i), shape=(4, 3), dtype=float) for i in range(3)]
    rows = da.from_array(np.arange(60.0).reshape(20, 3), chunks=(6, 3))
    return {
        "drawn blocks": da.concatenate(drawn),
        "row blocks": rows,
        "a selection of columns": rows[:, [0, 2]],
        "parquet files": dd.read_parquet(tmp_path),
        "parquet columns": dd.read_parquet(tmp_path)[["c", "a"]],
    }


def test_each_partition_is_made_and_passed_in_one_task_with_the_same_results(
    tmp_path: Path,
) -> None:
    for label, collection in _collections(tmp_path).items():
        width = collection.shape[1] if hasattr(collection, "shape") else len(collection.columns)
        scale = delayed(np.arange(1.0, width + 1), traverse=False)
        tasks = per_partition(_summary, collection, scale, 0.5)
        graph = dict(tasks[0].__dask_graph__())
        fused = {task.key for task in tasks}
        # besides a task per partition, only what every one of them uses (the argument, a column
        # index): no partition, nor what made it, is a task of its own
        rest = set(graph) - fused
        assert rest and all(rest <= graph[key].dependencies for key in fused), label
        assert compute(*tasks, scheduler="sync") == _apart(collection, scale, 0.5), label


def test_what_the_partitions_share_stays_a_task_of_its_own() -> None:
    import dask.array as da

    x = da.random.default_rng(1).normal(size=(12, 3), chunks=(4, 3))
    centred = x - x.mean(axis=0)  # every block needs the mean
    tasks = per_partition(_summary, centred, 1.0, 0.0)
    assert len(tasks) == 3
    assert compute(*tasks, scheduler="sync") == _apart(centred, 1.0, 0.0)
    keys = [str(k) for k in tasks[0].__dask_graph__()]
    assert any("mean" in k for k in keys)  # computed once, not once per partition


@pytest.mark.cluster
def test_on_a_cluster_the_workers_never_hold_a_partition_as_a_task_of_its_own(
    tmp_path: Path,
) -> None:
    from distributed import Client, LocalCluster, get_task_stream

    collections = _collections(tmp_path)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        for label in ("drawn blocks", "parquet files"):
            collection = collections[label]
            with get_task_stream(client) as stream:
                got = compute(*per_partition(_summary, collection, 1.0, 0.0))
            names = {str(t["key"]).split("'")[1].rsplit("-", 1)[0] for t in stream.data}
            assert names == {"_summary"}, (label, names)
            assert got == _apart(collection, 1.0, 0.0), label
        # a persisted collection: its partitions are on the workers already, and used from there
        kept = client.persist(collections["row blocks"])
        got = compute(*per_partition(_summary, kept, 1.0, 0.0))
        assert got == _apart(collections["row blocks"], 1.0, 0.0)
