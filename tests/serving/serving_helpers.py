"""Helpers of the serving tests: the tumours project, a real `pipeflow serve` on 127.0.0.1.

A module of its own (not conftest.py), so test files import it by a unique name.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from pipeflow.testing import PIPEFLOW, Served, free_port, pipeflow_cli, serve

__all__ = ["PIPEFLOW", "PROJECT", "Served", "free_port", "pf", "rows", "start_server"]

PROJECT = Path(__file__).parents[1] / "registry" / "project"


def pf(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return pipeflow_cli(project, *args)


def rows(project: Path, n: int = 5) -> list[dict]:
    import pandas as pd

    frame = pd.read_csv(project / "data.csv").drop(columns=["diagnosis"]).head(n)
    return frame.to_dict(orient="records")


def start_server(
    project: Path, *args: str, store: Path | None = None, env: dict[str, str] | None = None
) -> Served:
    store = store or project / ".pipeflow"
    return serve(project, *args, "--store", str(store), env=env)
