"""Helpers shared by the integration tests: the real ``pipeflow`` console script, free ports,
parsing of ``pipeflow run`` output, and killing what a test started.

Everything runs on 127.0.0.1 and every subprocess wait has a timeout, so a hung child fails the
test instead of hanging the suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeflow.testing import cli_env, free_port, kill_group

__all__ = [
    "DASK",
    "PIPEFLOW",
    "calls",
    "cli_env",
    "free_port",
    "kill_group",
    "pipeflow",
    "pipeflow_ok",
    "show_run",
    "stage_lines",
]

PIPEFLOW = str(Path(sys.executable).with_name("pipeflow"))
DASK = str(Path(sys.executable).with_name("dask"))


def pipeflow(
    args: Sequence[Any], *, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``pipeflow`` script to completion (or fail the test on timeout)."""
    return subprocess.run(
        [PIPEFLOW, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(),
    )


def pipeflow_ok(args: Sequence[Any], **kwargs: Any) -> subprocess.CompletedProcess[str]:
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


def calls(directory: Path, name: str = "calls.log") -> list[str]:
    """Lines appended by the example steps each time a function actually runs."""
    path = directory / name
    return path.read_text().split() if path.exists() else []
