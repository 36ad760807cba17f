"""Session fixtures: the real servers of the team-scale tests (:mod:`servers`), each example
spec's first local run, shared by the tests that start from one or compare with one, and the
tumours project trained once (``tumours_v1``: nine modules start from the same v1 in production;
training it is 10-20 s, copying it milliseconds).

And Ctrl-C as a user has it. A background job of a non-interactive shell (``bash -c 'pytest &'``,
a CI script's ``&``) starts with SIGINT ignored; every child inherits that, and Python then
installs no KeyboardInterrupt handler, so a test that sends SIGINT to a ``pipeflow run`` would
wait out the run (the Ctrl-C test of test_cluster_factory did, for 60 s, and failed). The session
restores Python's handler, and a test that leaves SIGINT's handler changed errors, named.

And a spool of its own. A writer to a remote store appends to this machine's spool,
``~/.cache/pipeflow/spool/<digest of the store URL>`` unless ``$PIPEFLOW_SPOOL`` says where, and
ships closed segments to whichever store it opens under that URL; a reader of the store reads
that spool too. The tests' S3 URLs repeat (``s3://team/pf``) across sessions and across
pytest-xdist's workers, each with its own moto server: in a shared spool one worker's reader
counts another's records, its writer can ship them to its own server, and a session leaves
segments for the next. So each session (each worker) sets ``$PIPEFLOW_SPOOL``
to a folder of its own, before any fixture runs a command; tests that need another set theirs."""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import ExampleRun, copy_project, pipeflow, pipeflow_ok, trained_tumours
from servers import S3, Postgres, postgres_server, s3_server


def pytest_sessionstart(session: pytest.Session) -> None:
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


_SIGINT_BEFORE = pytest.StashKey[object]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_SIGINT_BEFORE] = signal.getsignal(signal.SIGINT)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    yield
    before, after = item.stash.get(_SIGINT_BEFORE, None), signal.getsignal(signal.SIGINT)
    if before is not None and after != before:
        signal.signal(signal.SIGINT, before)  # so the tests after it are not affected
        raise AssertionError(f"the test left SIGINT's handler {after!r} (was {before!r})")


@pytest.fixture(scope="session", autouse=True)
def own_spool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``$PIPEFLOW_SPOOL``: a folder of this session's (this worker's), for it and its children."""
    spool = tmp_path_factory.mktemp("spool")
    before = os.environ.get("PIPEFLOW_SPOOL")
    os.environ["PIPEFLOW_SPOOL"] = str(spool)
    try:
        yield spool
    finally:
        if before is None:
            os.environ.pop("PIPEFLOW_SPOOL", None)
        else:
            os.environ["PIPEFLOW_SPOOL"] = before


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
def tumours_v1(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path], Path]:
    """``tumours_v1(where)``: a copy at ``where`` of :func:`helpers.trained_tumours` (tumours v1
    in production after one ``pipeflow run``), trained once for the session by whichever test
    asks first; each copy is the caller's to change (run again, promote, serve, audit)."""
    trained: list[Path] = []

    def copy(where: Path) -> Path:
        if not trained:
            trained.append(trained_tumours(tmp_path_factory.mktemp("tumours-v1") / "tumours"))
        return copy_project(trained[0], where)

    return copy


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
