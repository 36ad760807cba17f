"""Each partition's function in the task that makes the partition (:func:`per_partition`, drift at
scale), built on ``dask._task_spec``: the one module of pipeflow that reaches a private Dask
module, so that what breaks when Dask changes it is here and nowhere else.

**Why.** Dask fuses no ``fn(partition, profile)`` (two inputs), so a worker held the partition
until the scheduler released it, making the next meanwhile; fused, it holds one, freed first
(:mod:`pipeflow.monitoring.scale`'s notes). Dask's public API cannot ask for that fusion; its
task spec can: the tasks that make one partition, and that nothing else uses, are fused with the
call of ``fn`` into one task (``Task.fuse``), and what partitions share stays a task of its own.

**Why it is fragile.** The leading underscore means no deprecation cycle: any Dask release may
change it (``dask>=2025.1`` in pyproject.toml is the first with what is used here). Used:
``convert_legacy_graph`` (a graph of tuples as task nodes), a node's ``dependencies`` and
``block_fusion``, ``Task``, ``TaskRef`` and ``Task.fuse``. Renamed or moved, they make
:func:`per_partition` raise ImportError or AttributeError when it is called (Dask is imported
inside it, so importing this module still costs nothing and nothing else of pipeflow fails):
drift at scale stops at its first pass. Changed in meaning, they may change the values or the
memory bound without an error: ``tests/execute/test_per_partition.py`` checks both (the values of
a task after each partition, Dask's way, and, on a real cluster, no partition a task of its
own). The way back if it breaks is Dask's way, ``delayed(fn)(partition, *args)`` for each of
``collection.to_delayed()``: the same values, each partition held longer (scale's notes).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any


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
