"""The PostgreSQL backend of :class:`~pipeflow.store.metadata.MetadataDB`: a team's shared history.

``store: {metadata: postgresql://user@host/db}`` (or ``$PIPEFLOW_STORE__METADATA``); the
password comes from the environment (``PGPASSWORD``, ``~/.pgpass``), never the spec. Needs the
``pipeflow[postgres]`` extra (psycopg 3 and its pool).

Policy:

- **A pool, not a connection**: :class:`psycopg_pool.ConnectionPool` (1 to 4 connections,
  checked before use, so a connection the server dropped is replaced instead of failing a
  write). Connections are in autocommit; each ``write`` is one explicit transaction whose
  statements are pipelined (one round trip for a batch of stage records, not one per row).
- **Transient failures are retried, whole**: a dropped connection, a server restarting, a
  serialisation failure or a deadlock (two runs recording the same artifacts in another order)
  retries the transaction with backoff until ``retry_s`` has passed; then one line names the
  database and the cause. Retrying is safe because every write is idempotent (ON CONFLICT, see
  :mod:`pipeflow.store.metadata`): a commit whose acknowledgement was lost, applied again,
  changes nothing.
- **Schema on first use, under a lock**: creating or migrating the schema takes a transaction-level
  advisory lock, so N clients opening a new database at once create it once. Version 2 is the
  first PostgreSQL schema; each later version's step is what the contract says it added
  (:func:`_migration`). Timestamps are
  ``DOUBLE PRECISION`` (SQLite's REAL is 8 bytes; PostgreSQL's REAL is 4), no foreign keys (as
  in SQLite, where they are off: records arrive in batches, not in key order).
- Rows read like ``sqlite3.Row`` (:class:`Row`), so every reader works on both databases.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache
from typing import Any, TypeVar

from pipeflow.errors import StoreError, UsageError
from pipeflow.store.metadata import (
    SCHEMA_VERSION,
    TABLES,
    MetadataDB,
    redact,
    same_sql,
    schema,
)
from pipeflow.store.schema import ADDED_COLUMNS, added_tables

__all__ = ["PostgresMetadata", "Row"]

T = TypeVar("T")

_LOCK_KEY = 7_231_640_011  # pg_advisory_xact_lock key: "pipeflow schema"


_FIRST_VERSION = 2  # the first schema PostgreSQL databases were created with


def _migration(version: int) -> list[str]:
    """The statements that bring a database of the version before ``version`` up to it: the
    contract's new tables and columns (:func:`~pipeflow.store.metadata.added_tables`)."""
    return [
        *added_tables(version, real="DOUBLE PRECISION", bigint="BIGINT"),
        *(
            f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {type_}"
            for table, column, type_ in ADDED_COLUMNS.get(version, [])
        ),
    ]


class Row:
    """One result row: ``row["col"]``, ``row[0]``, ``row.keys()``, ``dict(row)``, unpacking."""

    __slots__ = ("_index", "_values")

    def __init__(self, index: dict[str, int], values: tuple[Any, ...]):
        self._index, self._values = index, values

    def __getitem__(self, key: str | int) -> Any:
        if isinstance(key, str):
            return self._values[self._index[key]]
        return self._values[key]

    def keys(self) -> list[str]:
        return list(self._index)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Row) and (self._index, self._values) == (
            other._index,
            other._values,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Row({dict(zip(self._index, self._values, strict=True))!r})"


def _row_factory(cursor: Any) -> Callable[[Any], Row]:
    index = {d.name: i for i, d in enumerate(cursor.description or ())}
    return lambda values: Row(index, tuple(values))


@lru_cache(maxsize=256)
def _pg(sql: str) -> str:
    """The contract's ``?`` placeholders as psycopg's ``%s``."""
    return sql.replace("?", "%s")


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0].strip()


