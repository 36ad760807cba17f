"""The run lock: one run per resolved spec and store at a time, and a dead holder's lock reclaimed.

The end-to-end test uses real ``pipeflow run`` processes: the first holds its lock while a stage
waits on a file; a second run of the same spec fails within seconds naming the holder; the same
file with different ``--set`` overrides still runs; after SIGKILL of the first, the next run takes
over the stale lock and finishes. The rest drive :func:`pipeflow.runner.session.run` in-process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import (
    PIPEFLOW,
    assert_store_sound,
    counts,
    kill_group,
    one_line_error,
    pipeflow,
    pipeflow_ok,
    start,
    wait_until,
)

from pipeflow.errors import RunLocked, StoreError
from pipeflow.runner.lock import lock_name
from pipeflow.runner.session import run
from pipeflow.spec.load import load
from pipeflow.testing import write_spec
from pipeflow.workspace import open_store

STEPS = """
    import os
    import time
    from pathlib import Path

    HERE = Path(__file__).parent

    def _log(event, name):
        with open(HERE / "calls.log", "a") as fh:
            fh.write(f"{event} {name} {os.getpid()}\\n")

    def prepare(seed):
        _log("start", "prepare")
        _log("end", "prepare")
        return seed

    def held(x):
        _log("start", "held")
        deadline = time.monotonic() + 90  # never outlive a broken test for long
        while (HERE / "hold").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        _log("end", "held")
        return x * 2

    def boom(x):
        raise ValueError("boom")
"""

SPEC = """
    pipeline: slowpoke
    params: {seed: 1}
    stages:
      prepare: {type: python, with: {function: "steps:prepare", kwargs: {seed: "${params.seed}"}}}
      held: {type: python, inputs: {x: prepare}, with: {function: "steps:held"}}
