"""Contract tests any implementation can inherit to prove it honours pipeflow's contracts.

Usage in a plugin's test suite (pytest collects the inherited ``test_*`` methods)::

    from pipeflow.testing import StageContract

    class TestSqlStage(StageContract):
        stage_cls = SqlStage
        entry_point = "sql"                       # optional: checks registration
        config = {"query": "select * from t"}
        sample_inputs = {"t": pandas.DataFrame({"a": [1, 2]})}

``ExecutorContract`` does the same for executors (``make_executor()`` returns one), and
``write_spec`` / ``spec_dir`` help build small example projects inside ``tmp_path``.
``pipeflow_cli`` runs the command line as a user would, and ``serve`` starts a real
``pipeflow serve`` process on a free port of 127.0.0.1 (``Served``: its URL, a client, stop/kill).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from pipeflow.core import kinds
from pipeflow.core.stage import Stage, StageContext


def write_spec(
    directory: Path,
    yaml_text: str,
    files: Mapping[str, str] | None = None,
    name: str = "pipeline.yaml",
) -> Path:
    """Write a spec (dedented) and helper files into ``directory``; returns the spec path."""
    directory.mkdir(parents=True, exist_ok=True)
    for fname, content in (files or {}).items():
        (directory / fname).write_text(textwrap.dedent(content), encoding="utf-8")
    path = directory / name
    path.write_text(textwrap.dedent(yaml_text), encoding="utf-8")
    return path


class StageContract:
    """Inherit and set ``stage_cls``, ``config`` and ``sample_inputs``."""

    stage_cls: ClassVar[type[Stage]]
    config: ClassVar[dict[str, Any]] = {}
    sample_inputs: ClassVar[dict[str, Any]] = {}
    entry_point: ClassVar[str | None] = None

    def _config(self) -> Any:
        return self.stage_cls.Config.model_validate(self.config)

    def _run(self, tmp_path: Path) -> Mapping[str, Any]:
        ctx = StageContext(run_id="contract", stage="contract", params={}, base_dir=tmp_path)
        return self.stage_cls(self._config()).run(ctx, dict(self.sample_inputs))

    def test_config_forbids_unknown_keys(self) -> None:
        import pydantic
        import pytest

        with pytest.raises(pydantic.ValidationError) as info:
            self.stage_cls.Config.model_validate({**self.config, "no_such_setting_xyz": 1})
        assert any(e["type"] == "extra_forbidden" for e in info.value.errors())

    def test_ports_declare_valid_kinds(self) -> None:
        config = self._config()
        ports = {**self.stage_cls.input_ports(config), **self.stage_cls.output_ports(config)}
        for name, port in ports.items():
            assert name.isidentifier(), f"port name {name!r} is not an identifier"
            assert kinds.is_valid(port.kind), f"port {name!r} has invalid kind {port.kind!r}"
        assert self.stage_cls.output_ports(config), "a stage type must declare at least one output"

    def test_version_is_a_nonempty_string(self) -> None:
        assert isinstance(self.stage_cls.version, str) and self.stage_cls.version

    def test_sample_inputs_fit_the_declared_inputs(self) -> None:
        config = self._config()
        declared = self.stage_cls.input_ports(config)
        for name in self.sample_inputs:
            assert name in declared or self.stage_cls.extra_inputs is not None, (
                f"sample input {name!r} is not a port"
            )
        for name, port in declared.items():
            if port.required:
                assert name in self.sample_inputs, (
                    f"required input {name!r} missing from sample_inputs"
                )

    def test_run_returns_every_declared_output_in_a_storable_form(self, tmp_path: Path) -> None:
        from pipeflow.store.artifacts import ArtifactStore

        outputs = self._run(tmp_path)
        declared = self.stage_cls.output_ports(self._config())
        assert set(outputs) == set(declared), (
            f"outputs {sorted(outputs)} != declared {sorted(declared)}"
        )
        store = ArtifactStore(str(tmp_path / "store"))
        for port, value in outputs.items():
            ref = store.save(value, declared[port].kind)
            assert store.get(ref.digest), f"output {port!r} did not round-trip through the store"

    def test_run_is_deterministic(self, tmp_path: Path) -> None:
        from pipeflow.store.artifacts import ArtifactStore

        store = ArtifactStore(str(tmp_path / "store"))
        first = {p: store.save(v).digest for p, v in self._run(tmp_path).items()}
        second = {p: store.save(v).digest for p, v in self._run(tmp_path).items()}
        assert first == second, (
            "the same config and inputs must give byte-identical outputs (the cache relies on it)"
        )

    def test_registered_under_its_entry_point(self) -> None:
        if self.entry_point is None:
            return
        from pipeflow.core.stage_types import StageRegistry

        assert StageRegistry().get(self.entry_point) is self.stage_cls


class StoreContract:
    """Inherit and implement ``make_store(tmp_path)`` returning an ``ArtifactStore`` on the
    backend under test (a folder, ``memory://``, an S3 endpoint, ...); proves what the runner,
    the cache and the registry rely on: objects named by their content and refused when corrupt,
    manifests that round-trip and survive a second client, exclusive create with one winner."""

    def make_store(self, tmp_path: Path) -> Any:  # pragma: no cover - to be overridden
        raise NotImplementedError

    def test_objects_are_named_by_their_content(self, tmp_path: Path) -> None:
        import hashlib

        store = self.make_store(tmp_path)
        digest = store.put(b"some bytes")
        assert digest == hashlib.sha256(b"some bytes").hexdigest()
        assert store.has(digest) and store.get(digest) == b"some bytes"
        assert store.put(b"some bytes") == digest  # the same bytes twice: one object
        assert not store.has(hashlib.sha256(b"other").hexdigest())

    def test_a_corrupt_object_is_refused_not_returned(self, tmp_path: Path) -> None:
        import pytest

        from pipeflow.errors import StoreError

        store = self.make_store(tmp_path)
        digest = store.put(b"the real content")
        store.fs.pipe_file(store.object_path(digest), b"the fake content")
        with pytest.raises(StoreError, match="corrupt"):
            store.get(digest)

    def test_values_round_trip_through_their_codec(self, tmp_path: Path) -> None:
        import pandas as pd

        store = self.make_store(tmp_path)
        table = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
        pd.testing.assert_frame_equal(store.load(store.save(table, "table")), table)
        assert store.load(store.save({"accuracy": 0.9}, "metrics")) == {"accuracy": 0.9}

    def test_manifests_round_trip_and_a_second_client_sees_them(self, tmp_path: Path) -> None:
        store = self.make_store(tmp_path)
        ref = store.save([1, 2, 3])
        long_key, short_key = "a" * 64, "b" * 64
        store.record_manifest(long_key, {"outputs": {"out": ref.to_dict()}}, duration=None)
        store.record_manifest(short_key, {"outputs": {"out": ref.to_dict()}}, duration=0.001)
        store.flush()
        other = type(store)(store.ref.root, dict(store.ref.storage_options))  # a new client
        assert other is not store
        for key in (long_key, short_key):
            found = other.read_manifest(key)
            assert found is not None and found["outputs"]["out"] == ref, key
        assert other.read_manifest("c" * 64) is None

    def test_exclusive_create_has_one_winner(self, tmp_path: Path) -> None:
        from concurrent.futures import ThreadPoolExecutor

        store = self.make_store(tmp_path)
        # four clients, as four machines would be, racing for one name
        clients = [store] + [
            type(store)(store.ref.root, dict(store.ref.storage_options)) for _ in range(3)
        ]
        with ThreadPoolExecutor(4) as pool:
            won = list(
                pool.map(
                    lambda i: clients[i].create_exclusive("locks/x.lock", f"{i}".encode()),
                    range(4),
                )
            )
        assert won.count(True) == 1
        assert store.read_text("locks/x.lock") == str(won.index(True))
        assert store.list_names("locks") == ["x.lock"]
        assert store.read_text("locks/none.lock") is None


class ExecutorContract:
    """Inherit and implement ``make_executor()``; proves ordering, isolation and reporting."""

    def make_executor(self) -> Any:  # pragma: no cover - to be overridden
        raise NotImplementedError

    _STEPS = """
        import os
        def const(value):
            return value
        def add(a, b):
            return a + b
        def boom(a):
            raise ValueError("boom on purpose")
        def where():
            return os.getpid()
    """

    _SPEC = """
        pipeline: contract
        stages:
          one: {type: python, with: {function: "steps:const", kwargs: {value: 1}}}
          two: {type: python, with: {function: "steps:const", kwargs: {value: 2}}}
          sum: {type: python, inputs: {a: one, b: two}, with: {function: "steps:add"}}
          bad: {type: python, inputs: {a: one}, with: {function: "steps:boom"}}
          after_bad: {type: python, inputs: {a: bad, b: two}, with: {function: "steps:add"}}
          total: {type: python, inputs: {a: sum, b: two}, with: {function: "steps:add"}}
    """

    def _run(self, tmp_path: Path, **kwargs: Any) -> Any:
        from pipeflow.runner.session import run

        spec = write_spec(tmp_path, self._SPEC, {"steps.py": self._STEPS})
        events: list[tuple[str, str]] = []
        report = run(
            spec,
            executor=self.make_executor(),
            on_event=lambda n, s, o: events.append((n, str(s))),
            **kwargs,
        )
        return report, events

    def test_results_flow_in_dependency_order(self, tmp_path: Path) -> None:
        report, _ = self._run(tmp_path)
        assert report.load("sum") == 3
        assert report.load("total") == 5

    def test_a_failure_skips_downstream_and_lets_other_branches_finish(
        self, tmp_path: Path
    ) -> None:
        report, _ = self._run(tmp_path)
        states = {n: str(o.state) for n, o in report.stages.items()}
        assert states["bad"] == "failed" and "boom on purpose" in (report.stages["bad"].error or "")
        assert states["after_bad"] == "skipped"
        assert states["total"] == "done" and states["sum"] == "done"
        assert str(report.state) == "failed"

    def test_every_stage_is_reported_once_with_a_final_state(self, tmp_path: Path) -> None:
        report, events = self._run(tmp_path)
        finals = [n for n, s in events if s not in ("running", "pending")]
        assert sorted(finals) == sorted(report.stages)


def tumour_table() -> Any:
    """scikit-learn's bundled breast-cancer data as the registry and serving tests use it: the
    target named ``diagnosis`` (malignant / benign), a ``size_band`` category (large / small, by
    mean radius) for slices and bias checks, and column names without spaces."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    frame["diagnosis"] = frame.pop("target").map({0: "malignant", 1: "benign"})
    frame["size_band"] = ["large" if r > 15 else "small" for r in frame["mean radius"]]
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    return frame


# ------------------------------------------------------------------ the command line and a server

PIPEFLOW = str(Path(sys.executable).with_name("pipeflow"))


def pipeflow_cli(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the ``pipeflow`` command line in ``cwd`` as a user would (output captured as text)."""
    return subprocess.run(
        [PIPEFLOW, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200"},
    )


# free_port's reservations: one byte of this file locked per port handed out (fcntl record locks,
# released by the kernel when the process that took them exits, however it exits)
_PORT_LOCKS = Path(tempfile.gettempdir()) / "pipeflow-ports.lock"
_port_lock_fd: int | None = None
_ports_handed: set[int] = set()


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux's ``ip_local_port_range``)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default; BSDs and macOS start at 49152


def _open_reservations() -> int | None:
    """The reservations file, shared by every user (made writable by all when this process
    creates it: the umask would keep others out), else, where another user made it without
    (an older pipeflow) or it cannot be opened, this user's own beside it; None if neither."""
    own = _PORT_LOCKS.with_name(f"{_PORT_LOCKS.stem}-{os.getuid()}{_PORT_LOCKS.suffix}")
    for path in (_PORT_LOCKS, own):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            continue
        # someone else's file is theirs to open up; lock bytes, no data: every user locks in it
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o666)  # nosec B103
        return fd
    return None


def _reserve(port: int) -> bool:
    """Lock byte ``port`` of the reservations file; False if another process holds it."""
    global _port_lock_fd
    try:
        import fcntl
    except ImportError:  # not POSIX: no reservations, the range alone keeps ports apart
        return True
    if _port_lock_fd is None:
        _port_lock_fd = _open_reservations()
        if _port_lock_fd is None:
            return True  # no reservations file this user may write: the range alone
    try:
        fcntl.lockf(_port_lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, port, os.SEEK_SET)
    except OSError:
        return False
    return True


def free_port() -> int:
    """A TCP port of 127.0.0.1, free at the moment of asking, that no other caller of
    ``free_port`` on this machine is handed while this process lives.

    Parallel test processes (pytest-xdist's workers, another checkout's suite) each start
    servers on ports they asked for; a port merely free when asked (bind to port 0, close) can be
    handed to two of them, and the second server then fails to start, or worse, its client talks
    to the first. So the port is drawn at random below the kernel's ephemeral range, where
    neither a bind to port 0 nor an outgoing connection of any process can take it between this
    call and the server's own bind, and reserved with a lock on byte ``port`` of one file in the
    temporary folder, held until this process exits; this process never hands it out twice."""
    low = min(_ephemeral_low(), 65536)
    first = 10000 if low > 12000 else 1024
    for _ in range(1000):
        port = random.randrange(first, low)  # a port number, not a secret: random will do
        if port in _ports_handed or not _reserve(port):
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use by something that did not ask free_port: keep it reserved
        _ports_handed.add(port)
        return port
    raise RuntimeError(f"no free TCP port of 127.0.0.1 between {first} and {low}")


def cli_env(**extra: str) -> dict[str, str]:
    """This process's environment for a ``pipeflow`` child, without the variables that would
    point it at another cluster, database or store (or give a server tokens); one stage per
    output line, unbuffered."""
    env = dict(os.environ)
    for name in (
        "PIPEFLOW_DASK_ADDRESS",
        "PIPEFLOW_DB",
        "PIPEFLOW_STORE",
        "PIPEFLOW_STORE__ROOT",
        "PIPEFLOW_STORE__METADATA",
        "PIPEFLOW_TOKENS",
    ):
        env.pop(name, None)
    env["COLUMNS"] = "250"  # one stage per line: reasons are not wrapped
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def start(
    argv: Sequence[Any], log: Path, *, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a process in its own session, output appended to ``log`` (so :func:`kill_group`
    reaches its children)."""
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [str(a) for a in argv],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else cli_env(),
            start_new_session=True,
        )


def kill_group(proc: subprocess.Popen[Any], timeout: float = 10) -> None:
    """Stop a child started with ``start_new_session=True`` and everything it spawned."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):  # children of an exited leader
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)


class Served:
    """A ``pipeflow serve`` process, its URL and its log file."""

    def __init__(
        self, proc: subprocess.Popen[str], url: str, log: Path, client_timeout: float = 30
    ):
        self.proc, self.url, self.log = proc, url, log
        self.client_timeout = client_timeout

    def client(self, **kw: Any) -> Any:
        """An ``httpx.Client`` for the server's URL."""
        import httpx

        return httpx.Client(base_url=self.url, timeout=self.client_timeout, **kw)

    def alive(self) -> bool:
        import httpx

        if self.proc.poll() is not None:
            return False
        try:
            return httpx.get(self.url + "/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        """SIGTERM (a graceful shutdown), SIGKILL after 15 s."""
        stop_process(self.proc)


def stop_process(proc: subprocess.Popen[Any], grace: float = 15) -> None:
    """SIGTERM a child process, SIGKILL it if it has not exited after ``grace`` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(grace)


def serve(
    cwd: Path,
    *args: str,
    log_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    ready_timeout: float = 90,
    client_timeout: float = 30,
) -> Served:
    """``pipeflow serve *args --port P`` on a free port, once it answers ``/ready``; its output
    goes to ``serve-P.log`` in ``log_dir`` (default ``cwd``). Fails naming the log if it exits or
    does not become ready in time."""
    import httpx

    port = free_port()
    log = (log_dir or cwd) / f"serve-{port}.log"
    proc = subprocess.Popen(
        [PIPEFLOW, "serve", *args, "--port", str(port)],
        cwd=cwd,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_timeout
    # one client for every poll: each httpx.get builds an SSL context (~30 ms of CPU, taken from
    # the server starting beside it)
    with httpx.Client(timeout=1) as poll:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"server exited {proc.returncode}: {log.read_text()}")
            try:
                if poll.get(url + "/ready").status_code == 200:
                    return Served(proc, url, log, client_timeout)
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"server did not become ready: {log.read_text()}")
