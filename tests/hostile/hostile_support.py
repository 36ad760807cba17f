"""Helpers of the hostile-input tests: a real `pipeflow serve` process on 127.0.0.1, the rows it
accepts, and reading its Prometheus counters.

(Copied in small from tests/serving/conftest.py rather than imported from it: that module is a
conftest and is edited on its own schedule; these tests only need a process, a port and a URL.)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

PIPEFLOW = str(Path(sys.executable).with_name("pipeflow"))
PROJECT = Path(__file__).parents[1] / "registry" / "project"
MODEL = "tumours"
PREDICT = f"/v1/models/{MODEL}/predict"


def pf(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the `pipeflow` command line as a user would."""
    return subprocess.run(
        [PIPEFLOW, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200"},
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """A `pipeflow serve` process and its URL."""

    def __init__(self, proc: subprocess.Popen[str], url: str, log: Path):
        self.proc, self.url, self.log = proc, url, log

    def client(self, **kw: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kw)  # type: ignore[arg-type]

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            return False
        try:
            return httpx.get(self.url + "/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)


def start_server(cwd: Path, store: Path, *args: str) -> Served:
    """`pipeflow serve tumours@production` on a free port of 127.0.0.1, once it answers /ready."""
    port = free_port()
    log = store.parent / f"serve-{port}.log"
    proc = subprocess.Popen(
        [PIPEFLOW, "serve", f"{MODEL}@production", *args, "--port", str(port)]
        + ["--store", str(store), "--log-level", "warning"],
        cwd=cwd,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}: {log.read_text()}")
        try:
            if httpx.get(url + "/ready", timeout=1).status_code == 200:
                return Served(proc, url, log)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"server did not become ready: {log.read_text()}")


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
