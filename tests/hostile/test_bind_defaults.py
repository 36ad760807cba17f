"""Servers bind 127.0.0.1 unless told otherwise: `pipeflow serve`, `pipeflow ui` and the serve
stage say so in their help and defaults, and a started server listens on the loopback only."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from helpers import PIPEFLOW, Served, free_port, pipeflow

LOOPBACK = "127.0.0.1"


@pytest.mark.parametrize("command", ["serve", "ui"])
def test_help_shows_loopback_as_the_default_host(tmp_path: Path, command: str) -> None:
    done = pipeflow([command, "--help"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    help_text = " ".join(done.stdout.split())  # argparse wraps lines
    assert f"--host HOST interface to bind (default {LOOPBACK})" in help_text


@pytest.mark.parametrize("argv", [["serve", "m@production"], ["ui"]])
def test_the_parsed_default_host_is_loopback(argv: list[str]) -> None:
    from pipeflow.cli import _parser

    assert _parser().parse_args(argv).host == LOOPBACK


def test_the_serve_stage_binds_loopback_by_default(tmp_path: Path) -> None:
    from pipeflow.stages.serve import ServeStageConfig

    assert ServeStageConfig(model="m@production").host == LOOPBACK
    shown = json.loads(pipeflow(["stages", "--json"], cwd=tmp_path).stdout)["serve"]["config"][
        "host"
    ]
    assert shown["default"] == repr(LOOPBACK)


def _listeners(port: int) -> set[str]:
    """Local addresses listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.rpartition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net/tcp")
def test_a_started_model_server_listens_on_loopback_only(
    server_factory: Callable[..., tuple[Served, Path]],
) -> None:
    served, _ = server_factory()
    port = int(served.url.rsplit(":", 1)[1])
    assert _listeners(port) == {"0100007F"}  # 127.0.0.1, little-endian hex; nothing on 0.0.0.0


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net/tcp")
def test_a_started_dashboard_listens_on_loopback_only(hostile_project: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [PIPEFLOW, "ui", "--store", str(hostile_project / ".pipeflow"), "--port", str(port)],
        cwd=hostile_project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, "pipeflow ui exited"
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert _listeners(port) == {"0100007F"}
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)
