"""Open the metadata database a location names: SQLite or PostgreSQL (:mod:`pipeflow.store.metadata`).

Kept apart from the contract so that the contract never imports its implementations.
"""

from __future__ import annotations

import os

from pipeflow.store.metadata import MetadataDB, is_postgres

__all__ = ["open_metadata"]


def open_metadata(location: str | os.PathLike[str], **options: float) -> MetadataDB:
    """``postgresql://user@host/db`` → PostgreSQL; ``sqlite:///path`` or a path → SQLite.

    ``options``: ``busy_timeout_s`` (SQLite) or ``retry_s`` (PostgreSQL), how long a busy or
    unreachable database is waited for before the error reaches the caller.
    """
    if is_postgres(location):
        from pipeflow.store.postgres import PostgresMetadata

        return PostgresMetadata(str(location), **options)
    from pipeflow.store.metadata import parse_location
    from pipeflow.store.sqlite import SQLiteMetadata

    return SQLiteMetadata(parse_location(location), **options)
