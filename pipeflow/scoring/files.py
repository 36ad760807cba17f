"""The files of a batch job: the input (CSV, ``.csv.gz``, Parquet, a directory or glob) read in
partitions with its fingerprint, and the output written in input order under a temporary name
and renamed when complete. The policy is in :mod:`pipeflow.scoring.batch`'s docstring.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import posixpath
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from pipeflow.errors import NonFiniteInput, PipeflowError, UsageError
from pipeflow.execute import cluster
from pipeflow.scoring.arrow import (
    _arrow_strings,
    _ids,
    _parquet_columns,
    is_local_fs,
    parquet_plan,
    read_partitions,
)

if TYPE_CHECKING:
    import pandas as pd


_SAMPLE_BYTES = 256 * 1024


# ------------------------------------------------------------------------------------- input


class Source:
    """The input: its format, files, columns, fingerprint and Dask dataframe."""

    def __init__(self, url: str, fs: Any, paths: list[str], fmt: str, options: dict[str, Any]):
        self.url, self.fs, self.paths, self.format, self.options = url, fs, paths, fmt, options
        self.compressed = fmt == "csv" and any(p.endswith(".gz") for p in paths)
        self._columns: list[str] | None = None
        self._digests: dict[int, str] = {}  # sha256 per file, of those read and hashed at once

    @classmethod
    def open(cls, url: str, options: dict[str, Any]) -> Source:
        url, fs, path = _filesystem(url, options, "input")
        lower = path.lower().rstrip("/")
        if any(ch in path for ch in "*?["):
            paths = sorted(fs.glob(path))
            fmt = "csv" if all(_is_csv(p) for p in paths) else "parquet"
        elif fs.isdir(path):
            paths = sorted(
                p
                for p in fs.find(path)
                if not posixpath.basename(p).startswith((".", "_"))  # as Dask skips them
            )
            fmt = "csv" if paths and all(_is_csv(p) for p in paths) else "parquet"
        elif fs.isfile(path):
            paths = [path]
            if _is_csv(lower):
                fmt = "csv"
            elif lower.endswith((".parquet", ".pq")):
                fmt = "parquet"
            else:
                raise UsageError(
                    f"input {url}: unknown format; expected .csv, .csv.gz, .parquet, .pq "
                    "or a directory of Parquet files"
                )
        else:
            raise UsageError(f"input {url} not found")
        if not paths:
            raise UsageError(f"input {url}: no files found")
        return cls(url, fs, paths, fmt, options)

    @property
    def target(self) -> Any:
        """What dask reads: the one file, or the list of files (in sorted order)."""
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        urls = [p if is_local_fs(self.fs) else f"{protocol}://{p}" for p in self.paths]
        return urls[0] if len(urls) == 1 else urls

    @property
    def columns(self) -> list[str]:
        """The input's columns, read as Dask reads them (a CSV's first rows, with the errors
        they raise; a Parquet file's schema), without importing Dask."""
        if self._columns is None:
            try:
                if self.format == "csv":
                    self._columns = [str(c) for c in self._csv_head().columns]
                elif self._partitioned():
                    self._columns = [str(c) for c in self._read().columns]
                else:
                    self._columns = _parquet_columns(self.fs, self.paths[0])
            except (ValueError, OSError) as err:  # pandas', pyarrow's, codecs' parse errors
                raise UsageError(
                    f"input {self.url}: cannot read it as {'CSV' if self.format == 'csv' else 'Parquet'}: {_reason(err)}"
                ) from None
        return self._columns

    def _csv_head(self) -> pd.DataFrame:
        """The first rows of the first file, parsed as ``dask.dataframe.read_csv`` parses its
        sample (the first 256,000 bytes, cut at the last line end, 10 rows)."""
        import io

        import pandas as pd

        with self.fs.open(
            self.paths[0], "rb", **({"compression": "gzip"} if self.compressed else {})
        ) as fh:
            sample = fh.read(256_000)
        if len(sample) == 256_000 and b"\n" in sample:
            sample = sample[: sample.rindex(b"\n") + 1]
        return pd.read_csv(io.BytesIO(sample), nrows=10)

    def _partitioned(self) -> bool:
        """A directory of hive-style partitions (``key=value/``), whose keys Dask adds as
        columns: read by Dask only."""
        return any("=" in part for p in self.paths for part in p.split("/")[:-1])

    @property
    def hashed_while_read(self) -> bool:
        """Whether :meth:`parquet_parts` hashes the files as it reads them: local Parquet."""
        return self.format == "parquet" and is_local_fs(self.fs)

    def in_process(self, partition_rows: int) -> bool:
        """Whether this process reads and scores the input itself, with no Dask graph: Parquet
        (streamed by row groups), or a CSV that is one partition anyway (one file of at most
        one block, or a ``.csv.gz``)."""
        if self.format == "parquet":
            return not self._partitioned()
        if len(self.paths) != 1:
            return False
        if self.compressed:
            return True
        return bool(self.fs.size(self.paths[0]) <= (self._blocksize(partition_rows) or 0))

    def read_whole_csv(
        self, features: Sequence[str], id_column: str | None, record: dict[str, Any]
    ) -> pd.DataFrame:
        """The one-partition CSV (:meth:`in_process`), read as Dask reads a block: the needed
        columns with the signature's types, text as Arrow strings."""
        import pandas as pd

        wanted = list(dict.fromkeys([*([id_column] if id_column else []), *features]))
        dtypes = _csv_dtypes(record, id_column)
        try:
            with self.fs.open(self.paths[0], "rb") as fh:
                frame = pd.read_csv(
                    fh,
                    usecols=wanted,
                    dtype=dtypes,
                    compression="gzip" if self.compressed else None,
                )
        except ValueError as err:
            raise UsageError(
                f"input {self.url}: {self._not_a_number(dtypes) or _reason(err)}"
            ) from None
        return _arrow_strings(frame)[wanted]

    def parquet_parts(
        self, features: Sequence[str], id_column: str | None, partition_rows: int
    ) -> Iterator[pd.DataFrame]:
        """The Parquet input's partitions, read here as :meth:`frame` has Dask read them (the
        same rows in each, so the output's row groups are the same), as :func:`parquet_plan`
        says (:func:`read_partitions`). Local files are hashed as they are read: once they all
        are, :meth:`fingerprint` is ready without reading them again."""
        wanted = list(dict.fromkeys([*([id_column] if id_column else []), *features]))
        plan = parquet_plan([self._file_row_groups(p) for p in self.paths], partition_rows)
        self._digests = {}
        return read_partitions(self.fs, self.paths, plan, wanted, self._digests)

    def _file_row_groups(self, path: str) -> list[int]:
        import pyarrow.parquet as pq

        with self.fs.open(path, "rb") as fh:
            meta = pq.ParquetFile(fh).metadata
            return [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]

    def _read(self, **kwargs: Any) -> Any:
        if self.format == "parquet":
            return cluster.read_table(
                "parquet", self.target, storage_options=self.options or None, **kwargs
            )
        blocksize = kwargs.pop("blocksize", "64MB")
        return cluster.read_table(
            "csv",
            self.target,
            blocksize=None if self.compressed else blocksize,
            storage_options=self.options or None,
            **({"compression": "gzip"} if self.compressed else {}),
            **kwargs,
        )

    def frame(
        self,
        features: Sequence[str],
        id_column: str | None,
        record: dict[str, Any],
        partition_rows: int,
    ) -> Any:
        """The Dask dataframe of the needed columns, in partitions of about partition_rows."""
        wanted = list(dict.fromkeys([*([id_column] if id_column else []), *features]))
        if self.format == "csv":
            dtypes = _csv_dtypes(record, id_column)
            try:  # Dask reads a sample with these types now, to learn the columns' types
                ddf = self._read(
                    blocksize=self._blocksize(partition_rows), usecols=wanted, dtype=dtypes
                )
            except ValueError as err:
                raise UsageError(
                    f"input {self.url}: {self._not_a_number(dtypes) or _reason(err)}"
                ) from None
            return ddf[wanted]
        groups = self._row_groups()
        largest = max(groups, default=0)
        if largest >= partition_rows:  # one row group a partition, split further after reading
            ddf = self._read(columns=wanted, split_row_groups=True)
            wanted_parts = math.ceil(sum(groups) / partition_rows)
            if wanted_parts > ddf.npartitions * 1.5:
                ddf = ddf.repartition(npartitions=wanted_parts)
            return ddf
        per_part = max(1, round(partition_rows / largest)) if largest else True
        return self._read(columns=wanted, split_row_groups=per_part)

    def _not_a_number(self, dtypes: dict[str, Any]) -> str | None:
        """Where the first file's opening rows hold text in a column the model reads as numbers."""
        import pandas as pd

        numbers = [c for c, t in dtypes.items() if t == "float64"]
        try:
            with self.fs.open(self.paths[0], "rb") as fh:
                head = pd.read_csv(
                    fh,
                    usecols=lambda c: c in numbers,
                    dtype=str,
                    nrows=100_000,
                    compression="gzip" if self.compressed else None,
                )
        except (ValueError, OSError):
            return None
        for column in head.columns:
            text = head[column]
            bad = pd.to_numeric(text, errors="coerce").isna() & text.notna()
            if bad.any():
                row = int(bad.to_numpy().argmax())
                return (
                    f"column '{column}' holds {text.iloc[row]!r} on line {row + 2} of "
                    f"{posixpath.basename(self.paths[0])}, where the model reads a number"
                )
        return None

    def first_non_finite(self, column: str) -> str:
        """Where the input first holds ±inf in ``column``: ``on line N of FILE`` for CSV, ``in row
        N of FILE`` for Parquet; "" if it cannot be found again. Read only when a job was refused
        for it, one column at a time."""
        import numpy as np
        import pandas as pd

        for path in self.paths:
            name = posixpath.basename(path)
            try:
                with self.fs.open(path, "rb") as fh:
                    if self.format == "parquet":
                        values = pd.read_parquet(fh, columns=[column])[column].to_numpy()
                        bad = np.isinf(pd.to_numeric(values, errors="coerce"))
                        if bad.any():
                            return f"in row {int(bad.argmax()) + 1} of {name}"
                        continue
                    compression = "gzip" if path.endswith(".gz") else None
                    chunks = pd.read_csv(
                        fh,
                        usecols=[column],
                        dtype={column: "float64"},
                        chunksize=1_000_000,
                        compression=compression,
                    )
                    seen = 0
                    for chunk in chunks:
                        bad = np.isinf(chunk[column].to_numpy())
                        if bad.any():
                            return f"on line {seen + int(bad.argmax()) + 2} of {name}"
                        seen += len(chunk)
            except (ValueError, OSError):
                return ""
        return ""

    def _blocksize(self, partition_rows: int) -> int | None:
        if self.compressed:
            return None
        with self.fs.open(self.paths[0], "rb") as fh:
            sample = fh.read(_SAMPLE_BYTES)
        lines = sample.count(b"\n")
        per_row = len(sample) / max(1, lines)
        return max(1024, int(per_row * partition_rows))

    def _row_groups(self) -> list[int]:
        """Rows of every row group of every file (from the footers only)."""
        import pyarrow.parquet as pq

        rows = []
        for path in self.paths:
            with self.fs.open(path, "rb") as fh:
                meta = pq.ParquetFile(fh).metadata
                rows += [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        return rows

    def fingerprint(self, stop: threading.Event | None = None) -> str:
        """sha256 of the file's bytes; of several files, of their sorted sha256s (those
        :meth:`parquet_parts` hashed as it read them are not read again)."""
        done = self._digests
        digests = [done.get(i) or _sha256(self.fs, p, stop) for i, p in enumerate(self.paths)]
        if len(digests) == 1:
            return digests[0]
        return hashlib.sha256("\n".join(sorted(digests)).encode()).hexdigest()


def _reason(err: BaseException) -> str:
    """The library's own words, on one line (Dask wraps them in "An error occurred while
    calling the read_csv method ... Original Message: ...")."""
    text = str(err)
    if "Original Message:" in text:
        text = text.split("Original Message:", 1)[1]
    text = " ".join(text.split()) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _is_csv(path: str) -> bool:
    return path.lower().endswith((".csv", ".csv.gz"))


def _csv_dtypes(record: dict[str, Any], id_column: str | None) -> dict[str, Any]:
    """Types for CSV columns from the signature (see the module docstring)."""
    out: dict[str, Any] = {}
    for feature in (record.get("signature") or {}).get("features") or []:
        dtype = str(feature.get("dtype", ""))
        role = feature.get("role")
        if dtype.startswith(("float", "int", "uint")) or (role == "numeric" and not dtype):
            out[feature["name"]] = "float64"
        elif role in ("categorical", "text") and not dtype.startswith(("bool", "category")):
            out[feature["name"]] = str
    if id_column is not None and id_column not in out:
        out[id_column] = str
    group = record.get("mitigation") or {}  # the group column of per-group thresholds
    if group.get("attribute") not in out and group.get("dtype") in ("number", "string"):
        out[group["attribute"]] = "float64" if group["dtype"] == "number" else str
    return out


def _sha256(fs: Any, path: str, stop: threading.Event | None = None) -> str:
    digest = hashlib.sha256()
    with fs.open(path, "rb") as fh:
        while chunk := fh.read(8 * 1024 * 1024):
            if stop is not None and stop.is_set():
                return ""
            digest.update(chunk)
    return digest.hexdigest()


def with_hints(missing: Sequence[str], columns: Sequence[str]) -> str:
    import difflib

    named = []
    for column in missing:
        close = difflib.get_close_matches(column, columns, n=1)
        named.append(f"{column} (did you mean {close[0]}?)" if close else column)
    return ", ".join(named)


def listing(columns: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(columns[:limit])
    return shown + (f", ... ({len(columns)} in all)" if len(columns) > limit else "")


# ------------------------------------------------------------------------------------ output


def output_format(path: str) -> str:
    lower = path.lower()
    if lower.endswith((".parquet", ".pq")):
        return "parquet"
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith(".csv.gz"):
        return "csv.gz"
    raise UsageError(f"output {path}: unknown format; expected .parquet, .pq, .csv or .csv.gz")


def _filesystem(url: str, options: dict[str, Any], what: str) -> tuple[str, Any, str]:
    """(URL, fsspec filesystem, path) of an input or output; a local path made absolute."""
    import fsspec

    if "://" not in url:
        url = os.path.abspath(url)
    try:
        fs, path = fsspec.core.url_to_fs(url, **options)
    except (ImportError, ValueError) as err:
        raise UsageError(f"cannot open {what} {url!r}: {err}") from None
    return url, fs, path


def output_target(url: str, options: dict[str, Any], source: Source) -> tuple[Any, str]:
    url, fs, path = _filesystem(url, options, "output")
    if path in source.paths or path.rstrip("/") == source.url.rstrip("/"):
        raise UsageError(f"output {url} is the input: choose another output path")
    if fs.isdir(path):
        raise UsageError(f"output {url} is a directory: give a file name")
    parent = posixpath.dirname(path) if "/" in path else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    return fs, path


def write_output(
    parts: Iterator[pd.DataFrame],
    fs: Any,
    path: str,
    fmt: str,
    batch_id: str,
    *,
    source: str,
    overlap: bool = False,
) -> tuple[int, str]:
    """Write the scored partitions in order to a temporary file, then rename it to ``path``.
    With ``overlap``, the ids, the Arrow conversion and the writing run on a writer thread
    while this thread produces the next partition (at most two waiting)."""
    folder, base = posixpath.split(path)
    tmp = posixpath.join(folder, f".{base}.{batch_id}.tmp")
    rows = 0
    gzip = fmt == "csv.gz"
    try:
        with fs.open(tmp, "wb", **({"compression": "gzip"} if gzip else {})) as raw:
            # the bytes are hashed as they are written, instead of reading the file back; a
            # gzip stream is hashed after, from the file (its compressed bytes are the file's)
            fh = raw if gzip else _HashingSink(raw)
            writer = _TableWriter(fh, fmt, batch_id, background=overlap)
            try:
                for frame in parts:
                    writer.write(frame, rows)
                    rows += len(frame)
                writer.close()
            except NonFiniteInput:
                writer.abandon()
                raise  # bad input: the job says where (predict_file)
            except Exception as err:
                writer.abandon()
                message = " ".join(str(err).split())  # one line: the CLI prints it as is
                if "could not convert string to float" in message:
                    message += " (a numeric feature holds text: CSV features are read with the types of the model's signature)"
                raise PipeflowError(
                    f"batch prediction of {source} failed, nothing written: "
                    f"{type(err).__name__}: {message}"
                ) from err
            except BaseException:
                writer.abandon()
                raise
        digest = _sha256(fs, tmp) if gzip else fh.hexdigest()  # type: ignore[union-attr]
        fs.mv(tmp, path)
    except BaseException:
        if fs.exists(tmp):
            fs.rm(tmp)
        raise
    finally:
        if hasattr(parts, "close"):  # stop computing partitions nobody will write
            parts.close()
    return rows, digest


def _with_ids(frame: pd.DataFrame, batch_id: str, offset: int) -> Any:
    import pyarrow as pa

    table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    return table.add_column(0, "prediction_id", _ids(batch_id, offset, len(frame)))


class _HashingSink:
    """A write-only file that passes its bytes on and hashes them (sha256) on the way."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.digest = hashlib.sha256()

    def write(self, data: Any) -> int:
        self.digest.update(data)
        return int(self.inner.write(data))

    def tell(self) -> int:
        return int(self.inner.tell())

    def flush(self) -> None:
        self.inner.flush()

    @property
    def closed(self) -> bool:
        return bool(self.inner.closed)

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    def close(self) -> None:  # the writers close their sink; the file is closed by its owner
        self.inner.flush()

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


class _TableWriter:
    """Scored frames, with their ids, to one Parquet or CSV stream, every table cast to the first
    one's schema; on this thread, or on a writer thread of its own (``background``)."""

    def __init__(self, sink: Any, fmt: str, batch_id: str, *, background: bool = False):
        self.sink, self.format, self.batch_id = sink, fmt, batch_id
        self.schema: Any = None
        self.writer: Any = None
        self.pool: Any = None
        self.pending: Any = None
        if background:
            from collections import deque
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(1, thread_name_prefix="pipeflow-batch-write")
            self.pending = deque()

    def write(self, frame: pd.DataFrame, offset: int) -> None:
        """Write ``frame``, its rows numbered from ``offset``; in the background, raise the
        first error the writer thread met (the next write or :meth:`close` does)."""
        if self.pool is None:
            self._write(frame, offset)
            return
        self.pending.append(self.pool.submit(self._write, frame, offset))
        while len(self.pending) > 2 or (self.pending and self.pending[0].done()):
            self.pending.popleft().result()

    def _write(self, frame: pd.DataFrame, offset: int) -> None:
        self._write_table(_with_ids(frame, self.batch_id, offset))

    def _write_table(self, table: Any) -> None:
        if self.writer is None:
            self.schema = table.schema
            self.writer = self._open(table.schema)
        elif table.schema != self.schema:
            table = table.cast(self.schema)
        if table.num_rows:
            self.writer.write_table(table)

    def _open(self, schema: Any) -> Any:
        if self.format == "parquet":
            import pyarrow.parquet as pq

            from pipeflow.scoring.arrow import dictionary_columns

            return pq.ParquetWriter(self.sink, schema, use_dictionary=dictionary_columns(schema))
        import pyarrow.csv as pcsv

        return pcsv.CSVWriter(
            self.sink, schema, write_options=pcsv.WriteOptions(quoting_style="needed")
        )

    def _drain(self, cancel: bool) -> None:
        """Wait for the writer thread's queued work (or cancel it) and end the thread."""
        if self.pool is None:
            return
        try:
            while self.pending:
                future = self.pending.popleft()
                if cancel:
                    future.cancel()
                else:
                    future.result()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=cancel)
            self.pool = None

    def abandon(self) -> None:
        """Close without caring for the result (the temporary file is about to be removed)."""
        with contextlib.suppress(Exception):
            self._drain(cancel=True)
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()
            self.writer = None

    def close(self) -> None:
        self._drain(cancel=False)
        if self.writer is None:  # no partition at all: still a valid, empty file
            import pyarrow as pa

            self.writer = self._open(pa.schema([("prediction_id", pa.string())]))
        self.writer.close()
