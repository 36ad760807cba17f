"""Real servers for the team-scale tests, started on free 127.0.0.1 ports and stopped afterwards.

- :class:`Postgres`: Debian's PostgreSQL server, a throwaway cluster made with ``initdb`` in a
  temporary folder and started with ``pg_ctl`` (about 1.5 s + 0.2 s). PostgreSQL refuses to run
  as root, so as root the cluster belongs to the ``postgres`` user the Debian package creates.
  Trust authentication on 127.0.0.1 only; fsync off (a test cluster, not a durable one).
  :meth:`Postgres.database` hands each test a fresh database.
- :class:`S3`: moto's server mode, an S3 endpoint used through s3fs exactly as a real one is
  (``AWS_ENDPOINT_URL_S3`` and dummy credentials in the environment), with
  :meth:`S3.bucket` handing each test a fresh bucket.

Both are session fixtures in ``tests/conftest.py``; a test that needs one and finds it missing is
skipped with the reason (``make install-test`` installs both, so CI runs them).
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from pipeflow.testing import free_port

__all__ = ["S3", "Postgres", "postgres_server", "s3_server"]

_counter = itertools.count(1)


def _pg_bindir() -> str | None:
    """Where ``initdb`` and ``pg_ctl`` are: Debian keeps them off PATH, per major version."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if found:
        return os.path.dirname(found[0])
    on_path = shutil.which("initdb")
    return os.path.dirname(on_path) if on_path else None


class Postgres:
    """A running PostgreSQL cluster on 127.0.0.1:``port`` with superuser ``pipeflow``."""

    def __init__(self, port: int, data: Path):
        self.port, self.data = port, data
        self.url = f"postgresql://pipeflow@127.0.0.1:{port}/postgres"

    def database(self, name: str | None = None) -> str:
        """A new empty database; its URL."""
        name = name or f"t{os.getpid()}_{next(_counter)}"
        self.sql(f'CREATE DATABASE "{name}"')
        return f"postgresql://pipeflow@127.0.0.1:{self.port}/{name}"

    def sql(self, statement: str, database: str = "postgres") -> list[tuple]:
        import psycopg

        with psycopg.connect(
            f"postgresql://pipeflow@127.0.0.1:{self.port}/{database}", autocommit=True
        ) as conn:
            cur = conn.execute(statement)
            return list(cur.fetchall()) if cur.description else []


@contextlib.contextmanager
def postgres_server() -> Iterator[Postgres]:
    bindir = _pg_bindir()
    if bindir is None:
        raise FileNotFoundError(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: "
            "`make install-test` installs Debian's postgresql when run as root"
        )
    as_root = os.geteuid() == 0
    data = Path(tempfile.mkdtemp(prefix="pipeflow-pg-"))
    prefix: list[str] = []
    if as_root:
        pg = pwd.getpwnam("postgres")
        os.chown(data, pg.pw_uid, pg.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    log = data / "server.log"

    def run(*argv: str) -> None:
        done = subprocess.run(
            [*prefix, *argv], capture_output=True, text=True, timeout=120, cwd=data
        )
        if done.returncode:
            raise RuntimeError(f"{argv[0]} failed: {done.stderr or done.stdout}")

    pgdata = str(data / "cluster")
    run(
        f"{bindir}/initdb", "-D", pgdata, "-U", "pipeflow", "-A", "trust", "-E", "UTF8", "--no-sync"
    )
    opts = f"-F -p {port} -k {data} -c listen_addresses=127.0.0.1 -c max_connections=200"
    run(f"{bindir}/pg_ctl", "-D", pgdata, "-l", str(log), "-o", opts, "-w", "-t", "60", "start")
    try:
        yield Postgres(port, data)
    finally:
        with contextlib.suppress(Exception):
            run(f"{bindir}/pg_ctl", "-D", pgdata, "-m", "immediate", "-w", "stop")
        shutil.rmtree(data, ignore_errors=True)


class S3:
    """A moto S3 server at ``endpoint``; :attr:`env` is what a client process needs."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self.env = {
            "AWS_ENDPOINT_URL_S3": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def bucket(self, name: str | None = None) -> str:
        """A new empty bucket; its ``s3://`` URL."""
        import s3fs

        name = name or f"b{os.getpid()}-{next(_counter)}"
        fs = s3fs.S3FileSystem(
            key="testing", secret="testing", endpoint_url=self.endpoint, skip_instance_cache=True
        )
        fs.mkdir(name)
        return f"s3://{name}"

    def filesystem(self):  # noqa: ANN201 (s3fs is imported lazily)
        import s3fs

        return s3fs.S3FileSystem(
            key="testing", secret="testing", endpoint_url=self.endpoint, skip_instance_cache=True
        )


@contextlib.contextmanager
def s3_server(*, check_credentials: bool = False) -> Iterator[S3]:
    """moto's server; ``check_credentials``: it refuses keys it does not know (403), as AWS does
    (moto's IAM auth from the first request; by default it accepts any key)."""
    port = free_port()
    env = dict(os.environ)
    if check_credentials:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()  # noqa: S310 (127.0.0.1)
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start on {endpoint}") from None
                time.sleep(0.05)
        yield S3(endpoint)
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if proc.poll() is None:
            proc.kill()