class PostgresMetadata(MetadataDB):
    """The run history in a PostgreSQL database (see the module docstring)."""

    def __init__(self, url: str, *, retry_s: float = 60.0, max_connections: int = 4):
        try:
            import psycopg
            from psycopg_pool import ConnectionPool
        except ImportError:
            raise UsageError(
                f"metadata database {redact(url)} is PostgreSQL, which needs psycopg: "
                "pip install 'pipeflow[postgres]'"
            ) from None
        self.url = url
        self.location = redact(url)
        self.retry_s = retry_s
        self._psycopg = psycopg
        self._closed = False
        self._lock = threading.Lock()
        kwargs = {
            "autocommit": True,
            "row_factory": _row_factory,
            "connect_timeout": 10,
            "application_name": "pipeflow",
        }
        try:  # once directly, so a wrong URL says why at once (a pool would retry, then time out)
            with psycopg.connect(url, **kwargs) as conn:  # type: ignore[arg-type]
                self._init(conn)
        except psycopg.Error as err:
            raise StoreError(
                f"cannot open metadata database {self.location}: {_first_line(err)}"
            ) from None
        self._pool = ConnectionPool(
            url,
            kwargs=kwargs,
            min_size=1,
            max_size=max_connections,
            check=ConnectionPool.check_connection,
            name="pipeflow-metadata",
            open=False,
            timeout=10,
        )
        self._pool.open(wait=False)

    # -- schema ---------------------------------------------------------------------------------
    def _init(self, conn: Any) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            exists = conn.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()[0]
            if not exists:
                conn.execute(schema(real="DOUBLE PRECISION", bigint="BIGINT"))
                conn.execute(
                    "INSERT INTO meta VALUES ('schema_version', %s) ON CONFLICT DO NOTHING",
                    (str(SCHEMA_VERSION),),
                )
                return
            found = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = int(found[0]) if found else _FIRST_VERSION
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"metadata database {self.location} has schema version {version}, newer "
                    f"than this pipeflow understands ({SCHEMA_VERSION}): upgrade pipeflow"
                )
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _migration(step):
                    conn.execute(statement)
            if version < SCHEMA_VERSION:
                conn.execute(
                    "UPDATE meta SET value = %s WHERE key = 'schema_version'",
                    (str(SCHEMA_VERSION),),
                )

    # -- the backend primitives -----------------------------------------------------------------
    def _retry(self, fn: Callable[[Any], T]) -> T:
        psycopg = self._psycopg
        deadline = time.monotonic() + self.retry_s
        delay = 0.02
        while True:
            if self._closed:
                raise StoreError(f"metadata database {self.location}: closed")
            try:
                with self._pool.connection() as conn:
                    return fn(conn)
            except psycopg.OperationalError as err:
                # dropped connections, a restarting server, serialisation failures, deadlocks
                # and pool timeouts are all OperationalError: transient, retried whole
                if time.monotonic() > deadline:
                    raise StoreError(
                        f"metadata database {self.location}: {_first_line(err)}"
                        f" (still failing after {self.retry_s:.0f} s of retries)"
                    ) from None
                time.sleep(delay * (1 + random.random()))  # noqa: S311 (jitter, not crypto)
                delay = min(delay * 2, 1.0)
            except psycopg.Error as err:
                raise StoreError(f"metadata database {self.location}: {_first_line(err)}") from None

    def write(self, statements: Iterable[tuple[str, tuple]]) -> None:
        batch = [(_pg(sql), args) for sql, args in statements]
        if not batch:
            return

        def tx(conn: Any) -> None:
            with conn.transaction(), conn.pipeline():
                cur = conn.cursor()
                for sql, rows in same_sql(batch):
                    if len(rows) == 1:
                        cur.execute(sql, rows[0])
                    else:  # parsed once, the rows pipelined
                        cur.executemany(sql, rows)

        self._retry(tx)

    def query(self, sql: str, args: tuple = ()) -> list[Row]:
        statement = _pg(sql)
        return self._retry(lambda conn: conn.execute(statement, args).fetchall())

    def json_text(self, column: str, key: str) -> str:
        return f"({column}::jsonb ->> '{key}')"

    def integrity_check(self) -> str:
        """Every table of the schema there, and every index of ours valid (an index left invalid
        by an interrupted ``CREATE INDEX CONCURRENTLY`` would silently miss rows)."""
        present = {
            r[0]
            for r in self.query(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = current_schema()"
            )
        }
        problems = [f"table {t} is missing" for t in ("meta", *TABLES) if t not in present]
        invalid = self.query(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND NOT (i.indisvalid AND i.indisready)"
        )
        problems += [f"index {r[0]} is invalid" for r in invalid]
        return "\n".join(problems) or "ok"

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._pool.close()
