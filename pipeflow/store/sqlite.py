"""The SQLite backend of :class:`~pipeflow.store.metadata.MetadataDB`: one file, the default.

Policy:

- WAL journal, ``synchronous=NORMAL``: readers never block the writer, and a crash loses at most
  the last transactions, never the file's integrity.
- Every write is one ``BEGIN IMMEDIATE`` transaction, so two processes recording runs into the
  same file serialise instead of deadlocking; a busy database is waited for (busy timeout) and
  retried, so "database is locked" does not reach the user while another writer makes progress.
- A full disk is said as one ("no space left on the device holding FOLDER"), not as SQLite's
  "disk I/O error" (:mod:`pipeflow.store.space`).
- The schema is created in one transaction on first use; older files are upgraded in place, one
  step per version (:meth:`SQLiteMetadata._migrate`).
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from pipeflow.errors import StoreError
from pipeflow.store import space
from pipeflow.store.metadata import (
    SCHEMA_VERSION,
    MetadataDB,
    same_sql,
    schema,
)
from pipeflow.store.schema import ADDED_COLUMNS, added_tables

__all__ = ["SQLiteMetadata"]

T = TypeVar("T")


class SQLiteMetadata(MetadataDB):
    """One SQLite file; safe to share between threads of one process and between processes."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_s: float = 60.0):
        self.path = Path(path)
        self.location = str(self.path)
        self.busy_timeout_s = busy_timeout_s
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                str(self.path),
                timeout=busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,
            )
        except (OSError, sqlite3.Error) as err:
            raise StoreError(
                f"cannot open metadata database {self.path}: {space.explain(err, self.path.parent)}"
            ) from None
        self._lock = threading.RLock()
        self._conn.row_factory = sqlite3.Row
        try:
            self._retry(self._init)
        except BaseException:
            self._conn.close()
            raise

    def _init(self) -> None:
        c = self._conn
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=NORMAL")
        c.execute("PRAGMA foreign_keys=OFF")
        row = c.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name='meta'"
        ).fetchone()
        if row is None:
            # executescript commits any open transaction first, so the script carries its own.
            c.executescript(
                "BEGIN IMMEDIATE;"
                + schema(real="REAL", bigint="INTEGER")
                + f"INSERT OR IGNORE INTO meta VALUES ('schema_version', '{SCHEMA_VERSION}');"
                + "COMMIT;"
            )
            return
        found = c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = int(found[0]) if found else 1
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"metadata database {self.path} has schema version {version}, newer than this "
                f"pipeflow understands ({SCHEMA_VERSION}): upgrade pipeflow"
            )
        if version < SCHEMA_VERSION:
            self._migrate(version)

    def _migrate(self, version: int) -> None:
        """Bring an older database up to ``SCHEMA_VERSION``, one step per version, in one
        transaction (a concurrent opener waits, then finds the work done)."""
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            found = c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = int(found[0]) if found else 1
            if version < 2:  # 2: stage_runs.seq (DAG position) and an index by stage
                cols = {row[1] for row in c.execute("PRAGMA table_info(stage_runs)")}
                if "seq" not in cols:
                    c.execute("ALTER TABLE stage_runs ADD COLUMN seq INTEGER")
                c.execute("CREATE INDEX IF NOT EXISTS stage_runs_by_stage ON stage_runs (stage)")
            for step in range(max(version, 2) + 1, SCHEMA_VERSION + 1):
                # 3: collected; 4: metrics, logged params, tags (tables) and runs.note (a column)
                for statement in added_tables(step, real="REAL", bigint="INTEGER"):
                    c.execute(statement)
                for table, column, type_ in ADDED_COLUMNS.get(step, []):
                    cols = {row[1] for row in c.execute(f"PRAGMA table_info({table})")}
                    if column not in cols:
                        c.execute(f"ALTER TABLE {table} ADD COLUMN {column} {type_}")
            c.execute(
                "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- transactions ----------------------------------------------------------------------
    def _retry(self, fn: Callable[[], T]) -> T:
        deadline = time.monotonic() + self.busy_timeout_s
        delay = 0.005
        while True:
            try:
                with self._lock:
                    return fn()
            except sqlite3.OperationalError as err:
                text = str(err)
                if ("locked" not in text and "busy" not in text) or time.monotonic() > deadline:
                    raise StoreError(self._failed(err)) from None
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.5)
            except sqlite3.DatabaseError as err:
                raise StoreError(self._failed(err)) from None

    def _failed(self, err: sqlite3.Error) -> str:
        """One line naming the file; a full disk said as such (:mod:`pipeflow.store.space`:
        SQLite calls it "disk I/O error" when the WAL cannot grow, reads included)."""
        return f"metadata database {self.path}: {space.explain(err, self.path.parent)}"

    def write(self, statements: Iterable[tuple[str, tuple]]) -> None:
        """Run the statements as one transaction (retried as a whole while the DB is busy)."""
        batch = list(statements)

        def tx() -> None:
            c = self._conn
            c.execute("BEGIN IMMEDIATE")
            try:
                for sql, rows in same_sql(batch):
                    c.executemany(sql, rows)
                c.execute("COMMIT")
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise

        self._retry(tx)

    def query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        return self._retry(lambda: self._conn.execute(sql, args).fetchall())

    def integrity_check(self) -> str:
        rows = self.query("PRAGMA integrity_check")
        return "\n".join(str(r[0]) for r in rows)
