"""Helpers of the serving tests: the tumours project, a real `pipeflow serve` on 127.0.0.1.

A module of its own (not conftest.py), so test files import it by a unique name.
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


def pf(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PIPEFLOW, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=project,
        env={**os.environ, "COLUMNS": "200"},
    )


def rows(project: Path, n: int = 5) -> list[dict]:
    import pandas as pd

    frame = pd.read_csv(project / "data.csv").drop(columns=["diagnosis"]).head(n)
    return frame.to_dict(orient="records")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    def __init__(self, proc: subprocess.Popen[str], url: str, log: Path):
        self.proc, self.url, self.log = proc, url, log

    def client(self, **kw: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kw)  # type: ignore[arg-type]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)


def start_server(
    project: Path, *args: str, store: Path | None = None, env: dict[str, str] | None = None
) -> Served:
    port = free_port()
    log = project / f"serve-{port}.log"
    store = store or project / ".pipeflow"
    proc = subprocess.Popen(
        [PIPEFLOW, "serve", *args, "--port", str(port), "--store", str(store)],
        cwd=project,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
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
