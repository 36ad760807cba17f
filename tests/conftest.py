"""Session fixtures: the real servers of the team-scale tests (:mod:`servers`), and each example
spec's first local run, shared by the tests that start from one or compare with one."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import ExampleRun, pipeflow, pipeflow_ok
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


@pytest.fixture(scope="session")
def example_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path], ExampleRun]:
    """The first local run of an example spec, made once for the session by whichever test asks
    first: tests/test_specs.py runs the copy again (all cached), tests/store/test_s3_specs.py
    compares an S3 store's run with it; each run of the claims example takes seconds."""
    done: dict[Path, ExampleRun] = {}

    def get(spec: Path) -> ExampleRun:
        if spec not in done:
            project = tmp_path_factory.mktemp("example") / spec.parent.name
            ignore = shutil.ignore_patterns(".pipeflow", "__pycache__")
            shutil.copytree(spec.parent, project, ignore=ignore)
            path = project / "pipeline.yaml"
            first = pipeflow(["run", path], timeout=600)
            shown: dict[str, Any] = {}
            models: dict[str, dict[str, Any]] = {}
            if first.returncode == 0:
                argv = ["runs", "show", "latest", "--json", "--spec", path]
                shown = json.loads(pipeflow_ok(argv, timeout=60).stdout)
                listed = pipeflow_ok(["models", "list", "--json", "--spec", path]).stdout
                for name in sorted(m["name"] for m in json.loads(listed)):
                    argv = ["models", "show", name, "--json", "--spec", path]
                    models[name] = json.loads(pipeflow_ok(argv).stdout)
            done[spec] = ExampleRun(path, first, shown, models)
        return done[spec]

    return get
