"""Parquet read as Dask reads it, without Dask: which row groups make each partition
(:func:`parquet_plan`), the columns, and the pandas types of what is read (text as
``string[pyarrow]``); and the output's prediction ids as an Arrow array. Used by :mod:`pipeflow.scoring.files` for the inputs scored in process (see
:mod:`pipeflow.scoring.batch`), whose output must be byte for byte the Dask path's; and which
output columns Parquet dictionary-encodes (:func:`dictionary_columns`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


def parquet_plan(
    files: Sequence[Sequence[int]], partition_rows: int
) -> list[tuple[int, tuple[int, ...], int]]:
    """The partitions Dask makes of Parquet files whose row groups hold ``files[i]`` rows, as
    :meth:`Source.frame` asks it: ``(file, row groups, pieces)``, each read together then split
    into ``pieces`` near-equal parts (``dask.dataframe``'s ``split_evenly``).

    A row group of ``partition_rows`` or more: one partition per row group, and if that makes
    fewer than 2/3 of the partitions wanted, Dask's repartition to more (every row group in as
    many pieces, the last one taking the remainder). Smaller row groups: grouped by ``round(
    partition_rows / largest)`` within each file. No rows at all: the first file's first row
    group (or its schema), one empty partition."""
    groups = [n for f in files for n in f]
    largest = max(groups, default=0)
    if largest >= partition_rows or largest == 0:
        units = [(i, (g,)) for i, f in enumerate(files) for g in range(len(f))]
        pieces = [1] * len(units)
        wanted = math.ceil(sum(groups) / partition_rows)
        if units and wanted > len(units) * 1.5:
            div, mod = divmod(wanted, len(units))
            pieces = [div] * len(units)
            pieces[-1] += mod
        if not units:
            return [(0, (), 1)]
        return [(i, g, k) for (i, g), k in zip(units, pieces, strict=True)]
    per_part = max(1, round(partition_rows / largest))
    return [
        (i, tuple(range(start, min(start + per_part, len(f)))), 1)
        for i, f in enumerate(files)
        for start in range(0, len(f), per_part)
    ]


def _parquet_columns(fs: Any, path: str) -> list[str]:
    """A Parquet file's columns as pandas (and Dask) read them: its index columns left out."""
    import json

    import pyarrow.parquet as pq

    with fs.open(path, "rb") as fh:
        schema = pq.ParquetFile(fh).schema_arrow
    pandas_meta = json.loads((schema.metadata or {}).get(b"pandas", b"{}") or b"{}")
    index = {c for c in pandas_meta.get("index_columns", []) if isinstance(c, str)}
    return [n for n in schema.names if n not in index]


def _string_types(dtype: Any) -> Any:
    """The pandas type Dask reads Arrow strings, dates and decimals as (its ``convert-string``
    default): strings as ``string[pyarrow]``, the others as Arrow types."""
    import pandas as pd
    import pyarrow as pa

    if dtype in (pa.string(), pa.large_string()):
        return pd.StringDtype("pyarrow")
    if dtype in (pa.date32(), pa.date64()) or pa.types.is_decimal(dtype):
        return pd.ArrowDtype(dtype)
    return None


def _arrow_to_pandas(table: Any) -> pd.DataFrame:
    """An Arrow table as Dask's Parquet reader makes it a pandas frame."""
    return _arrow_strings(table.to_pandas(types_mapper=_string_types, ignore_metadata=False))


def _arrow_strings(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns as ``string[pyarrow]``, as Dask leaves every partition it reads."""
    import pandas as pd

    arrow = pd.StringDtype("pyarrow")
    text = {
        c: arrow
        for c, t in frame.dtypes.items()
        if pd.api.types.is_string_dtype(t) and t != arrow and not isinstance(t, pd.ArrowDtype)
    }
    return frame.astype(text) if text else frame


def _ids(batch_id: str, start: int, n: int) -> Any:
    """``f"{batch_id}-{i}"`` for ``i`` in ``start .. start + n - 1``, as an Arrow string array
    whose bytes are written by numpy (a million ids in ~10 ms, a tenth of casting the numbers to
    strings and joining them in Arrow). The numbers are consecutive, so the ids of each digit
    count fill one contiguous stretch of the data buffer."""
    import numpy as np
    import pyarrow as pa

    prefix = np.frombuffer(f"{batch_id}-".encode(), dtype=np.uint8)
    offsets = np.zeros(n + 1, dtype=np.int32)  # a partition's ids stay far below 2 GiB
    pieces, at, low = [], 0, start
    while low < start + n:
        digits = len(str(low))
        high = min(start + n, 10**digits)  # the numbers of this many digits
        numbers = np.arange(low, high, dtype=np.int64)
        scale = 10 ** np.arange(digits - 1, -1, -1, dtype=np.int64)
        block = np.empty((len(numbers), len(prefix) + digits), dtype=np.uint8)
        block[:, : len(prefix)] = prefix
        block[:, len(prefix) :] = (numbers[:, None] // scale) % 10 + ord("0")
        pieces.append(block.reshape(-1))
        offsets[at + 1 : at + len(numbers) + 1] = offsets[at] + block.shape[1] * np.arange(
            1, len(numbers) + 1, dtype=np.int32
        )
        at, low = at + len(numbers), high
    data = np.concatenate(pieces) if pieces else np.empty(0, dtype=np.uint8)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


def dictionary_columns(schema: Any) -> list[str]:
    """The output columns worth a Parquet dictionary: labels and passed-through text. The ids
    are all distinct and probabilities (floats) nearly so, for which a dictionary only costs
    time (0.23 s of CPU per million rows) and space (16% of the file)."""
    import pyarrow as pa

    return [
        field.name
        for field in schema
        if field.name != "prediction_id" and not pa.types.is_floating(field.type)
    ]
