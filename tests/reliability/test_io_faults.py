"""The store's disk refuses a write, fills up, or cannot be reached: ``pipeflow run`` says so in
one line naming the path (exit 1, no traceback), the store stays sound, and once the cause is gone
the next run succeeds.

- Permission denied: the store's ``objects/`` folders are made read-only after a first run, so
  the second run's new output cannot be stored. Root ignores file modes, so when the tests run as
  root the run is started without the capabilities that let it (CAP_DAC_OVERRIDE and
  CAP_DAC_READ_SEARCH, dropped from the bounding set before ``exec``). A file sitting where the
  store needs a folder is the other way a path refuses writes, and needs no privileges at all.
- Disk full: the run is started with ``RLIMIT_FSIZE`` below the size of one output (SIGXFSZ
  ignored, so writes fail with EFBIG), and, where a tmpfs can be mounted, on a 1 MiB tmpfs
  (ENOSPC).
- Unreachable store: an ``ftp://`` URL nothing listens on, and fsspec protocols whose packages
  are not installed.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    PIPEFLOW,
    assert_store_sound,
    cli_env,
    free_port,
    one_line_error,
    pipeflow,
    pipeflow_ok,
)

from pipeflow.testing import write_spec

pytestmark = pytest.mark.slow

STEPS = """
    def small():
        return "small"

    def big(first, mib):
        return bytes(range(256)) * (4096 * mib)

    def after(blob):
        return len(blob)
"""


def _spec(folder: Path, root: str) -> Path:
    return write_spec(
        folder,
        f"""
        pipeline: io-faults
        params: {{mib: 2}}
        store: {{root: "{root}", metadata: "sqlite:///meta/pipeflow.db"}}
        stages:
          small: {{type: python, with: {{function: "steps:small"}}}}
          # big waits for small: on a full disk they would race for its last blocks (and small
          # lose, now and then)
          big: {{type: python, inputs: {{first: small}}, with: {{function: "steps:big", kwargs: {{mib: "${{params.mib}}"}}}}}}
          after: {{type: python, inputs: {{blob: big}}, with: {{function: "steps:after"}}}}
        """,
        {"steps.py": STEPS},
    )


# A launcher that limits the process, then becomes ``pipeflow`` (no preexec_fn: the test process
# may have threads, and forking with threads only to run Python in the child is unsafe).
LAUNCHER = r"""
import ctypes, os, resource, signal, sys

