"""Session fixtures: the real servers of the team-scale tests (:mod:`servers`), each example
spec's first local run, shared by the tests that start from one or compare with one, and the
tumours project trained once (``tumours_v1``: nine modules start from the same v1 in production;
training it is 10-20 s, copying it milliseconds). Once for the run, not once per session: under
pytest-xdist both workers' sessions share them, made by the first to ask while the other waits
(a lock beside them, in the run's temporary folder): tests/test_specs.py and
tests/store/test_s3_specs.py go to whichever worker is free, and when that was not the same one
each ran the four example specs itself.

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
to a folder of its own, before any fixture runs a command; tests that need another set theirs.

And the longest modules first. ``make test`` runs two pytest-xdist workers with ``--dist
loadscope``: a module's tests go to one worker, and a worker gets its next module when two or
fewer of its tests are left. pytest-xdist hands modules out by number of tests, most first
(``--loadscope-reorder``, its default, which also undid an earlier attempt that only changed the
collection order), so the longest modules, a handful of long tests each, went out last: the
minute at full load (one test) 137th of 144, with a minute and a half left to run when the
other worker could have nothing left. So in an xdist worker the modules of :data:`helpers.HEAVY` are
collected first, longest first, then the rest by number of tests as pytest-xdist orders them
(small modules last fill the gaps: longest-processing-time-first), and the controller keeps
that order (its reordering is switched off, else it would sort them back). A run without xdist
keeps pytest's order. Every module's own tests keep their order."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import HEAVY, ExampleRun, copy_project, pipeflow, pipeflow_ok, trained_tumours
from servers import S3, Postgres, postgres_server, s3_server


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist's controller: keep our order
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    module = {id(item): item.nodeid.split("::")[0] for item in items}
    tests: dict[str, int] = {}
    for name in module.values():
        tests[name] = tests.get(name, 0) + 1
    # sort is stable: each module's tests keep their order, and modules of equal rank theirs
    rank = {name: at for at, name in enumerate(HEAVY)}
    items.sort(key=lambda item: (rank.get(module[id(item)], len(rank)), -tests[module[id(item)]]))


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


@contextlib.contextmanager
def _once_per_run(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Path]:
    """``with`` it: a folder named ``name`` for the whole run, made by the first of its sessions
    to ask while the others wait (an exclusive lock on ``name.lock`` beside it). Under pytest-xdist
    each worker's base temporary folder is ``popen-gwN`` in a folder of the run's, which the
    workers share; without xdist it is the session's own."""
    import fcntl

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield root / name


@pytest.fixture(scope="session")
def tumours_v1(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path], Path]:
    """``tumours_v1(where)``: a copy at ``where`` of :func:`helpers.trained_tumours` (tumours v1
    in production after one ``pipeflow run``), trained once for the run (both xdist workers) by
    whichever test asks first; each copy is the caller's to change (run again, promote, serve,
    audit), the trained one no one's."""
    trained: list[Path] = []

    def copy(where: Path) -> Path:
        if not trained:
            with _once_per_run(tmp_path_factory, "tumours-v1") as root:
                if not (root / "trained").exists():
                    shutil.rmtree(root / "tumours", ignore_errors=True)
                    trained_tumours(root / "tumours")
                    (root / "trained").touch()  # written last: a run cut short trains again
            trained.append(root / "tumours")
        return copy_project(trained[0], where)

    return copy


@pytest.fixture(scope="session")
def example_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path], ExampleRun]:
    """The first local run of an example spec, made once for the run (both xdist workers) by
    whichever test asks first: tests/test_specs.py runs the copy again (all cached; no other
    module changes it), tests/store/test_s3_specs.py compares an S3 store's run with it (what
    was shown right after that run, kept in ``first.json``); each run of the claims example
    takes seconds."""
    done: dict[Path, ExampleRun] = {}

    def get(spec: Path) -> ExampleRun:
        if spec in done:
            return done[spec]
        name = f"example-{spec.parent.name}"
        with _once_per_run(tmp_path_factory, name) as root:
            project, record = root / spec.parent.name, root / "first.json"
            path = project / "pipeline.yaml"
            if not record.exists():
                shutil.rmtree(project, ignore_errors=True)  # a run cut short: start again
                ignore = shutil.ignore_patterns(".pipeflow", "__pycache__")
                shutil.copytree(spec.parent, project, ignore=ignore)
                first = pipeflow(["run", path], timeout=600)
                shown: dict[str, Any] = {}
                models: dict[str, dict[str, Any]] = {}
                if first.returncode == 0:
                    argv = ["runs", "show", "latest", "--json", "--spec", path]
                    shown = json.loads(pipeflow_ok(argv, timeout=60).stdout)
                    listed = pipeflow_ok(["models", "list", "--json", "--spec", path]).stdout
                    for model in sorted(m["name"] for m in json.loads(listed)):
                        argv = ["models", "show", model, "--json", "--spec", path]
                        models[model] = json.loads(pipeflow_ok(argv).stdout)
                kept = {"args": [str(a) for a in first.args], "returncode": first.returncode}
                kept |= {"stdout": first.stdout, "stderr": first.stderr}
                record.write_text(json.dumps({"first": kept, "shown": shown, "models": models}))
            saved = json.loads(record.read_text())
        first = subprocess.CompletedProcess(**saved["first"])
        done[spec] = ExampleRun(path, first, saved["shown"], saved["models"])
        return done[spec]

    return get
