"""Live progress and stage log lines, as a user sees them: real ``pipeflow run`` processes whose
python stage logs through Python ``logging`` and reports ``ctx.progress``; the lines are stored
with the run (SQLite file, real PostgreSQL server) on the threads, processes and distributed
executors and printed by ``pipeflow runs logs``; under a pseudo-terminal the run draws a live
frame per running stage, and without one its output is the plain lines it always was."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import PIPEFLOW, cli_env, one_line_error, pipeflow, pipeflow_ok

from pipeflow.testing import write_spec

SPEC = """
    pipeline: prog
    stages:
      work:
        type: python
        with: {function: "steps:work"}
      after:
        type: python
        inputs: {n: work}
        with: {function: "steps:after"}
"""
STEPS = """
    import logging
    import os
    import time

    log = logging.getLogger("steps.work")

    def work(ctx):
        steps = int(os.environ.get("PROGRESS_STEPS", "3"))
        for i in range(steps):
            ctx.progress(i + 1, steps, message=f"chunk {i + 1}")
            log.info("chunk %d of %d", i + 1, steps)
            time.sleep(float(os.environ.get("PROGRESS_SLEEP", "0")))
        log.debug("too fine to keep")
        log.warning("pid %d done", os.getpid())
        return {"out": steps}

    def after(n, ctx):
        logging.getLogger("steps.after").info("got %s", n["out"])
        raise ValueError("boom")
"""


def _project(where: Path) -> Path:
    return write_spec(where, SPEC, {"steps.py": STEPS})


@pytest.fixture(
    scope="module",
    params=[
        ("sqlite", "threads"),
        ("sqlite", "processes"),
        ("postgres", "threads"),
        ("postgres", "processes"),
        ("sqlite", "distributed"),
    ],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def ran(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    database, executor = request.param
    extra = {}
    if database == "postgres":
        extra["PIPEFLOW_STORE__METADATA"] = request.getfixturevalue("postgres").database()
    env = cli_env(**extra)
    spec = _project(tmp_path_factory.mktemp(f"prog-{database}-{executor}"))
    done = pipeflow(["run", spec, "--executor", executor], env=env, timeout=240)
    assert done.returncode == 1, done.stderr  # `after` fails, on purpose
    return {"spec": spec, "env": env, "run": done}


def _logs(ran: dict, *args: str) -> subprocess.CompletedProcess[str]:
    return pipeflow_ok(["runs", "logs", "latest", *args, "--spec", ran["spec"]], env=ran["env"])


def test_the_log_lines_of_a_stage_are_stored_with_the_run(ran: dict) -> None:
    rows = json.loads(_logs(ran, "work", "--json").stdout)
    assert [(r["line"], r["level"], r["logger"]) for r in rows] == [
        (1, "INFO", "steps.work"),
        (2, "INFO", "steps.work"),
        (3, "INFO", "steps.work"),
        (4, "WARNING", "steps.work"),
    ]
    assert [r["message"] for r in rows[:3]] == ["chunk 1 of 3", "chunk 2 of 3", "chunk 3 of 3"]
    assert re.fullmatch(r"pid \d+ done", rows[3]["message"])  # DEBUG is not kept


def test_a_failed_stage_keeps_its_log_lines(ran: dict) -> None:
    rows = json.loads(_logs(ran, "after", "--json").stdout)
    assert [(r["logger"], r["message"]) for r in rows] == [("steps.after", "got 3")]


def test_runs_logs_prints_every_stage_in_pipeline_order(ran: dict) -> None:
    text = _logs(ran).stdout
    assert (
        text.index("── work (done)") < text.index("chunk 1 of 3") < text.index("── after (failed)")
    )
    assert re.search(r"^\d\d:\d\d:\d\d INFO    steps.after: got 3$", text, re.M)


def test_without_a_terminal_the_run_prints_only_its_usual_lines(ran: dict) -> None:
    out = ran["run"].stdout
    lines = [line for line in out.splitlines() if line]
    assert lines[0] == "prog: 2 stages, 2 to run, 0 reused from the store"
    assert re.fullmatch(r"  ✓ work +done +\d.*s", lines[3])
    assert re.fullmatch(r"  ✗ after +failed +ValueError: boom", lines[4])
    assert re.fullmatch(r"run \S+ failed in .*: 1 done, 0 cached, 1 failed, 0 skipped", lines[5])
    assert len(lines) == 8 and "\x1b" not in out and "chunk" not in out
    assert "chunk" not in ran["run"].stderr  # INFO is kept, not printed


def test_a_reused_stage_says_where_its_lines_are(tmp_path: Path) -> None:
    spec = _project(tmp_path)
    pipeflow(["run", spec])
    first = json.loads(pipeflow_ok(["runs", "list", "--spec", spec, "--json"]).stdout)[0]["id"]
    pipeflow(["run", spec])
    text = pipeflow_ok(["runs", "logs", "latest", "work", "--spec", spec]).stdout
    assert "── work (cached)" in text and first in text and "chunk" not in text
    assert "chunk 1 of 3" in pipeflow_ok(["runs", "logs", first, "work", "--spec", spec]).stdout


def test_runs_logs_names_the_stages_of_the_run_for_an_unknown_stage(tmp_path: Path) -> None:
    spec = _project(tmp_path)
    pipeflow(["run", spec])
    bad = pipeflow(["runs", "logs", "latest", "wrok", "--spec", spec])
    assert bad.returncode == 2
    assert one_line_error(bad.stderr).endswith("has no stage 'wrok' (its stages: work, after)")


def _under_a_terminal(args: list[Any], env: dict[str, str], timeout: float = 120) -> str:
    """Run ``pipeflow ARGS`` with a pseudo-terminal as its stdout and stderr; all it wrote."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [PIPEFLOW, *map(str, args)],
        stdout=follower,
        stderr=follower,
        stdin=subprocess.DEVNULL,
        env={**env, "COLUMNS": "120", "LINES": "40", "TERM": "xterm-256color"},
    )
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    data = os.read(leader, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        else:
            pytest.fail("pipeflow run under a terminal did not finish")
    finally:
        proc.wait(timeout=30)
        os.close(leader)
    return b"".join(chunks).decode("utf-8", "replace")


def test_on_a_terminal_each_running_stage_shows_a_spinner_its_progress_and_latest_line(
    tmp_path: Path,
) -> None:
    spec = _project(tmp_path)
    env = cli_env(PROGRESS_STEPS="8", PROGRESS_SLEEP="0.3")
    out = _under_a_terminal(["run", spec], env)
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)
    frames = [line for line in plain.splitlines() if re.search(r"^\S\s+work\b", line)]
    assert frames, plain[-2000:]
    spinners = {line[0] for line in frames}
    assert spinners & set("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏")  # rich's dots spinner
    shown = " ".join(frames)
    assert re.search(r"\b[1-8]/8 +\d+%", shown)  # done/total and percent
    assert re.search(r"0:00:\d\d", shown)  # elapsed time
    assert "chunk" in shown and "steps.work" in shown  # the message and the latest log line
    assert "✓ work" in plain and "✗ after" in plain  # the usual lines are still printed
