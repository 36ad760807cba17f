"""Dask workers dying under ``pipeflow run --executor distributed``: real ``dask scheduler`` and
``dask worker`` processes on 127.0.0.1.

- One of two workers is SIGKILLed while it runs a stage, at a different point of the run for each
  seed: the run completes on the survivor, with outputs byte-identical to a clean run and one
  record per stage. Stages append ``start``/``end`` lines to a counter file, which proves that the
  interrupted stage ran again (and that any other rerun was of a stage on the killed worker).
- A stage that kills its own worker on every attempt fails once Dask's retry limit is reached
  (the scheduler runs with ``allowed-failures`` = 1, so two attempts), with one line naming the
  stage; the branches that do not depend on it finish.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    DASK,
    PIPEFLOW,
    assert_store_sound,
    cli_env,
    counts,
    events,
    free_port,
    hard_kill,
    pipeflow,
    pipeflow_ok,
    processes,
    start,
    wait_until,
)

from pipeflow.testing import write_spec

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

STEPS = """
    import os
    import time
    from pathlib import Path

    HERE = Path(__file__).parent

    def _log(event, name):
        with open(HERE / "calls.log", "a") as fh:
            fh.write(f"{event} {name} {os.getpid()}\\n")

    def work(name, delay, **inputs):
        _log("start", name)
        time.sleep(delay)
        value = name + "(" + ",".join(inputs[k] for k in sorted(inputs)) + ")"
        _log("end", name)
        return value

    def kill_my_worker():
        _log("start", "killer")
        os.kill(os.getpid(), 9)
"""


def _layered_spec(name: str) -> str:
    """12 stages in 4 layers of 3; each stage reads two of the layer before it."""
    lines = [f"pipeline: {name}", "stages:"]
    for layer in range(4):
        for i, col in enumerate("abc"):
            stage = f"{col}{layer}"
            inputs = ""
            if layer:
                p, q = f"{col}{layer - 1}", f"{'abc'[(i + 1) % 3]}{layer - 1}"
                inputs = f"inputs: {{p: {p}, q: {q}}}, "
            lines.append(
                f"  {stage}: {{type: python, {inputs}with: "
                f'{{function: "steps:work", kwargs: {{name: {stage}, delay: 0.3}}}}}}'
            )
    return "\n".join(lines) + "\n"


STAGES = [f"{c}{layer}" for layer in range(4) for c in "abc"]


class Cluster:
    def __init__(self, address: str, logs: Path, started: list[Any]):
        self.address, self.logs, self.started = address, logs, started

    def workers(
        self, count: int, *extra: str, nanny: bool = False, total: int | None = None
    ) -> list[Any]:
        """Start ``count`` workers; wait until the scheduler has ``total`` (default: them)."""
        from distributed import Client

        procs = []
        for _ in range(count):
            n = len(self.started)
            argv = [DASK, "worker", self.address, "--host", "127.0.0.1", "--no-dashboard"]
            argv += ["--nthreads", "1", "--name", f"w{n}", *extra]
            argv += [] if nanny else ["--no-nanny"]
            proc = start(argv, self.logs / f"worker-{n}.log")
            self.started.append(proc)
            procs.append(proc)
        with Client(self.address, timeout="20s") as client:
            want = total or count
            wait_until(
                lambda: len(client.scheduler_info(n_workers=-1)["workers"]) == want,
                60,
                f"{want} workers to register",
            )
        return procs

    def stop(self, procs: list[Any]) -> None:
        from distributed import Client

        for proc in procs:
            hard_kill(proc)
        with Client(self.address, timeout="20s") as client:
            wait_until(
                lambda: not client.scheduler_info(n_workers=-1)["workers"],
                30,
                "the workers to leave",
            )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    import socket

    logs = tmp_path_factory.mktemp("dask-logs")
    port = free_port()
    with processes() as started:
        sched = start(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard"],
            logs / "scheduler.log",
            # two attempts per task: a stage that kills every worker it runs on fails quickly
            env=cli_env(DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES="1"),
        )
        started.append(sched)

        def listening() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return True
            except OSError:
                return False

        wait_until(listening, 30, "the dask scheduler", sched, logs / "scheduler.log")
        yield Cluster(f"tcp://127.0.0.1:{port}", logs, started)


def _outputs(db_path: Path) -> dict[str, str]:
    with sqlite3.connect(db_path) as conn:
        return dict(conn.execute("SELECT stage || '.' || port, digest FROM outputs").fetchall())


@pytest.fixture(scope="module")
def clean_digests(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Output digests of an undisturbed run of the layered spec (sync executor)."""
    folder = tmp_path_factory.mktemp("clean")
    spec = write_spec(folder, _layered_spec("layers"), {"steps.py": STEPS})
    pipeflow_ok(["run", spec, "--executor", "sync", "--quiet"])
    digests = _outputs(folder / ".pipeflow" / "pipeflow.db")
    assert len(digests) == 12
    return digests


