"""SIGKILL of ``pipeflow run`` at several points of a chain: the store stays sound, and the next
run runs exactly the stages that had not finished.

The chain ``s1 -> ... -> s6`` runs beside a ``churn`` stage that keeps writing objects, so the
kill lands while bytes are being written. One stage of the chain (a different one per case) waits
on a file, and the kill comes once the stages before it are recorded: which stages finished is
then known for certain, and the counter file (each stage appends ``start``/``end`` lines) shows
which ran again, without relying on timings.
"""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

import pytest
from helpers import (
    PIPEFLOW,
    assert_store_sound,
    counts,
    kill_group,
    pipeflow_ok,
    start,
    wait_until,
)

from pipeflow.testing import write_spec

pytestmark = pytest.mark.slow

STEPS = """
    import os
    import time
    from pathlib import Path

    HERE = Path(__file__).parent

    def _log(event, name):
        with open(HERE / "calls.log", "a") as fh:
            fh.write(f"{event} {name} {os.getpid()}\\n")

    def step(name, held, x=0):
        _log("start", name)
        # longer than ArtifactStore.durable_after_s: the result's manifest is written at once,
        # before the stage is recorded (shorter results are batched and may be lost by a kill)
        time.sleep(0.06)
        deadline = time.monotonic() + 90
        while held and (HERE / "hold").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        _log("end", name)
        return x + len(name)

    def churn(root):
        from pipeflow.store.artifacts import ArtifactStore

        _log("start", "churn")
        store = ArtifactStore(root)
        deadline = time.monotonic() + 90
        while (HERE / "hold").exists() and time.monotonic() < deadline:
            store.put(os.urandom(256 * 1024))
        _log("end", "churn")
        return "churned"
"""

CHAIN = [f"s{i}" for i in range(1, 7)]


def _spec(held: str, root: Path) -> str:
    lines = ["pipeline: killed-chain", "executor: {kind: threads, workers: 3}", "stages:"]
    for i, name in enumerate(CHAIN):
        inputs = f"inputs: {{x: {CHAIN[i - 1]}}}, " if i else ""
        kwargs = f"{{name: {name}, held: {str(name == held).lower()}}}"
        lines.append(
            f'  {name}: {{type: python, {inputs}with: {{function: "steps:step", kwargs: {kwargs}}}}}'
        )
    lines.append(
        f'  churn: {{type: python, with: {{function: "steps:churn", kwargs: {{root: "{root}"}}}}}}'
    )
    return "\n".join(lines) + "\n"


def _recorded_done(db_path: Path) -> set[str]:
    if not db_path.exists():
        return set()
    try:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=1) as conn:
            rows = conn.execute("SELECT stage FROM stage_runs WHERE state = 'done'").fetchall()
    except sqlite3.Error:
        return set()
    return {r[0] for r in rows}


@pytest.mark.parametrize("held", ["s1", "s3", "s6"])
def test_sigkill_mid_run_leaves_a_sound_store_and_the_next_run_runs_only_what_was_unfinished(
    tmp_path: Path, held: str
) -> None:
    root = tmp_path / ".pipeflow"
    spec = write_spec(tmp_path, _spec(held, root), {"steps.py": STEPS})
    calls = tmp_path / "calls.log"
    finished = set(CHAIN[: CHAIN.index(held)])
    (tmp_path / "hold").write_text("")
    log = tmp_path / "killed.log"
    proc = start([PIPEFLOW, "run", spec], log)
    try:
        wait_until(
            lambda: (
                counts(calls, "start")[held] == 1
                and counts(calls, "start")["churn"] == 1
                and _recorded_done(root / "pipeflow.db") >= finished
            ),
            60,
            f"{held} to be held with everything before it recorded",
            proc,
            log,
        )
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        kill_group(proc)
    assert proc.returncode == -signal.SIGKILL
    assert_store_sound(spec)
    before = counts(calls, "start")

    (tmp_path / "hold").unlink()
    rerun = pipeflow_ok(["run", spec])
    unfinished = {*CHAIN[CHAIN.index(held) :], "churn"}
    started = counts(calls, "start")
    ran_again = {name for name in started if started[name] > before[name]}
    assert ran_again == unfinished, rerun.stdout
    assert all(started[name] == 1 for name in finished), started
    assert started[held] == 2 and started["churn"] == 2, started
    assert f"{len(unfinished)} done, {len(finished)} cached" in rerun.stdout, rerun.stdout
    assert_store_sound(spec)
    with sqlite3.connect(root / "pipeflow.db") as conn:
        states = dict(conn.execute("SELECT id, state FROM runs").fetchall())
        per_stage = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT stage) FROM stage_runs WHERE run_id ="
            " (SELECT id FROM runs ORDER BY started DESC LIMIT 1)"
        ).fetchone()
    assert sorted(states.values()) == ["done", "interrupted"], states
    assert per_stage == (7, 7)
