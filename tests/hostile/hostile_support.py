"""Helpers of the hostile-input tests: a real `pipeflow serve` process on 127.0.0.1, the rows it
accepts, and reading its Prometheus counters.

(The process itself is pipeflow.testing's ``serve``, shared with the serving tests.)
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from pipeflow.testing import PIPEFLOW, Served, free_port, pipeflow_cli, serve

__all__ = [
    "MODEL",
    "PIPEFLOW",
    "PREDICT",
    "PROJECT",
    "Served",
    "counter",
    "files_under",
    "free_port",
    "pf",
    "sample_rows",
    "start_server",
]

PROJECT = Path(__file__).parents[1] / "registry" / "project"
MODEL = "tumours"
PREDICT = f"/v1/models/{MODEL}/predict"


def pf(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the `pipeflow` command line as a user would."""
    return pipeflow_cli(cwd, *args, timeout=timeout)


def start_server(cwd: Path, store: Path, *args: str) -> Served:
    """`pipeflow serve tumours@production` on a free port of 127.0.0.1, once it answers /ready."""
    return serve(
        cwd,
        f"{MODEL}@production",
        *args,
        "--store",
        str(store),
        "--log-level",
        "warning",
        log_dir=store.parent,
        client_timeout=60,
    )


def sample_rows(project: Path, n: int = 5) -> list[dict]:
    import pandas as pd

    frame = pd.read_csv(project / "data.csv").drop(columns=["diagnosis"]).head(n)
    return frame.to_dict(orient="records")


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