@pytest.mark.parametrize("seed", [2, 7, 5])  # kill at the 1st, 6th and 10th stage to start
def test_a_worker_killed_mid_stage_is_survived_with_identical_outputs(
    cluster: Cluster, clean_digests: dict[str, str], tmp_path: Path, seed: int
) -> None:
    kill_at = random.Random(seed).randrange(10)
    spec = write_spec(tmp_path, _layered_spec("layers"), {"steps.py": STEPS})
    calls = tmp_path / "calls.log"
    workers = cluster.workers(2)
    worker_pids = {w.pid for w in workers}
    try:
        log = tmp_path / "run.log"
        argv = [PIPEFLOW, "run", spec, "--executor", "distributed", "--address", cluster.address]
        run = start(argv, log)

        def running_victim() -> tuple[str, int] | None:
            seen = events(calls)
            ended = {(stage, pid) for ev, stage, pid in seen if ev == "end"}
            starts = [(stage, pid) for ev, stage, pid in seen if ev == "start"]
            for stage, pid in starts[kill_at:]:
                if (stage, pid) not in ended and pid in worker_pids:
                    return stage, pid
            return None

        victim, victim_pid = wait_until(
            running_victim, 90, f"stage #{kill_at + 1} to start", run, log
        )
        os.kill(victim_pid, signal.SIGKILL)
        run.wait(timeout=120)
        output = log.read_text()
        assert run.returncode == 0, output
        assert "Traceback" not in output
    finally:
        cluster.stop(workers)

    seen = events(calls)
    started, ended = counts(calls, "start"), counts(calls, "end")
    # the stage the kill interrupted ran again, to the end, once
    assert (started[victim], ended[victim]) == (2, 1), (victim, seen)
    assert ("end", victim, victim_pid) not in seen, "the kill landed mid-stage"
    for stage in STAGES:
        assert ended[stage] >= 1, (stage, seen)
        if started[stage] > 1:  # any rerun is explained by the kill: it first ran there
            first = next(pid for ev, s, pid in seen if ev == "start" and s == stage)
            assert first == victim_pid, (stage, seen)

    db_path = tmp_path / ".pipeflow" / "pipeflow.db"
    with sqlite3.connect(db_path) as conn:
        runs = conn.execute("SELECT id, state FROM runs").fetchall()
        rows = conn.execute("SELECT stage, COUNT(*), MAX(state) FROM stage_runs GROUP BY stage")
        per_stage = {stage: (n, state) for stage, n, state in rows}
    assert len(runs) == 1 and runs[0][1] == "done", runs
    assert per_stage == dict.fromkeys(STAGES, (1, "done")), per_stage
    assert _outputs(db_path) == clean_digests
    assert_store_sound(spec)


KILLER_SPEC = """
    pipeline: crasher
    stages:
      a: {type: python, resources: {steady: 1}, with: {function: "steps:work", kwargs: {name: a, delay: 0.1}}}
      b: {type: python, inputs: {p: a}, resources: {steady: 1}, with: {function: "steps:work", kwargs: {name: b, delay: 0.1}}}
      c: {type: python, resources: {steady: 1}, with: {function: "steps:work", kwargs: {name: c, delay: 0.1}}}
      killer: {type: python, resources: {crashy: 1}, with: {function: "steps:kill_my_worker"}}
      after: {type: python, inputs: {p: killer}, resources: {steady: 1}, with: {function: "steps:work", kwargs: {name: after, delay: 0.1}}}
"""


def test_a_stage_that_kills_every_worker_fails_in_one_line_and_other_branches_finish(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Resources keep the innocent stages off the worker that dies: Dask fails every task that
    was assigned to a worker dying for the second time, innocent or not, and that is Dask's
    policy rather than pipeflow's. The crashing worker has a nanny, which restarts it."""
    spec = write_spec(tmp_path, KILLER_SPEC, {"steps.py": STEPS})
    calls = tmp_path / "calls.log"
    workers = cluster.workers(1, "--resources", "steady=1")
    workers += cluster.workers(1, "--resources", "crashy=1", nanny=True, total=2)
    try:
        argv = ["run", spec, "--executor", "distributed", "--address", cluster.address]
        proc = pipeflow(argv, timeout=120)
    finally:
        cluster.stop(workers)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    failed = [ln for ln in proc.stdout.splitlines() if ln.startswith("stage 'killer' failed:")]
    assert len(failed) == 1, proc.stdout
    assert "worker running it died 2 times" in failed[0], failed[0]
    assert "allowed-failures" in failed[0]
    assert counts(calls, "start")["killer"] == 2, "one attempt per allowed failure, plus one"

    with sqlite3.connect(tmp_path / ".pipeflow" / "pipeflow.db") as conn:
        states = dict(conn.execute("SELECT stage, state FROM stage_runs").fetchall())
        run_state = conn.execute("SELECT state FROM runs").fetchone()[0]
    assert states == {
        "a": "done",
        "b": "done",
        "c": "done",
        "killer": "failed",
        "after": "skipped",
    }
    assert run_state == "failed"
    assert_store_sound(spec)
