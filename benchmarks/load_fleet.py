"""Load test of a fleet: thousands of concurrent keep-alive clients at 3 ``pipeflow serve`` replicas.

Issue 18 asks that N replicas over one store behave as one service under the load of thousands of
users. This measures it on 127.0.0.1, everything real:

- **the model**: ``tumours@production`` registered in a temporary project by ``pipeflow run`` (the
  registry of ``bench_serving.py``);
- **the fleet**: ``--replicas`` (3) ``pipeflow serve tumours@production --store STORE`` processes
  over that one store, defaults otherwise (one process each, the fleet layout of
  ``docs/serving.md``); each writes its own audit journal under ``<store>/audit`` and follows the
  others' (:mod:`pipeflow.serving.fleet`);
- **the balancer**: a round-robin TCP proxy written here (``load_fleet.py proxy PORT BACKEND...``,
  a child process on uvloop protocols): each client connection is given the next replica in turn
  and its bytes are copied both ways, so a keep-alive client stays on one replica, as behind a
  Kubernetes Service (kube-proxy balances connections, not requests). Why a proxy and not
  ``SO_REUSEPORT``: uvicorn 0.55 has no option to set it, ``pipeflow serve`` refuses a port already
  bound (before loading the model), and the kernel would spread connections by a hash, not in
  turn; a proxy is also a process of its own whose CPU can be shown;
- **the clients**: ``--clients`` levels (1,000 then 2,000), each a fresh set of keep-alive
  connections opened before the clock starts, in a closed loop (each client sends its next request
  as soon as its answer arrives) for ``--duration`` seconds: ``bench_serving.RawConnection`` on
  asyncio streams (uvloop when installed), one-row requests (``--batch-every N`` makes every Nth
  a 100-row one, as ``load_serving.py`` does), a ``--timeout`` per request;
- **the baseline**, measured in the same run: the same levels for ``--baseline-duration`` seconds
  (default ``--duration``; 0: none) at **one** replica behind the same proxy, before the fleet
  starts (so the fleet's replicas are not running beside it); ratios are fleet / one replica.

Clients, proxy and replicas share the machine's cores (this project's VM has 2): a closed loop of
thousands of clients saturates them, so the figures are the machine's ceiling, shared, and
latency is mostly queueing (about clients / throughput). Each level prints the CPU each part used
(in cores: 1.0 is one core busy for the whole level) and the p99 of the requests sent in each
quarter of it: every client's first request leaves at once, so the first quarter's tail is the
start's burst, the others the steady state.

After the last level the proxy is stopped and every replica is sent SIGTERM (a graceful stop: the
requests in flight are answered and audited, then the journal is closed); then the check that
matters: the prediction ids in every replica's journal (``<store>/audit/predictions/*.jsonl``)
equal, as a multiset, the ids in every 200 answer of the run (warm-ups and the baseline included):
none missing, none unexpected. Per replica: the connections the proxy gave it and the records in
its journal.

Exit status: 0 when every request was answered 200, every replica stopped by itself after SIGTERM
(status 0 or -15: uvicorn re-raises the signal once its graceful shutdown is done), and audit =
acknowledged; 1 otherwise (throughput and latency are figures for a
person, never a failure). ``tests/load/test_load_fleet.py`` runs it with ``--quick``.

Usage::

    .venv/bin/python benchmarks/load_fleet.py [--clients 1000,2000] [--duration 20]
        [--baseline-duration S] [--replicas 3] [--batch-every 0] [--timeout 60] [--quick]
        [--json out.json]

``--quick``: 5 s per level and baseline (unless given); it took 82 s here at load average 5 and
143 s at 10-13. The full run (the defaults) is four 20 s levels plus the same start-ups.
RLIMIT_NOFILE is raised to what the largest level needs (the proxy
holds two descriptors per client); the script stops with a message if the hard limit is lower.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
# uvicorn re-raises SIGTERM once its graceful shutdown is done: a replica stopped well exits -15
GRACEFUL = {0, -signal.SIGTERM}
CONNECT_CHUNK = 200  # connections opened at once before a level (under the listen backlogs)


def _sibling(name: str) -> ModuleType:
    """A benchmark module beside this file, whether this runs as a script or from tests/load."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def run_async(coro: Coroutine[Any, Any, Any]) -> Any:
    """``asyncio.run`` on uvloop when it is installed (uvicorn's own loop: cheaper per request)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - installed with uvicorn's extras
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


# -- the proxy (a child process) ------------------------------------------------------------------


class _Pipe(asyncio.Protocol):
    """One side of a proxied connection: what it receives is written to its peer. Flow control
    both ways: a side whose write buffer is full pauses reading on the other."""

    def __init__(self) -> None:
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport instances
        self.peer: _Pipe | None = None
        self.early: list[bytes] = []  # client bytes that came before the replica's connection

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:
            self.early.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.close()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


async def _proxy(port: int, backends: list[int]) -> None:
    loop = asyncio.get_running_loop()
    given = [0] * len(backends)  # connections given to each replica
    failed = [0] * len(backends)  # connections to it that could not be opened
    turn = 0
    attaching: set[asyncio.Task[None]] = set()  # held: the loop keeps only weak references

    async def attach(client: _Pipe, i: int) -> None:
        try:
            _, replica = await loop.create_connection(_Pipe, "127.0.0.1", backends[i])
        except OSError as err:
            failed[i] += 1
            print(f"proxy: cannot connect to 127.0.0.1:{backends[i]}: {err}", file=sys.stderr)
            if client.transport is not None:
                client.transport.close()
            return
        if client.transport is None or client.transport.is_closing():
            replica.transport.close()
            return
        client.peer, replica.peer = replica, client
        for data in client.early:
            replica.transport.write(data)
        client.early.clear()

    def accept() -> _Pipe:
        nonlocal turn
        client = _Pipe()
        i, turn = turn, (turn + 1) % len(backends)
        given[i] += 1
        task = loop.create_task(attach(client, i))
        attaching.add(task)
        task.add_done_callback(attaching.discard)
        return client

    server = await loop.create_server(accept, "127.0.0.1", port, backlog=4096)
    print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()
    print(json.dumps({"connections": given, "failed": failed}), flush=True)


@dataclass
class Proxy:
    proc: subprocess.Popen[bytes]
    port: int
    backends: list[int]

    def stop(self) -> dict[str, list[int]]:
        """SIGTERM; returns the connections it gave (and failed to open) to each replica."""
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        return json.loads(out.decode().strip().splitlines()[-1])


def start_proxy(backends: list[int]) -> Proxy:
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "proxy", "0", *map(str, backends)],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    if not first:
        raise RuntimeError(f"the proxy exited {proc.wait()} before listening")
    return Proxy(proc, json.loads(first)["port"], backends)


# -- the replicas ---------------------------------------------------------------------------------


def start_replicas(project: Path, store: Path, n: int, name: str) -> list[Any]:
    """``n`` ``pipeflow serve`` processes over ``store``, started together; once all are ready."""
    import httpx

    bs = _sibling("bench_serving")
    started = []
    for i in range(n):
        port = bs.free_port()
        log = project / f"{name}-{i}-{port}.log"
        cmd = [bs.PIPEFLOW, "serve", f"{bs.MODEL}@production", "--store", str(store)]
        cmd += ["--port", str(port), "--log-level", "warning"]
        proc = subprocess.Popen(cmd, cwd=project, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        path = f"/v1/models/{bs.MODEL}/predict"
        started.append(bs.Server(f"{name} {i + 1}", proc, port, path, log))
    deadline = time.monotonic() + 120
    waiting = list(started)
    while waiting:
        for s in list(waiting):
            if s.proc.poll() is not None:
                stop_replicas(started)
                raise RuntimeError(f"{s.name} exited {s.proc.returncode}: {s.log.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{s.port}/ready", timeout=1).status_code == 200:
                    waiting.remove(s)
        if waiting and time.monotonic() > deadline:
            stop_replicas(started)
            raise RuntimeError(f"{waiting[0].name} did not become ready: {waiting[0].log}")
        time.sleep(0.1)
    return started


def stop_replicas(servers: list[Any], grace: float = 60) -> dict[str, int | None]:
    """SIGTERM every replica at once (a graceful stop), wait; SIGKILL one that outstays ``grace``.
    Returns each one's exit status (None: it had to be killed)."""
    for s in servers:
        if s.proc.poll() is None:
            s.proc.send_signal(signal.SIGTERM)
    codes: dict[str, int | None] = {}
    deadline = time.monotonic() + grace
    for s in servers:
        try:
            codes[s.name] = s.proc.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            s.proc.kill()
            s.proc.wait()
            codes[s.name] = None
    return codes


