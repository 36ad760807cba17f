"""Parquet read as Dask reads it, without Dask: which row groups make each partition
(:func:`parquet_plan`), the columns, and the pandas types of what is read (text as
``string[pyarrow]``); and the output's prediction ids as an Arrow array. Used by :mod:`pipeflow.scoring.files` for the inputs scored in process (see
:mod:`pipeflow.scoring.batch`), whose output must be byte for byte the Dask path's; and which
output columns Parquet dictionary-encodes (:func:`dictionary_columns`). The partitions
themselves are read here too (:func:`read_partitions`): local files memory-mapped and hashed
as they are read, so a job reads its input once for its rows and its fingerprint.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from pipeflow.store.codecs import THREADED_PARQUET

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


def _arrow_to_pandas(table: Any, threads: bool = True) -> pd.DataFrame:
    """An Arrow table as Dask's Parquet reader makes it a pandas frame."""
    frame = table.to_pandas(types_mapper=_string_types, ignore_metadata=False, use_threads=threads)
    return _arrow_strings(frame)


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


def is_local_fs(fs: Any) -> bool:
    """Whether the fsspec filesystem ``fs`` is this machine's disk."""
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return bool({"file", "local"} & set(protocols))


def read_partitions(
    fs: Any,
    paths: Sequence[str],
    plan: Sequence[tuple[int, tuple[int, ...], int]],
    columns: Sequence[str],
    digests: dict[int, str] | None = None,
) -> Iterator[pd.DataFrame]:
    """The partitions of ``plan`` (:func:`parquet_plan`) of the Parquet files ``paths``, as
    pandas frames (:func:`_arrow_to_pandas`). A row group split in pieces is decoded a batch at
    a time (the first piece is scored while the next is decoded, instead of after the whole row
    group). A local file is memory-mapped (pyarrow reads it without a Python file object in
    between: half the CPU) and, with ``digests``, hashed on the way, in file order, in step with
    the rows read: when a file's last planned partition is out, ``digests[index]`` is the
    sha256 of its bytes, so the input is read once for both (what :meth:`Source.fingerprint`
    would compute)."""
    reader: _FileReader | None = None
    try:
        for index, groups, pieces in plan:
            if reader is None or reader.index != index:
                if reader is not None:
                    reader.finish(digests)
                reader = _FileReader(fs, paths[index], index, hashing=digests is not None)
            yield from reader.partitions(groups, pieces, columns)
        if reader is not None:
            reader.finish(digests)
            reader = None
    finally:
        if reader is not None:
            reader.close()


class _FileReader:
    """One Parquet file being read in plan order, and the running sha256 of its bytes (local
    files with ``hashing``)."""

    def __init__(self, fs: Any, path: str, index: int, *, hashing: bool):
        import hashlib

        import pyarrow as pa
        import pyarrow.parquet as pq

        self.index = index
        local = is_local_fs(fs)
        self.raw: Any = pa.memory_map(path) if local else fs.open(path, "rb")
        self.bytes: Any = self.raw.read_buffer() if local and hashing else None  # no copy
        # Arrow's thread pools only for a file worth them (see pipeflow.store.codecs.decode: a
        # process that started them can abort as it exits); pre-buffering a memory map starts
        # the I/O pool
        size = self.raw.size() if local else fs.size(path)
        self.threads = size >= THREADED_PARQUET
        self.file = pq.ParquetFile(self.raw, pre_buffer=self.threads)
        self.digest = hashlib.sha256() if self.bytes is not None else None
        self.hashed, self.done = 0, 0
        self.rows = self.file.metadata.num_rows

    def partitions(
        self, groups: tuple[int, ...], pieces: int, columns: Sequence[str]
    ) -> Iterator[pd.DataFrame]:
        import numpy as np
        import pyarrow as pa

        if pieces == 1 or not groups:
            table = self.file.read_row_groups(
                list(groups), columns=list(columns), use_threads=self.threads
            )
            self._advance(table.num_rows)
            yield _arrow_to_pandas(table, self.threads)
            return
        meta = self.file.metadata
        rows = sum(meta.row_group(g).num_rows for g in groups)
        bounds = np.linspace(0, rows, pieces + 1).astype(int)
        batches = self.file.iter_batches(
            batch_size=max(1, -(-rows // pieces)),
            row_groups=list(groups),
            columns=list(columns),
            use_threads=self.threads,
        )
        held: list[Any] = []
        have, schema = 0, None
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
            need = int(stop - start)
            while have < need:
                batch = next(batches)
                schema = batch.schema
                held.append(batch)
                have += batch.num_rows
            table = pa.Table.from_batches(held, schema=schema)
            rest = table.slice(need)
            held, have = rest.to_batches(), rest.num_rows
            self._advance(need)
            yield _arrow_to_pandas(table.slice(0, need), self.threads)

    def _advance(self, rows: int) -> None:
        """Hash the file up to the share of its bytes its rows read so far make."""
        self.done += rows
        if self.digest is not None and self.rows:
            self._hash_to(len(self.bytes) * min(self.done, self.rows) // self.rows)

    def _hash_to(self, end: int) -> None:
        view = memoryview(self.bytes)  # type: ignore[arg-type]
        while self.hashed < end:  # in slices: hashlib releases the GIL on each
            stop = min(end, self.hashed + (16 << 20))
            self.digest.update(view[self.hashed : stop])  # type: ignore[union-attr]
            self.hashed = stop

    def finish(self, digests: dict[int, str] | None) -> None:
        """Hash the rest of the file (its footer, row groups no partition read) and close it."""
        if self.digest is not None and digests is not None:
            self._hash_to(len(self.bytes))
            digests[self.index] = self.digest.hexdigest()
        self.close()

    def close(self) -> None:
        self.bytes = None
        self.raw.close()
