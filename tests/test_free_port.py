"""``pipeflow.testing.free_port`` under parallel test processes: two processes asking at the same
time are never handed the same port, and none is one the kernel could give anybody else."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from pipeflow.testing import _ephemeral_low, free_port

ASKS = 300  # two processes drawing 300 ports each from the ephemeral range meet about twice

CHILD = f"""
import sys
from pipeflow.testing import free_port
print(" ".join(str(free_port()) for _ in range({ASKS})), flush=True)
sys.stdin.read()  # hold the reservations until the parent has drawn its own
"""


def test_two_processes_asking_at_once_are_never_handed_the_same_port(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        assert child.stdout is not None
        theirs = {int(p) for p in child.stdout.readline().split()}
        ours = {free_port() for _ in range(ASKS)}
    finally:
        child.communicate("", timeout=60)
    assert len(theirs) == len(ours) == ASKS  # nor the same port twice to one process
    assert not theirs & ours


def test_a_port_handed_out_is_below_the_ephemeral_range_and_free() -> None:
    port = free_port()
    assert 1024 <= port < _ephemeral_low()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # nobody listens on it


def _children(tmp: Path, count: int) -> list[set[int]]:
    """The ports ``count`` processes with ``tmp`` as their temporary folder drew at once."""
    env = {**os.environ, "TMPDIR": str(tmp)}
    kids = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(count)
    ]
    try:
        return [{int(p) for p in kid.stdout.readline().split()} for kid in kids]  # type: ignore[union-attr]
    finally:
        for kid in kids:
            kid.communicate("", timeout=60)


def test_the_reservations_file_is_made_for_every_user(tmp_path: Path) -> None:
    _children(tmp_path, 1)
    assert (tmp_path / "pipeflow-ports.lock").stat().st_mode & 0o777 == 0o666


def test_where_the_shared_file_cannot_be_opened_each_user_reserves_in_their_own(
    tmp_path: Path,
) -> None:
    """Another user's reservations file this user may not write (here: a folder in its place)
    falls back to this user's own file, so this user's processes still keep ports apart."""
    (tmp_path / "pipeflow-ports.lock").mkdir()
    first, second = _children(tmp_path, 2)
    assert len(first) == len(second) == ASKS
    assert not first & second
    assert (tmp_path / f"pipeflow-ports-{os.getuid()}.lock").is_file()