def cpu_s(pid: int) -> float:
    return _sibling("load_serving")._cpu_s(pid)


# -- the clients ----------------------------------------------------------------------------------


@dataclass
class Level:
    """One level: ``clients`` closed-loop keep-alive clients for ``duration_s`` at one target."""

    target: str  # "3 replicas" / "1 replica"
    clients: int
    duration_s: float  # from the first request sent to the last answer
    connect_s: float  # opening the connections, before the clock
    latency: list[float]  # per request: seconds from sending to the whole answer
    sent: list[float]  # per request: when it was sent, seconds since the level's start
    statuses: Counter[int]  # 0: no HTTP answer (connection lost, timeout)
    rows_ok: int
    ids: list[str]  # prediction ids in the 200 answers
    cpu: dict[str, float]  # seconds of CPU during the level: client, proxy, replicas
    failures: list[str] = field(default_factory=list)  # the first few failed requests

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def errors(self) -> int:
        return self.requests - self.statuses.get(200, 0)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s

    def pct(self, q: float) -> float:
        ordered = sorted(self.latency)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def timeline(self, windows: int = 4) -> list[tuple[float, float, int, float]]:
        """Per window of the level (by when requests were sent): (from s, to s, requests, p99 ms):
        whether the tail is the start (every client's first request at once) or steady."""
        step = max(self.sent, default=0.0) / windows or 1.0
        out = []
        for w in range(windows):
            lo, hi = w * step, (w + 1) * step if w < windows - 1 else float("inf")
            got = sorted(
                lat for t, lat in zip(self.sent, self.latency, strict=True) if lo <= t < hi
            )
            p99 = got[min(len(got) - 1, int(0.99 * len(got)))] * 1000 if got else float("nan")
            out.append((lo, min(hi, self.duration_s), len(got), p99))
        return out

    def cpu_share(self, part: str) -> float:
        """CPU of ``part`` in cores (1.0: one core busy the whole level)."""
        return self.cpu[part] / self.duration_s