"""


def _lock_file(spec: Path, overrides: tuple[str, ...] = ()) -> Path:
    loaded = load(spec, overrides)
    store, db = open_store(loaded)
    db.close()
    return Path(store.root) / lock_name("slowpoke", loaded.digest)


@pytest.mark.slow
def test_a_second_run_of_the_same_spec_fails_fast_and_a_killed_holder_is_reclaimed(
    tmp_path: Path,
) -> None:
    spec = write_spec(tmp_path, SPEC, {"steps.py": STEPS})
    lock = _lock_file(spec)
    (tmp_path / "hold").write_text("")
    log = tmp_path / "first.log"
    first = start([PIPEFLOW, "run", spec], log)
    try:
        wait_until(
            lambda: counts(tmp_path / "calls.log", "start")["held"] == 1,
            60,
            "the first run to reach its held stage",
            first,
            log,
        )
        holder = json.loads(lock.read_text())
        assert holder["pid"] == first.pid and holder["host"] == socket.gethostname()

        t0 = time.monotonic()
        second = pipeflow(["run", spec], timeout=30)
        elapsed = time.monotonic() - t0
        assert second.returncode == 1, second.stdout + second.stderr
        assert elapsed < 10, f"the second run took {elapsed:.1f}s to give up"
        line = one_line_error(second.stderr)
        assert "pipeline 'slowpoke' is already running" in line
        assert f"pid {first.pid} on host {socket.gethostname()}" in line
        assert f"run {holder['run_id']}" in line and "started 20" in line
        assert str(lock) in line

        # the same file with other overrides is another resolved spec: it runs alongside
        other = pipeflow(["run", spec, "--set", "params.seed=2", "--only", "prepare"])
        assert other.returncode == 0, other.stdout + other.stderr

        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        kill_group(first)
    assert first.returncode == -signal.SIGKILL
    assert json.loads(lock.read_text())["pid"] == first.pid, "a killed run cannot clean up"

    (tmp_path / "hold").unlink()
    rerun = pipeflow_ok(["run", spec])
    assert "1 done, 1 cached" in rerun.stdout, rerun.stdout
    assert not lock.exists(), "the reclaiming run removes its lock when it ends"
    started, ended = counts(tmp_path / "calls.log", "start"), counts(tmp_path / "calls.log", "end")
    assert started["held"] == 2 and ended["held"] == 1, (started, ended)
    assert started["prepare"] == 2, "once per seed: the rerun reused seed 1's result"
    assert_store_sound(spec)


def test_the_lock_is_removed_when_a_run_ends_well_or_badly(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        SPEC + '      bad: {type: python, inputs: {x: prepare}, with: {function: "steps:boom"}}\n',
        {"steps.py": STEPS},
    )
    lock = _lock_file(spec)
    report = run(spec, executor="sync")
    assert not report.ok and report.failed == ["bad"]
    assert not lock.exists()
    assert list(lock.parent.iterdir()) == []


def test_a_lock_of_a_process_that_is_gone_is_reclaimed(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, SPEC, {"steps.py": STEPS})
    lock = _lock_file(spec)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.parent.mkdir(parents=True)
    stale = {"pid": dead.pid, "host": socket.gethostname(), "started": 1.0, "run_id": "old"}
    lock.write_text(json.dumps(stale))
    assert run(spec, executor="sync").ok
    assert not lock.exists()


def test_a_lock_whose_pid_was_reused_by_a_newer_process_is_reclaimed(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, SPEC, {"steps.py": STEPS})
    lock = _lock_file(spec)
    lock.parent.mkdir(parents=True)
    # our own pid, but recorded with another start time: the holder was an earlier process
    reused = {
        "pid": os.getpid(),
        "pid_start": 1,
        "host": socket.gethostname(),
        "started": 1.0,
        "run_id": "old",
    }
    if not Path(f"/proc/{os.getpid()}/stat").exists():
        pytest.skip("process start times come from /proc")
    lock.write_text(json.dumps(reused))
    assert run(spec, executor="sync").ok


def test_a_lock_held_on_another_host_is_never_taken_and_the_message_says_what_to_remove(
    tmp_path: Path,
) -> None:
    spec = write_spec(tmp_path, SPEC, {"steps.py": STEPS})
    lock = _lock_file(spec)
    lock.parent.mkdir(parents=True)
    holder = {"pid": 1, "host": "elsewhere", "started": time.time(), "run_id": "r-1"}
    lock.write_text(json.dumps(holder))
    with pytest.raises(RunLocked) as caught:
        run(spec, executor="sync")
    message = str(caught.value)
    assert "pid 1 on host elsewhere" in message and f"remove {lock}" in message
    assert caught.value.exit_code == 1 and caught.value.holder["run_id"] == "r-1"
    assert json.loads(lock.read_text()) == holder, "someone else's lock is left alone"


def test_a_run_in_this_process_holds_its_lock_against_another_in_the_same_process(
    tmp_path: Path,
) -> None:
    spec = write_spec(tmp_path, SPEC, {"steps.py": STEPS})
    (tmp_path / "hold").write_text("")
    import threading

    outcome: dict[str, object] = {}
    thread = threading.Thread(target=lambda: outcome.update(report=run(spec, executor="sync")))
    thread.start()
    try:
        wait_until(
            lambda: counts(tmp_path / "calls.log", "start")["held"] == 1, 30, "the held stage"
        )
        with pytest.raises(RunLocked, match=f"pid {os.getpid()} "):
            run(spec, executor="sync")
    finally:
        (tmp_path / "hold").unlink()
        thread.join(30)
    assert outcome["report"].ok  # type: ignore[attr-defined]


def test_an_unreadable_lock_is_an_error_naming_the_file(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, SPEC, {"steps.py": STEPS})
    lock = _lock_file(spec)
    lock.parent.mkdir(parents=True)
    lock.write_text("{")
    with pytest.raises(StoreError, match=f"run lock {lock} is unreadable"):
        run(spec, executor="sync")