fsize, drop_dac = int(sys.argv[1]), sys.argv[2] == "1"
if fsize:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
if drop_dac:
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            sys.exit(f"cannot drop capability {cap}: errno {ctypes.get_errno()}")
os.execv(sys.argv[3], sys.argv[3:])
"""


def _limited(args: list[object], *, fsize: int = 0, drop_dac: bool = False, timeout: float = 120):
    argv = [sys.executable, "-c", LAUNCHER, str(fsize), "1" if drop_dac else "0", PIPEFLOW]
    return subprocess.run(
        [*argv, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=cli_env()
    )


def _failure_line(proc: subprocess.CompletedProcess[str], stage: str) -> str:
    """The run failed (exit 1) and said why in one line, with no traceback anywhere."""
    assert proc.returncode == 1, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(f"stage '{stage}' failed:")]
    assert len(lines) == 1, proc.stdout + proc.stderr
    return lines[0]


def _read_only_tree(top: Path) -> list[Path]:
    folders = [top, *(p for p in top.rglob("*") if p.is_dir())]
    for folder in folders:
        folder.chmod(0o500)
    return folders


def _root_ignores_modes(tmp_path: Path) -> bool:
    """Whether a run started through the launcher can still write into a 0o500 folder."""
    probe = tmp_path / "probe"
    probe.mkdir()
    probe.chmod(0o500)
    try:
        argv = [sys.executable, "-c", LAUNCHER, "0", "1" if os.geteuid() == 0 else "0"]
        check = f"open({str(probe / 'x')!r}, 'w')"
        proc = subprocess.run(
            [*argv, sys.executable, "-c", check], capture_output=True, text=True, timeout=30
        )
        return proc.returncode == 0
    finally:
        probe.chmod(0o700)


def test_permission_denied_on_the_store_fails_the_stage_in_one_line(tmp_path: Path) -> None:
    if _root_ignores_modes(tmp_path):
        pytest.skip("file modes do not stop this user here (root with capabilities kept)")
    root = tmp_path / "store"
    spec = _spec(tmp_path, str(root))
    pipeflow_ok(["run", spec, "--set", "params.mib=1"])
    folders = _read_only_tree(root / "objects")
    try:
        proc = _limited(["run", spec], drop_dac=os.geteuid() == 0)
        line = _failure_line(proc, "big")
        assert f"{root / 'objects'}" in line and "Permission denied" in line, line
        assert "stage 'after' failed" not in proc.stdout, "a stage downstream is skipped"
        assert_store_sound(spec)
    finally:
        for folder in folders:
            folder.chmod(0o755)
    rerun = pipeflow_ok(["run", spec])
    assert "2 done, 1 cached" in rerun.stdout, rerun.stdout
    assert_store_sound(spec)


def test_a_file_where_the_store_needs_a_folder_fails_the_stage_in_one_line(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    (root / "objects").write_text("not a folder")
    spec = _spec(tmp_path, str(root))
    proc = pipeflow(["run", spec])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = _failure_line(proc, "small")
    assert f"{root / 'objects'}" in line and "Not a directory" in line, line
    assert_store_sound(spec)

    (root / "objects").unlink()
    rerun = pipeflow_ok(["run", spec])
    assert "3 done, 0 cached" in rerun.stdout, rerun.stdout
    assert_store_sound(spec)


def test_a_file_size_limit_below_an_output_fails_the_stage_in_one_line(tmp_path: Path) -> None:
    root = tmp_path / "store"
    spec = _spec(tmp_path, str(root))
    proc = _limited(["run", spec], fsize=1 << 20)  # the output is 2 MiB
    line = _failure_line(proc, "big")
    assert f"cannot write {root / 'objects'}" in line and "File too large" in line, line
    assert "1 done" in proc.stdout and "1 skipped" in proc.stdout, proc.stdout
    assert_store_sound(spec)
    assert not list((root / "tmp").iterdir()), "the failed write removed its temporary file"

    rerun = pipeflow_ok(["run", spec])
    assert "2 done, 1 cached" in rerun.stdout, rerun.stdout
    assert_store_sound(spec)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (root only; skipped where mounting is not allowed)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_full_disk_fails_the_stage_in_one_line(tmp_path: Path, tiny_disk: Path) -> None:
    spec = _spec(tmp_path, str(tiny_disk / "store"))
    proc = pipeflow(["run", spec])
    line = _failure_line(proc, "big")
    assert f"cannot write {tiny_disk / 'store' / 'objects'}" in line, line
    assert f"no space left on the device holding {tiny_disk / 'store'}" in line, line
    assert_store_sound(spec)
    assert os.statvfs(tiny_disk).f_bfree > 0.9 * os.statvfs(tiny_disk).f_blocks, (
        "the half-written output was removed, not left filling the disk"
    )

    grown = subprocess.run(
        ["mount", "-o", "remount,size=16m", str(tiny_disk)], capture_output=True, text=True
    )
    assert grown.returncode == 0, grown.stderr
    rerun = pipeflow_ok(["run", spec])
    assert "2 done, 1 cached" in rerun.stdout, rerun.stdout
    assert_store_sound(spec)


def test_every_database_command_on_a_full_disk_says_so_not_disk_io_error(
    tmp_path: Path, tiny_disk: Path
) -> None:
    """SQLite says "disk I/O error" when it cannot grow its WAL, which every command does on
    opening the database, reads included: each says which device is full instead."""
    spec = _spec(tmp_path, str(tiny_disk / "store"))
    spec.write_text(
        spec.read_text().replace("sqlite:///meta/pipeflow.db", f"sqlite:///{tiny_disk}/meta.db")
    )
    pipeflow_ok(["run", spec, "--set", "params.mib=0"])
    filler = tiny_disk / "filler"
    with filler.open("wb", buffering=0) as fh, pytest.raises(OSError):
        while True:  # the rest of the device, to the last block
            fh.write(b"\0" * 4096)
    for wal in tiny_disk.glob("meta.db-*"):  # as after a clean close: the next open writes them
        wal.unlink()
    for args in (["runs", "list"], ["data", "list"], ["run", spec, "--set", "params.mib=0"]):
        proc = pipeflow([*args, "--spec", spec] if args[0] != "run" else args)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        line = one_line_error(proc.stderr)
        assert f"no space left on the device holding {tiny_disk}" in line, line
        assert "disk I/O error" not in line
    filler.unlink()
    assert "done" in pipeflow_ok(["runs", "list", "--spec", spec]).stdout


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://127.0.0.1:{port}/store", "Connection refused"),
        ("sftp://127.0.0.1:{port}/store", "paramiko"),
        ("http://127.0.0.1:{port}/store", ""),
    ],
    ids=["ftp-nothing-listening", "sftp-package-missing", "http"],
)
def test_an_unreachable_store_url_is_one_line_and_a_reachable_one_then_works(
    tmp_path: Path, url: str, why: str
) -> None:
    url = url.format(port=free_port())
    spec = _spec(tmp_path, url)
    proc = pipeflow(["run", spec], timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = one_line_error(proc.stderr)
    assert url in line and why in line, line
    assert "internal error" not in line

    root = tmp_path / "store"
    spec = _spec(tmp_path, str(root))
    pipeflow_ok(["run", spec])
    assert_store_sound(spec)
    assert stat.S_ISDIR(os.stat(root / "objects").st_mode)
