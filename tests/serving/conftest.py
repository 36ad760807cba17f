"""A registry with real trained models, and a real `pipeflow serve` process on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

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


@pytest.fixture(scope="session")
def tumours(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tumours project after two runs: v1 (production) and v2 (C=0.2, not promoted)."""
    from pipeflow.testing import tumour_table

    where = tmp_path_factory.mktemp("serving") / "tumours"
    shutil.copytree(PROJECT, where)
    frame = tumour_table()
    frame.to_csv(where / "data.csv", index=False)
    first = pf(where, "run", "pipeline.yaml", "--quiet")
    assert first.returncode == 0, first.stdout + first.stderr
    second = pf(
        where,
        "run",
        "pipeline.yaml",
        "--quiet",
        "--set",
        "params.C=0.2",
        "--set",
        "params.min_accuracy=0.9999",
    )
    assert second.returncode == 1  # registered as v2, production stays on v1
    return where


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


@pytest.fixture
def serve(tumours: Path) -> Iterator[object]:
    started: list[Served] = []

    def run(*args: str, store: Path | None = None, env: dict[str, str] | None = None) -> Served:
        s = start_server(tumours, *args, store=store, env=env)
        started.append(s)
        return s

    yield run
    for s in started:
        if s.proc.poll() is None:
            s.proc.terminate()
            try:
                s.proc.wait(10)
            except subprocess.TimeoutExpired:
                s.kill()


@pytest.fixture
def own_store(tumours: Path, tmp_path: Path) -> Path:
    """A private copy of the tumours store, for tests that move aliases or read the audit log."""
    copy = tmp_path / "store"
    shutil.copytree(tumours / ".pipeflow", copy, ignore=shutil.ignore_patterns("audit"))
    return copy
