"""Helpers shared by every test folder (``from helpers import ...``: ``pythonpath = ["tests"]`` in
pyproject.toml puts this folder on ``sys.path``).

- the real ``pipeflow`` and ``dask`` console scripts: :func:`pipeflow` runs one to completion as a
  user would, :func:`pipeflow_ok` also asserts it succeeded; what ``pipeflow run`` printed and
  recorded (:func:`stage_lines`, :func:`show_run`) and what example steps logged
  (:func:`calls`, :func:`events`, :func:`counts`);
- processes: started in their own session (``start``, ``kill_group``), SIGKILLed however the test
  ends (:func:`hard_kill`, :func:`processes`), waited for with a deadline (:func:`wait_until`);
  a bound on this process's CPU time, which a loaded machine does not stretch (:func:`cpu_limit`);
- the tumours registry project (:data:`TUMOURS`, :func:`tumours_project`, trained once by
  :func:`trained_tumours`; the ``tumours_v1`` fixture of conftest.py trains it once per run, for
  both xdist workers, and hands each module a copy, :func:`copy_project`), a real
  ``pipeflow serve`` on it (:func:`start_server`), rows it accepts (:func:`sample_rows`), and its
  Prometheus counters (:func:`counter`);
- an example spec's first local run, shared for the run (:class:`ExampleRun`, the
  ``example_run`` fixture of conftest.py);
- the modules ``make test``'s xdist workers get first (:data:`HEAVY`, conftest.py's order);
- what a test ends with: the store check passes (:func:`assert_store_sound`), a failure is one
  ``error:`` line (:func:`one_line_error`), nothing was written (:func:`files_under`).

What ``pipeflow.testing`` (the public helpers for plugin authors) already offers is re-exported
here, not copied. Everything runs on 127.0.0.1 and every wait has a timeout, so a hung child fails
its test instead of hanging the suite.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeflow.testing import (
    PIPEFLOW,
    Served,
    cli_env,
    free_port,
    kill_group,
    serve,
    start,
    tumour_table,
)

__all__ = [
    "DASK",
    "ExampleRun",
    "MODEL",
    "PIPEFLOW",
    "PREDICT",
    "TUMOURS",
    "Served",
    "assert_store_sound",
    "calls",
    "cli_env",
    "copy_project",
    "counter",
    "counts",
    "cpu_limit",
    "docs_example",
    "events",
    "files_under",
    "free_port",
    "hard_kill",
    "kill_group",
    "one_line_error",
    "pipeflow",
    "pipeflow_ok",
    "processes",
    "register_failing_model",
    "register_mislabelled_model",
    "sample_rows",
    "show_run",
    "stage_lines",
    "start",
    "start_server",
    "trained_tumours",
    "true_labels",
    "tumours_project",
    "wait_until",
]

DASK = str(Path(PIPEFLOW).with_name("dask"))

# ------------------------------------------------------------------------------ the command line


def pipeflow(
    args: Sequence[Any],
    *,
    cwd: Path | None = None,
    timeout: float = 120,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``pipeflow`` script to completion (a timeout fails the test), in the
    environment of :func:`cli_env` unless ``env`` is given."""
    return subprocess.run(
        [PIPEFLOW, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or cli_env(),
        preexec_fn=preexec_fn,
    )


def pipeflow_ok(args: Sequence[Any], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """:func:`pipeflow`, asserting it exited 0."""
    proc = pipeflow(args, **kwargs)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def show_run(spec: Path, run: str = "latest") -> dict[str, Any]:
    """``pipeflow runs show RUN --json --spec SPEC``, parsed; ``by_stage`` keys stages by name."""
    data = json.loads(pipeflow_ok(["runs", "show", run, "--json", "--spec", spec]).stdout)
    data["by_stage"] = {s["stage"]: s for s in data["stages"]}
    return data


def stage_lines(stdout: str) -> dict[str, tuple[str, str]]:
    """The per-stage result lines of ``pipeflow run``: stage -> (state, detail)."""
    out = {}
    for line in stdout.splitlines():
        parts = line.split(maxsplit=3)
        if len(parts) >= 3 and parts[0] in ("✓", "↺", "✗", "-"):
            out[parts[1]] = (parts[2], parts[3] if len(parts) > 3 else "")
    return out


def one_line_error(stderr: str) -> str:
    """The single ``error: ...`` line of a failed command; no traceback anywhere."""
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


# ----------------------------------------------------------------- what the example steps logged


def calls(directory: Path, name: str = "calls.log") -> list[str]:
    """Lines appended by the example steps each time a function actually runs."""
    path = directory / name
    return path.read_text().split() if path.exists() else []


def events(path: Path) -> list[tuple[str, str, int]]:
    """Lines ``EVENT STAGE PID`` appended by the stages of these tests (complete lines only)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2].isdigit():
            out.append((parts[0], parts[1], int(parts[2])))
    return out


def counts(path: Path, event: str) -> Counter[str]:
    """How many times each stage logged ``event`` (``start`` or ``end``)."""
    return Counter(stage for ev, stage, _ in events(path) if ev == event)


# ------------------------------------------------------------------------------------ processes


def hard_kill(proc: subprocess.Popen[Any], timeout: float = 10) -> None:
    """SIGKILL a child's whole process group now (dask workers linger after SIGTERM)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)


@contextlib.contextmanager
def processes() -> Iterator[list[subprocess.Popen[Any]]]:
    """A list to append started processes to; all are SIGKILLed on the way out."""
    started: list[subprocess.Popen[Any]] = []
    try:
        yield started
    finally:
        for proc in reversed(started):
            hard_kill(proc)


def wait_until(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    proc: subprocess.Popen[Any] | None = None,
    log: Path | None = None,
) -> Any:
    """Poll ``predicate`` until it returns something true (returned); fail with the tail of
    ``log`` if ``proc`` exits first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise AssertionError(f"process exited ({proc.returncode}) before {what}:\n{tail}")
        time.sleep(0.02)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tail}")


@contextlib.contextmanager
def cpu_limit(seconds: float) -> Iterator[None]:
    """Fail the block (AssertionError) once this process has spent ``seconds`` of CPU time in it
    (user and system, all threads: ``ITIMER_PROF``). A bound on work, where a wall-clock bound
    also measures the machine's load: two xdist workers and other jobs can stretch a test's wall
    time five-fold, not its CPU time. A block stuck without spinning is pytest-timeout's (wall
    clock). Main thread only: the check is a signal handler."""

    def over(signum: int, frame: Any) -> None:
        raise AssertionError(f"more than {seconds} CPU seconds (a runaway or a hang)")

    before = signal.signal(signal.SIGPROF, over)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, before)


# ------------------------------------------------------------------- the store and the file tree


def assert_store_sound(spec: Path, overrides: Sequence[str] = ()) -> None:
    """The store and metadata database of ``spec`` pass :func:`check_store`."""
    from pipeflow.spec.load import load
    from pipeflow.store.check import check_store
    from pipeflow.workspace import open_store

    store, db = open_store(load(spec, overrides))
    try:
        problems = check_store(store, db)
    finally:
        db.close()
    assert problems == [], "\n".join(problems)


def files_under(root: Path) -> dict[str, int]:
    """Every file under ``root`` -> its mtime in ns (to prove nothing new appeared or changed)."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            try:
                out[path] = os.stat(path).st_mtime_ns
            except FileNotFoundError:
                continue
    return out


# ------------------------------------------------------------------- make test's order

#: the modules that take longest in a two-worker ``make test`` (half a minute to four), longest
#: first, from the 40 slowest tests of an idle full run and every test's time in a run of
#: tests/test_specs.py, tests/store, tests/runner, tests/hostile and tests/scoring on a busy
#: machine (set-up and teardown counted); tests/test_schedule.py checks each still exists. The
#: order is conftest.py's (pytest_collection_modifyitems)
HEAVY = (
    "tests/hostile/test_hostile_specs.py",
    "tests/test_specs.py",
    "tests/hostile/test_hostile_http.py",
    "tests/store/test_s3_specs.py",
    "tests/scoring/test_batch.py",
    "tests/runner/test_gc.py",
    "tests/hostile/test_hostile_paths.py",
    "tests/load/test_serving_load.py",
    "tests/hostile/test_audit_volume.py",
    "tests/serving/test_fleet.py",
    "tests/deploy/test_ci_pipelines.py",
    "tests/cli/test_init.py",
    "tests/serving/test_ab.py",
    "tests/store/test_s3_store.py",
    "tests/serving/test_live_kpis.py",
    "tests/load/test_load_fleet.py",
    "tests/stages/test_train_evaluate_stages.py",
    "tests/serving/test_docs_examples.py",
    "tests/integration/test_shared_nothing.py",
    "tests/scoring/test_explain_batch.py",
    "tests/scoring/test_gpu_scoring.py",
)


# ------------------------------------------------------- the tumours registry project, served

#: the registry tests' project: breast-cancer data -> a scikit-learn pipeline, gated and promoted
TUMOURS = Path(__file__).with_name("registry") / "project"
MODEL = "tumours"
PREDICT = f"/v1/models/{MODEL}/predict"


@dataclass(frozen=True)
class ExampleRun:
    """An example spec copied out of specs/ and run once with ``pipeflow run``, as a user would."""

    #: the copy's pipeline.yaml (its store is the copy's .pipeflow)
    spec: Path
    first: subprocess.CompletedProcess[str]
    #: ``runs show latest --json`` right after that run (later tests may run the copy again)
    shown: dict[str, Any]
    #: ``models show NAME --json`` of every model in its registry then
    models: dict[str, dict[str, Any]]


def tumours_project(where: Path) -> Any:
    """Copy the tumours project to ``where`` (not run yet) with its ``data.csv``
    (:func:`pipeflow.testing.tumour_table`); returns that table."""
    shutil.copytree(TUMOURS, where)
    frame = tumour_table()
    frame.to_csv(where / "data.csv", index=False)
    return frame


def trained_tumours(where: Path) -> Path:
    """:func:`tumours_project` at ``where``, then ``pipeflow run pipeline.yaml --quiet`` in it:
    tumours v1, gated and promoted to ``production``; returns ``where``."""
    tumours_project(where)
    pipeflow_ok(["run", "pipeline.yaml", "--quiet"], cwd=where, timeout=300)
    return where


def copy_project(project: Path, where: Path) -> Path:
    """A copy of a run project (its ``.pipeflow`` store included) at ``where``, as if it had been
    run there: the one absolute path the store records, each run's ``spec_path`` (which
    ``pipeflow runs output`` opens the store by), is moved to the copy. Returns ``where``."""
    import sqlite3

    shutil.copytree(project, where, symlinks=True)
    db = sqlite3.connect(where / ".pipeflow" / "pipeflow.db")
    try:
        with db:
            db.execute(
                "UPDATE runs SET spec_path = ? || substr(spec_path, ?) WHERE spec_path LIKE ? || '%'",
                (str(where), len(str(project)) + 1, str(project)),
            )
    finally:
        db.close()
    return where


def sample_rows(project: Path, n: int = 5) -> list[dict]:
    """The first ``n`` rows of the project's ``data.csv`` as request records (no diagnosis)."""
    import pandas as pd

    frame = pd.read_csv(project / "data.csv").drop(columns=["diagnosis"]).head(n)
    return frame.to_dict(orient="records")


def start_server(
    project: Path,
    *args: str,
    store: Path | None = None,
    env: dict[str, str] | None = None,
    log_dir: Path | None = None,
    client_timeout: float = 30,
) -> Served:
    """``pipeflow serve *args --store STORE`` in ``project`` (the store defaults to the project's
    own ``.pipeflow``) on a free port of 127.0.0.1, once it answers ``/ready``."""
    store = store or project / ".pipeflow"
    return serve(
        project,
        *args,
        "--store",
        str(store),
        env=env,
        log_dir=log_dir,
        client_timeout=client_timeout,
    )


def register_failing_model(store: Path) -> int:
    """A tumours version that cannot score what clients send (it was trained with a feature the
    signature lacks: every request it takes fails with ``model_error``); its number."""
    import numpy as np
    import pandas as pd
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from pipeflow.registry import Registry
    from pipeflow.store.artifacts import ArtifactStore

    frame = pd.DataFrame({"mean_radius": np.arange(20.0), "extra_feature": np.arange(20.0) % 3})
    y = np.where(frame["mean_radius"] > 9, "malignant", "benign")
    model = make_pipeline(
        make_column_transformer(("passthrough", ["mean_radius", "extra_feature"])),
        LogisticRegression(),
    ).fit(frame, y)
    st = ArtifactStore(str(store))
    registry = Registry(st)
    record = registry.register("tumours", st.save(model, "model"), metrics={"accuracy": 0.5})
    return int(record["version"])


def register_mislabelled_model(project: Path, store: Path) -> int:
    """A tumours version trained on flipped diagnoses: fast, never fails, takes the same rows as
    version 1 (its signature and reference profile), looks fine offline (its evaluation data was
    flipped too), and is wrong on most live rows; its number. The docs' own script
    (docs/examples/mislabelled.py), so the guard section and the tests roll back the same model."""
    return int(docs_example("mislabelled").register(project, store))


def docs_example(name: str) -> Any:
    """The docs' script ``docs/examples/NAME.py`` as a module, for a test to call its functions
    (the docs and the test then run the same code)."""
    import importlib.util

    path = Path(__file__).parents[1] / "docs" / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"docs_examples_{name}", path)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def true_labels(project: Path, n: int) -> list[str]:
    """The diagnoses of the first ``n`` rows of the project's ``data.csv`` (:func:`sample_rows`)."""
    import pandas as pd

    return pd.read_csv(project / "data.csv")["diagnosis"].head(n).tolist()


def counter(metrics_text: str, name: str) -> float:
    """The sum of every sample of a Prometheus counter (all label sets) in /metrics text."""
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("#"):
            continue
        metric, _, value = line.rpartition(" ")
        if metric == name or metric.startswith(name + "{"):
            total += float(value)
    return total
