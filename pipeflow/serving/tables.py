"""Table bodies: Arrow IPC and Parquet, for callers who send tables.

``POST /v1/models/{name}/predict`` also takes a table whose columns are the features, as an Arrow
IPC stream (``Content-Type: application/vnd.apache.arrow.stream``), an Arrow IPC file
(``application/vnd.apache.arrow.file``) or Parquet (``application/vnd.apache.parquet``). The
answer is the same JSON as for a JSON body, a prediction per table row, in order.

Why: a JSON body of 1000 rows is parsed into 1000 dicts before its values are gathered back into
columns; a table's numeric columns go straight from the Arrow buffers into the model's float64
matrix (:meth:`pipeflow.registry.signature.Signature.check_table`), with the same checks and
flags. A table that is not clean (a column missing or extra, of another type, a NaN) is checked
row by row, so a problem is named by row and field as for JSON.

Limits, before anything large is built: the body's size (``--max-body-bytes``, as for JSON), and
the rows (``--max-rows``): a Parquet file's row count is read from its footer before any column
is decoded, an Arrow stream's batch by batch. A body pyarrow cannot read is a 400
``malformed_table`` naming the format. Parquet and IPC readers never execute code from the body
(pyarrow >= 14 reads no pickled extension types).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from pipeflow.errors import BadRequest

#: content type -> format
TABLE_TYPES = {
    "application/vnd.apache.arrow.stream": "Arrow IPC stream",
    "application/vnd.apache.arrow.file": "Arrow IPC file",
    "application/vnd.apache.parquet": "Parquet",
    "application/x-parquet": "Parquet",
}


def content_type(request: Any) -> str:
    return request.headers.get("content-type", "application/json").split(";")[0].strip().lower()


def read_table(body: bytes, ctype: str, max_rows: int) -> Any:
    """The body as a pyarrow Table; 400 when it is not the format ``ctype`` says, 413 over
    ``max_rows`` rows."""
    import pyarrow as pa

    kind = TABLE_TYPES[ctype]
    try:
        if kind == "Parquet":
            import pyarrow.parquet as pq

            handle = pq.ParquetFile(pa.BufferReader(body))
            _limit(handle.metadata.num_rows, max_rows)
            return handle.read()
        if kind == "Arrow IPC file":
            reader = pa.ipc.open_file(pa.BufferReader(body))
            batches = []
            rows = 0
            for i in range(reader.num_record_batches):
                batch = reader.get_batch(i)
                rows += batch.num_rows
                _limit(rows, max_rows)
                batches.append(batch)
            return pa.Table.from_batches(batches, schema=reader.schema)
        stream = pa.ipc.open_stream(pa.BufferReader(body))
        batches, rows = [], 0
        for batch in stream:
            rows += batch.num_rows
            _limit(rows, max_rows)
            batches.append(batch)
        return pa.Table.from_batches(batches, schema=stream.schema)
    except (pa.ArrowException, OSError, ValueError) as err:
        raise BadRequest(
            400, "malformed_table", f"the body is not a readable {kind}: {err}"[:500]
        ) from None


def _limit(rows: int, max_rows: int) -> None:
    if rows > max_rows:
        raise BadRequest(
            413, "too_large", f"{rows} rows or more in one request; the limit is {max_rows}"
        )


class TableRows(Sequence[Any]):
    """A table's rows as dicts, made only when something asks for them (the shadow, a
    ``--route-by field:``, a table that is not clean): its length is free."""

    def __init__(self, table: Any):
        self.table = table
        self._rows: list[dict[str, Any]] | None = None

    @property
    def rows(self) -> list[dict[str, Any]]:
        if self._rows is None:
            self._rows = self.table.to_pylist()
        return self._rows

    def __len__(self) -> int:
        return int(self.table.num_rows)

    def __getitem__(self, index: Any) -> Any:
        return self.rows[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.rows)
