"""Copy a run history from one metadata database to another (``pipeflow store migrate``).

The move from a laptop's SQLite file to a team's PostgreSQL: every table of the contract
(:data:`~pipeflow.store.metadata.TABLES`) is copied in key order, in batches, each batch one
transaction of ``INSERT ... ON CONFLICT DO NOTHING``. So:

- **nothing is lost or doubled**: a migration interrupted half-way is simply run again (rows
  already there are skipped), and migrating into a database that already holds other runs (a
  second laptop joining the team) adds to it;
- **it is checked, not trusted**: afterwards every source row is read back from the target by its
  key and compared value by value; the report gives per table the rows copied, the rows that were
  there already, and a SHA-256 over the source rows in key order, which the target's rows for
  those keys must match. A row that differs (the same run id recorded differently on both sides)
  is a problem named by table and key, and the command exits 1;
- the source is only read; the target's schema is created or upgraded by opening it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeflow.errors import StoreError
from pipeflow.store.metadata import TABLES, MetadataDB

__all__ = ["Migration", "TableCopy", "migrate"]

BATCH = 500
_COLUMN = re.compile(r"[a-z_][a-z0-9_]*")


@dataclass
class TableCopy:
    table: str
    rows: int = 0  # in the source
    copied: int = 0  # new in the target
    present: int = 0  # already in the target, identical
    digest: str = ""  # sha256 over the source rows in key order; the target's rows match it
    differing: list[str] = field(default_factory=list)  # keys whose rows differ


@dataclass
class Migration:
    source: str
    target: str
    tables: list[TableCopy] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return [
            f"{t.table} {key}: the target holds a different record"
            for t in self.tables
            for key in t.differing
        ]


def _key_text(table: str, row: dict[str, Any]) -> str:
    return "/".join(str(row[k]) for k in TABLES[table])


def _canonical(row: dict[str, Any], columns: list[str]) -> str:
    return json.dumps([row[c] for c in columns], separators=(",", ":"), default=str)


def migrate(
    source: MetadataDB,
    target: MetadataDB,
    *,
    progress: Callable[[TableCopy], None] | None = None,
) -> Migration:
    """Copy every record of ``source`` into ``target`` and check it arrived (module docstring)."""
    report = Migration(source.location, target.location)
    for table, key in TABLES.items():
        order = ", ".join(key)
        query = f"SELECT * FROM {table} ORDER BY {order}"  # noqa: S608  # nosec B608 (names from TABLES)
        rows = [dict(r) for r in source.query(query)]
        copy = TableCopy(table, rows=len(rows))
        if rows:
            columns = list(rows[0])
            if not all(_COLUMN.fullmatch(c) for c in columns):  # they go into SQL below
                raise StoreError(f"{source.location}: table {table} has unexpected column names")
            before = {
                _key_text(table, dict(r))
                for r in target.query(f"SELECT {order} FROM {table}")  # noqa: S608  # nosec B608
            }
            sql = (
                f"INSERT INTO {table} ({', '.join(columns)})"  # noqa: S608  # nosec B608 (checked names)
                f" VALUES ({', '.join('?' for _ in columns)}) ON CONFLICT DO NOTHING"
            )
            for start in range(0, len(rows), BATCH):
                batch = rows[start : start + BATCH]
                target.write([(sql, tuple(r[c] for c in columns)) for r in batch])
            landed = {
                _key_text(table, row): row
                for row in (dict(r) for r in target.query(f"SELECT * FROM {table}"))  # noqa: S608  # nosec B608
            }
            source_hash, target_hash = hashlib.sha256(), hashlib.sha256()
            for row in rows:
                k = _key_text(table, row)
                mine = _canonical(row, columns)
                theirs = _canonical(landed[k], columns) if k in landed else "<missing>"
                source_hash.update(mine.encode() + b"\n")
                target_hash.update(theirs.encode() + b"\n")
                if mine != theirs:
                    copy.differing.append(k)
                elif k in before:
                    copy.present += 1
                else:
                    copy.copied += 1
            copy.digest = source_hash.hexdigest()
            if target_hash.hexdigest() != copy.digest and not copy.differing:  # pragma: no cover
                copy.differing.append("(digest)")
        report.tables.append(copy)
        if progress is not None:
            progress(copy)
    return report