async def _level(
    target: str,
    proxy: Proxy,
    replicas: list[Any],
    path: str,
    mix: Any,
    clients: int,
    duration_s: float,
    timeout_s: float,
) -> Level:
    import orjson

    raw = _sibling("bench_serving").RawConnection
    latency: list[float] = []
    sent_at: list[float] = []
    statuses: Counter[int] = Counter()
    ids: list[str] = []
    failures: list[str] = []
    rows_ok = 0
    counter = 0

    conns = [raw(proxy.port, path) for _ in range(clients)]
    t = time.perf_counter()
    for start in range(0, clients, CONNECT_CHUNK):  # a refused connect is retried by its client

        async def connect(conn: Any) -> None:
            with contextlib.suppress(OSError):
                conn.reader, conn.writer = await asyncio.open_connection("127.0.0.1", conn.port)

        await asyncio.gather(*(connect(c) for c in conns[start : start + CONNECT_CHUNK]))
    connect_s = time.perf_counter() - t

    def cpu_now() -> dict[str, float]:
        return {
            "client": time.process_time(),
            "proxy": cpu_s(proxy.proc.pid),
            "replicas": sum(cpu_s(s.proc.pid) for s in replicas),
        }

    cpu0 = cpu_now()
    t0 = time.perf_counter()
    deadline = t0 + duration_s

    async def client(slot: int) -> None:
        nonlocal rows_ok, counter
        conn = conns[slot]
        while time.perf_counter() < deadline:
            body, rows = mix.pick(counter)
            counter += 1
            sent = time.perf_counter()
            try:
                async with asyncio.timeout(timeout_s):
                    status, data = await conn.post(body)
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as err:
                status, data = 0, repr(err).encode()
                await conn.close()
                conn = conns[slot] = raw(proxy.port, path)
            latency.append(time.perf_counter() - sent)
            sent_at.append(sent - t0)
            statuses[status] += 1
            if status == 200:
                rows_ok += rows
                ids.extend(p["id"] for p in orjson.loads(data)["predictions"])
            elif len(failures) < 5:
                failures.append(f"{status}: {data[:300]!r}")

    await asyncio.gather(*(client(i) for i in range(clients)))
    wall = time.perf_counter() - t0
    cpu1 = cpu_now()
    for conn in conns:
        await conn.close()
    return Level(
        target=target,
        clients=clients,
        duration_s=wall,
        connect_s=connect_s,
        latency=latency,
        sent=sent_at,
        statuses=statuses,
        rows_ok=rows_ok,
        ids=ids,
        cpu={k: cpu1[k] - cpu0[k] for k in cpu0},
        failures=failures,
    )


