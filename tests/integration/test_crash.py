"""A ``pipeflow run`` killed with SIGKILL mid-way: the store and the database stay sound, and the
next run finishes, reusing what the killed run completed.

While the killed run's middle stage sleeps, a parallel stage keeps writing objects into the
store, so the kill lands while artifact bytes are being written: no object under a valid name may
be half-written afterwards (they are written under ``tmp/`` and moved into place).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import (
    PIPEFLOW,
    calls,
    kill_group,
    pipeflow,
    pipeflow_ok,
    show_run,
)

from pipeflow.store.database import open_metadata
from pipeflow.testing import start, write_spec

pytestmark = pytest.mark.slow

STEPS = """
    import os
    import time
    from pathlib import Path

    HERE = Path(__file__).parent

    def _called(name):
        with open(HERE / "calls.log", "a") as fh:
            fh.write(name + "\\n")

    def first():
        _called("first")
        return list(range(100))

    def second(xs):
        _called("second")
        return sum(xs)

    def middle(total):
        _called("middle")
        while (HERE / "hold").exists():  # the test removes it before the second run
            time.sleep(0.05)
        return total * 2

    def last(value):
        _called("last")
        return f"result={value}"

    def churn(xs, root):
        # keep writing artifacts while the run is held, so SIGKILL hits a write in progress
        from pipeflow.store.artifacts import ArtifactStore

        _called("churn")
        store = ArtifactStore(root)
        written = 0
        while (HERE / "hold").exists():
            store.put(os.urandom(256 * 1024))
            written += 1
        return len(xs)
"""

SPEC = """
    pipeline: crashy
    executor: {kind: threads, workers: 4}
    stages:
      first: {type: python, with: {function: "steps:first"}}
      second: {type: python, inputs: {xs: first}, with: {function: "steps:second"}}
      middle: {type: python, inputs: {total: second}, with: {function: "steps:middle"}}
      last: {type: python, inputs: {value: middle}, with: {function: "steps:last"}}
      churn: {type: python, inputs: {xs: first}, with: {function: "steps:churn", kwargs: {root: "STORE_ROOT"}}}
"""


def _db_states(db_path: Path) -> dict[str, str]:
    if not db_path.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=1) as conn:
            return dict(conn.execute("SELECT stage, state FROM stage_runs").fetchall())
    except sqlite3.Error:
        return {}


def _wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen, log: Path
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(
                f"pipeflow run exited ({proc.returncode}) before {what}:\n{log.read_text()}"
            )
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}:\n{log.read_text()}")


def test_sigkill_mid_run_leaves_a_sound_store_and_the_next_run_resumes(tmp_path: Path) -> None:
    store_root = tmp_path / ".pipeflow"
    spec = write_spec(tmp_path, SPEC.replace("STORE_ROOT", str(store_root)), {"steps.py": STEPS})
    db_path = store_root / "pipeflow.db"
    (tmp_path / "hold").write_text("")

    log_path = tmp_path / "killed-run.log"
    proc = start([PIPEFLOW, "run", spec], log_path)
    try:
        _wait_until(
            lambda: (
                _db_states(db_path).get("first") == "done"
                and _db_states(db_path).get("second") == "done"
            ),
            60,
            "the first stages to be recorded",
            proc,
            log_path,
        )
        _wait_until(
            lambda: {"middle", "churn"} <= set(calls(tmp_path)),
            30,
            "middle and churn to start",
            proc,
            log_path,
        )
        time.sleep(0.6)  # results are made durable within a fraction of a second; let churn write
        assert proc.poll() is None, "the run must still be going (middle is held)"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        kill_group(proc)
    assert proc.returncode == -signal.SIGKILL

    killed = show_run(spec)
    killed_id = killed["run"]["id"]
    assert killed["run"]["state"] == "running", "nobody has noticed the death yet"
    assert killed["by_stage"]["first"]["state"] == "done"
    assert killed["by_stage"]["second"]["state"] == "done"
    assert killed["by_stage"]["middle"]["state"] in ("pending", "running")
    assert killed["by_stage"]["last"]["state"] == "pending"

    _assert_store_is_sound(store_root)

    # the second run finishes, reusing what the killed run completed
    (tmp_path / "hold").unlink()
    pipeflow_ok(["run", spec], timeout=120)
    rerun = show_run(spec)
    assert rerun["run"]["id"] != killed_id and rerun["run"]["state"] == "done"
    stages = rerun["by_stage"]
    assert stages["first"]["state"] == "cached" and stages["second"]["state"] == "cached"
    assert stages["first"]["reason"].endswith(f"as run {killed_id}")
    assert stages["middle"]["state"] == "done" and stages["last"]["state"] == "done"
    ran = calls(tmp_path)
    assert ran.count("first") == 1 and ran.count("second") == 1, ran
    assert ran.count("middle") == 2 and ran.count("last") == 1, ran

    # the killed run is now marked interrupted, in the database and in `pipeflow runs list`
    listed = pipeflow_ok(["runs", "list", "--spec", spec])
    line = next(ln for ln in listed.stdout.splitlines() if killed_id in ln)
    assert "interrupted" in line, listed.stdout
    db = open_metadata(db_path)
    try:
        row = db.find_run(killed_id)
        assert row["state"] == "interrupted"
        assert row["error"] == "the run process died"
        assert db.integrity_check() == "ok"
    finally:
        db.close()
    shown = pipeflow(["runs", "show", killed_id, "--spec", spec])
    assert shown.returncode == 0 and "interrupted" in shown.stdout

    _assert_store_is_sound(store_root)
    final = pipeflow_ok(["run", spec])
    assert " 0 done, 5 cached" in final.stdout, final.stdout


def _assert_store_is_sound(root: Path) -> None:
    """Every object matches its name, and every manifest names objects that exist."""
    objects = [p for p in (root / "objects").rglob("*") if p.is_file()]
    assert objects, "the killed run stored artifacts"
    for path in objects:
        digest = path.parent.name + path.name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, (
            f"{path} does not match its hash"
        )
    manifests = []
    for path in (root / "cache").rglob("*"):
        if path.suffix == ".json":
            manifests.append(json.loads(path.read_text()))
        elif path.suffix == ".jsonl":
            manifests += [
                json.loads(line)["manifest"] for line in path.read_text().splitlines() if line
            ]
    assert manifests, "finished stages left manifests"
    for manifest in manifests:
        for ref in manifest["outputs"].values():
            digest = ref["digest"]
            assert (root / "objects" / digest[:2] / digest[2:]).is_file(), (
                f"manifest {manifest['stage']} names a missing object"
            )
