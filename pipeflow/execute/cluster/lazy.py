"""Dask collections, for callers that import no Dask: :func:`delayed` and :func:`compute` (Dask's
own), one dask array of row blocks already computed or on the cluster (:func:`array_from_blocks`,
``train``), a lazy dataframe of files (:func:`read_table`, batch scoring). Each imports Dask when
it is called. A function of each partition in the task that makes it is
:mod:`pipeflow.execute.cluster.task_spec`'s."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


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