@dataclass
class Phase:
    """One target (the fleet, or one replica) through every level, then stopped."""

    target: str
    levels: list[Level]
    acknowledged: list[str]  # every id answered 200 in this phase, warm-ups included
    connections: list[int]  # per replica: connections the proxy gave it
    proxy_failed: int
    exits: dict[str, int | None]
    pids: dict[int, str]  # replica pid -> name (journal files are named <host>-<pid>-<token>)


def run_phase(
    target: str,
    n: int,
    project: Path,
    store: Path,
    mix: Any,
    levels: list[int],
    duration_s: float,
    timeout_s: float,
    say: Callable[[str], None],
) -> Phase:
    ls = _sibling("load_serving")
    t = time.perf_counter()
    replicas = start_replicas(project, store, n, "replica" if n > 1 else "single")
    acknowledged: list[str] = []
    done: list[Level] = []
    proxy = None
    try:
        for s in replicas:  # imports, first predict; answered and audited like any other
            acknowledged += ls.warm_up(s, mix)
        proxy = start_proxy([s.port for s in replicas])
        say(
            f"{target}: {n} replica(s) ready and warm in {time.perf_counter() - t:.1f} s, "
            f"behind the proxy on port {proxy.port}"
        )
        for clients in levels:
            level = run_async(
                _level(
                    target, proxy, replicas, replicas[0].path, mix, clients, duration_s, timeout_s
                )
            )
            acknowledged += level.ids
            done.append(level)
            say(
                f"  {clients:,} clients: {level.rps:,.0f} req/s, p50 {level.pct(0.5):.0f} ms, "
                f"p99 {level.pct(0.99):.0f} ms, errors {level.errors} "
                f"(connecting took {level.connect_s:.1f} s)"
            )
            say(
                "    p99 by when sent: "
                + "; ".join(
                    f"{a:.0f}-{b:.0f} s {n:,} req " + (f"{p:.0f} ms" if n else "-")
                    for a, b, n, p in level.timeline()
                )
            )
    finally:
        given = proxy.stop() if proxy is not None else {"connections": [], "failed": []}
        exits = stop_replicas(replicas)
    return Phase(
        target=target,
        levels=done,
        acknowledged=acknowledged,
        connections=given["connections"],
        proxy_failed=sum(given["failed"]),
        exits=exits,
        pids={s.proc.pid: s.name for s in replicas},
    )


# -- the audit ------------------------------------------------------------------------------------


def audit_by_writer(store: Path) -> dict[int, list[str]]:
    """Prediction ids in the store's audit journal, by the pid of the process that wrote them
    (lines without their newline are torn: not counted)."""
    import orjson

    out: dict[int, list[str]] = {}
    for path in sorted((store / "audit" / "predictions").glob("*.jsonl")):
        pid = int(path.stem.rsplit("-", 2)[1])
        mine = out.setdefault(pid, [])
        with open(path, "rb") as fh:
            for line in fh:
                if line.endswith(b"\n"):  # a request's record holds its rows' ids
                    record = orjson.loads(line)
                    mine.extend(record["ids"] if "ids" in record else [record["id"]])
    return out


