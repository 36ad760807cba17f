"""Helpers for the fault tests: the real ``pipeflow`` and ``dask`` scripts, process groups that
are always cleaned up, counter files written by stages, and the store check every test ends with.

Every wait has a timeout, so a hung child fails its test instead of hanging the suite.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pipeflow.spec.load import load
from pipeflow.store.check import check_store
from pipeflow.testing import cli_env, free_port, kill_group, start
from pipeflow.workspace import open_store

__all__ = [
    "DASK",
    "PIPEFLOW",
    "assert_store_sound",
    "cli_env",
    "counts",
    "events",
    "free_port",
    "hard_kill",
    "kill_group",
    "one_line_error",
    "pipeflow",
    "pipeflow_ok",
    "processes",
    "start",
    "wait_until",
]

PIPEFLOW = str(Path(sys.executable).with_name("pipeflow"))
DASK = str(Path(sys.executable).with_name("dask"))


def pipeflow(
    args: Sequence[Any],
    *,
    timeout: float = 120,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``pipeflow`` script to completion (a timeout fails the test)."""
    return subprocess.run(
        [PIPEFLOW, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or cli_env(),
        preexec_fn=preexec_fn,
    )


def pipeflow_ok(args: Sequence[Any], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    proc = pipeflow(args, **kwargs)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


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


def assert_store_sound(spec: Path, overrides: Sequence[str] = ()) -> None:
    """The store and metadata database of ``spec`` pass :func:`check_store`."""
    store, db = open_store(load(spec, overrides))
    try:
        problems = check_store(store, db)
    finally:
        db.close()
    assert problems == [], "\n".join(problems)


def one_line_error(stderr: str) -> str:
    """The single ``error: ...`` line of a failed command; no traceback anywhere."""
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]
