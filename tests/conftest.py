"""Session fixtures for the real servers of the team-scale tests (:mod:`servers`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from servers import S3, Postgres, postgres_server, s3_server


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL server for the session (skipped, with the reason, where none can run)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (pip install -e '.[test]')")
    try:
        server = postgres_server()
        pg = server.__enter__()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    try:
        yield pg
    finally:
        server.__exit__(None, None, None)


@pytest.fixture(scope="session")
def s3() -> Iterator[S3]:
    """A moto S3 server for the session."""
    try:
        import moto  # noqa: F401
        import s3fs  # noqa: F401
    except ImportError:
        pytest.skip("moto[server] and s3fs are not installed (pip install -e '.[test]')")
    with s3_server() as server:
        yield server