def audit_check(audited: list[str], acknowledged: list[str]) -> tuple[bool, str]:
    """Whether the journals hold exactly the acknowledged ids (as multisets), and the line saying so."""
    audit, acked = Counter(audited), Counter(acknowledged)
    missing, unexpected = sum((acked - audit).values()), sum((audit - acked).values())
    ok = audit == acked and len(acknowledged) > 0  # nothing acknowledged proves nothing
    return ok, (
        f"audit log across the fleet: {len(audited):,} records {'=' if ok else '!='} "
        f"{len(acknowledged):,} acknowledged answers; acknowledged ids missing from the journals: "
        f"{missing}, records never acknowledged: {unexpected}"
    )


# -- the report -----------------------------------------------------------------------------------


def report(
    fleet: Phase, baseline: Phase | None, audited: dict[int, list[str]], ack: list[str]
) -> tuple[bool, list[str]]:
    """The lines to print, and whether every check passed."""
    lines = [
        f"\npipeflow fleet load test: {os.cpu_count()} cpus shared by the clients, the proxy and "
        f"every replica; python {sys.version.split()[0]}; load average "
        f"{os.getloadavg()[0]:.1f} after the run",
        f"      {'clients':>7} {'fleet req/s':>11} {'1-replica':>10} {'ratio':>6} "
        f"{'p50 ms fleet/1':>15} {'p99 ms fleet/1':>15} {'errors':>6} "
        f"{'CPU cores: client/proxy/replicas':>33}",
    ]
    ok = True
    base = {lv.clients: lv for lv in baseline.levels} if baseline else {}
    for lv in fleet.levels:
        b = base.get(lv.clients)
        errors = lv.errors + (b.errors if b else 0)
        ok &= errors == 0
        lines.append(
            f"{'PASS' if errors == 0 else 'FAIL':5} {lv.clients:7,} {lv.rps:11,.0f} "
            + (f"{b.rps:10,.0f} {lv.rps / b.rps:5.2f}x " if b else f"{'-':>10} {'-':>6} ")
            + f"{lv.pct(0.5):7.0f}/{(f'{b.pct(0.5):.0f}' if b else '-'):<7} "
            f"{lv.pct(0.99):7.0f}/{(f'{b.pct(0.99):.0f}' if b else '-'):<7} {errors:6} "
            f"{lv.cpu_share('client'):11.2f}/{lv.cpu_share('proxy'):.2f}/"
            f"{lv.cpu_share('replicas'):.2f}"
            + (
                f"  (1 replica: {b.cpu_share('client'):.2f}/{b.cpu_share('proxy'):.2f}/"
                f"{b.cpu_share('replicas'):.2f})"
                if b
                else ""
            )  # fmt: skip
        )
        for failure in lv.failures + (b.failures if b else []):
            lines.append(f"      first failures: {failure}")
    for lv in fleet.levels:
        lines.append(
            f"      {lv.clients:,} clients, {fleet.target}: {lv.requests:,} requests in "
            f"{lv.duration_s:.1f} s ({lv.rows_ok:,} rows answered)"
        )
    phases = [p for p in (baseline, fleet) if p is not None]
    for phase in phases:
        per = ", ".join(
            f"{name} {given:,} connections / {len(audited.get(pid, [])):,} records"
            for (pid, name), given in zip(phase.pids.items(), phase.connections, strict=False)
        )
        lines.append(f"info  {phase.target}: {per}")
        graceful = set(phase.exits.values()) <= GRACEFUL and not phase.proxy_failed
        ok &= graceful
        lines.append(
            f"{'PASS' if graceful else 'FAIL'}  {phase.target} stopped gracefully by SIGTERM "
            "(exit status 0 or -15, uvicorn's own after its graceful shutdown): "
            + ", ".join(f"{k} {'killed' if v is None else v}" for k, v in phase.exits.items())
            + (
                f"; the proxy failed to reach a replica {phase.proxy_failed} time(s)"
                if phase.proxy_failed
                else ""
            )  # fmt: skip
        )
    stray = sorted(set(audited) - {pid for p in phases for pid in p.pids})
    every = [i for ids in audited.values() for i in ids]
    same, text = audit_check(every, ack)
    ok &= same
    lines.append(
        f"{'PASS' if same else 'FAIL'}  {text} ({len(audited)} journals"
        + (f", of which {len(stray)} from unknown processes {stray}" if stray else "")
        + ", warm-ups and the baseline included)"
    )
    return ok, lines


def raise_fd_limit(needed: int) -> int:
    """Raise this process's RLIMIT_NOFILE (inherited by the proxy and the replicas)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return soft
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(
            f"load_fleet: the largest level needs about {needed:,} open files (the proxy holds two "
            f"per client) but RLIMIT_NOFILE's hard limit is {hard:,}: raise it (ulimit -Hn) or "
            "pass fewer --clients"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return needed


def parse_levels(text: str) -> list[int]:
    try:
        levels = [int(x) for x in re.split(r"[,\s]+", text.strip()) if x]
    except ValueError:
        levels = []
    if not levels or min(levels) < 1:
        raise SystemExit(f"load_fleet: --clients {text!r}: expected numbers like 1000,2000")
    return levels


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["proxy"]:  # the child: load_fleet.py proxy PORT BACKEND_PORT...
        port, *backends = (int(x) for x in argv[1:])
        run_async(_proxy(port, backends))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1000,2000", help="levels, e.g. 1000,2000")
    parser.add_argument("--duration", type=float, help="seconds per level (default 20; quick: 5)")
    parser.add_argument(
        "--baseline-duration", type=float, help="seconds per level at one replica; 0: no baseline"
    )
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument(
        "--batch-every", type=int, default=0, help="every Nth request carries 100 rows (0: never)"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    parser.add_argument("--quick", action="store_true", help="5 s per level")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    levels = parse_levels(args.clients)
    duration = args.duration if args.duration is not None else (5.0 if args.quick else 20.0)
    baseline_s = duration if args.baseline_duration is None else args.baseline_duration
    if args.replicas < 1 or duration <= 0:
        raise SystemExit("load_fleet: --replicas and --duration must be above 0")
    raise_fd_limit(2 * max(levels) + 1024)

    bs, ls = _sibling("bench_serving"), _sibling("load_serving")

    def say(text: str) -> None:
        print(text, flush=True)

    started = time.perf_counter()
    say(
        f"load_fleet: {args.replicas} replicas vs 1, levels {levels} clients, {duration:g} s per "
        f"level ({baseline_s:g} s on one replica); clients, proxy and replicas on the same "
        f"{os.cpu_count()} cpus; load average {os.getloadavg()[0]:.1f}"
    )
    with tempfile.TemporaryDirectory(prefix="pipeflow-load-fleet-") as name:
        store = bs.build_project(Path(name))
        project = store.parent
        mix = ls.make_mix(bs.request_rows(project), 100, args.batch_every)
        say(f"registry built in {time.perf_counter() - started:.1f} s")
        common = (project, store, mix, levels)
        baseline = None
        if baseline_s > 0:
            baseline = run_phase("1 replica", 1, *common, baseline_s, args.timeout, say)
        fleet = run_phase(
            f"{args.replicas} replica{'s' if args.replicas > 1 else ''}",
            args.replicas,
            *common,
            duration,
            args.timeout,
            say,
        )
        audited = audit_by_writer(store)
    acknowledged = (baseline.acknowledged if baseline else []) + fleet.acknowledged
    ok, lines = report(fleet, baseline, audited, acknowledged)
    for line in lines:
        say(line)
    say(f"\n(total {time.perf_counter() - started:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(results(fleet, baseline, ok, lines), indent=2))
    return 0 if ok else 1


def results(fleet: Phase, baseline: Phase | None, ok: bool, lines: list[str]) -> dict[str, Any]:
    def level(lv: Level) -> dict[str, Any]:
        return {
            "clients": lv.clients,
            "duration_s": lv.duration_s,
            "requests": lv.requests,
            "errors": lv.errors,
            "rps": lv.rps,
            "p50_ms": lv.pct(0.5),
            "p99_ms": lv.pct(0.99),
            "cpu_cores": {k: lv.cpu_share(k) for k in lv.cpu},
        }

    return {
        "ok": ok,
        "cpus": os.cpu_count(),
        "fleet": [level(lv) for lv in fleet.levels],
        "baseline": [level(lv) for lv in baseline.levels] if baseline else None,
        "report": lines,
    }


if __name__ == "__main__":
    sys.exit(main())
