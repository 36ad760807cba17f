"""Load test of ``pipeflow serve``: a sustained run at the machine's limit, watching correctness.

A benchmark run for seconds says how fast a server is; it says nothing of what a server does after
a minute of saturation: a queue that grows, a cache without a bound, an audit writer that falls
behind, a connection that starts answering 503. This drives one real ``pipeflow serve
tumours@production`` process on 127.0.0.1 (the registry built as in ``bench_serving.py``) as hard
as the machine allows, for ``--duration`` seconds (60 by default):

- **closed loop at concurrency 32**: 32 keep-alive connections, each sending its next request as
  soon as the last is answered, so the server is never idle; the load generator is
  ``bench_serving.RawConnection`` (asyncio streams), cheap enough not to be the bottleneck.
- **mixed requests**: every ``--batch-every``-th request (10th by default) carries 100 rows, the
  others one row.
- **memory**: the server's ``VmRSS`` (``/proc/PID/status``) sampled every second.
- **steady state first**: before the measured run, 100-row requests until ``--prefill-rows``
  predictions (400,000) are answered. The server keeps the last 200,000 prediction ids in memory
  (to match feedback to predictions); until that map is full, and its dict has settled, RSS climbs
  by design (about 75 MB on this machine, then flat). Without the prefill the memory check would
  measure how fast the machine fills a bounded cache, not whether anything leaks.

What it reports: requests and rows per second, p50/p99 per request kind, a timeline per 10 s
(throughput, p99, RSS), and three correctness checks:

1. every response is 200;
2. memory is flat: RSS growth from the 10 s mark of the measured run to its end is under 15 % or
   under 50 MB; this is a leak check, not a timing target;
3. the audit log holds exactly the predictions acknowledged: the ids read back from
   ``<store>/audit/predictions/*.jsonl`` equal, as a multiset, the ids in the 200 answers.

The house style asks for a baseline measured in the same run: before the pipeflow run, the same
mix is sent for ``--baseline-duration`` seconds (20; 0 to skip) to the minimal FastAPI app of
``bench_serving.py`` serving the same model, and throughput and latency are printed as ratios.

``tests/load/test_serving_load.py`` runs the same drive (without the baseline) and asserts the three
checks, never a timing. Usage::

    .venv/bin/python benchmarks/load_serving.py [--duration 60] [--baseline-duration 20]
        [--prefill-rows 400000] [--concurrency 32] [--batch-every 10] [--json out.json]

It exits 0 unless the run itself breaks; a failed check prints FAIL, for a person to judge.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
MARK_S = 10.0  # memory is compared from here to the end
MAX_GROWTH_PCT = 15.0
MAX_GROWTH_MB = 50.0


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


bench_serving = _sibling("bench_serving")


# -- the request mix ------------------------------------------------------------------------------


@dataclass
class Mix:
    """Request bodies: one-row bodies, and ``batch_rows``-row bodies sent every ``batch_every``."""

    singles: list[bytes]
    batches: list[bytes]
    batch_rows: int
    batch_every: int

    def pick(self, i: int) -> tuple[bytes, int]:
        if self.batch_every and i % self.batch_every == self.batch_every - 1:
            return self.batches[(i // self.batch_every) % len(self.batches)], self.batch_rows
        return self.singles[i % len(self.singles)], 1


def make_mix(
    rows: list[dict[str, Any]],
    batch_rows: int = 100,
    batch_every: int = 10,
    wrap: str | None = None,
) -> Mix:
    """Bodies for pipeflow's native route (a row or a list of rows), or, with ``wrap`` (e.g.
    ``"dataframe_records"``), the rows under that key as MLflow's ``/invocations`` wants them."""

    def body(payload: Any) -> bytes:
        if wrap:
            payload = {wrap: payload if isinstance(payload, list) else [payload]}
        return json.dumps(payload).encode()

    batches = [
        body([rows[(start + j) % len(rows)] for j in range(batch_rows)])
        for start in range(0, len(rows), batch_rows)
    ]
    return Mix([body(r) for r in rows], batches, batch_rows, batch_every)


# -- the drive ------------------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


@dataclass
class Drive:
    """One sustained run against one server."""

    server: str
    duration_s: float
    concurrency: int
    finished: list[float]  # per request, in completion order: seconds since the start
    latency: list[float]  # per request: seconds from sending to the whole answer
    rows: list[int]  # per request: rows in it
    statuses: Counter[int]
    rows_ok: int
    ids: list[str]  # prediction ids in the 200 answers (when collected)
    rss: list[tuple[float, int]]  # (seconds since the start, KiB)
    client_cpu_s: float
    server_cpu_s: float
    failures: list[str] = field(default_factory=list)  # the first few non-200 answers

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def errors(self) -> int:
        return self.requests - self.statuses.get(200, 0)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s

    @property
    def rows_per_s(self) -> float:
        return self.rows_ok / self.duration_s

    def pct(self, q: float, rows: int | None = None) -> float:
        """Latency percentile in ms, of one request kind or of all."""
        values = sorted(
            v for v, k in zip(self.latency, self.rows, strict=True) if rows is None or k == rows
        )
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(q * len(values)))] * 1000

    def memory(self) -> dict[str, Any]:
        """RSS at the ``MARK_S`` mark and at the end, and whether its growth stays in bounds."""
        after = [kib for t, kib in self.rss if t >= MARK_S] or [self.rss[-1][1]]
        at_mark, end = after[0], self.rss[-1][1]
        growth_mb = (end - at_mark) * 1024 / 1e6
        growth_pct = 100 * (end - at_mark) / at_mark
        return {
            "rss_start_mb": self.rss[0][1] * 1024 / 1e6,
            "rss_at_mark_mb": at_mark * 1024 / 1e6,
            "rss_end_mb": end * 1024 / 1e6,
            "rss_max_mb": max(kib for _, kib in self.rss) * 1024 / 1e6,
            "growth_mb": growth_mb,
            "growth_pct": growth_pct,
            "ok": growth_pct < MAX_GROWTH_PCT or growth_mb < MAX_GROWTH_MB,
        }

    def timeline(self, step: float = 10.0) -> list[dict[str, float]]:
        """Per ``step`` seconds: requests/s, p99 of the requests finished then, RSS at its end."""
        out = []
        start = 0.0
        while start < self.duration_s - 1e-9:
            end = start + step
            if self.duration_s - end < step / 2:  # a short tail joins the last window
                end = self.duration_s
            window = sorted(
                lat for t, lat in zip(self.finished, self.latency, strict=True) if start <= t < end
            )
            rss = [kib for t, kib in self.rss if t <= end + 0.5]
            out.append(
                {
                    "from_s": start,
                    "to_s": end,
                    "rps": len(window) / (end - start),
                    "p99_ms": window[min(len(window) - 1, int(0.99 * len(window)))] * 1000
                    if window
                    else float("nan"),
                    "rss_mb": (rss[-1] if rss else self.rss[0][1]) * 1024 / 1e6,
                }
            )
            start = end
        return out


async def _drive(
    server: Any,
    mix: Mix,
    duration_s: float,
    concurrency: int,
    collect_ids: bool,
    until_rows: int | None = None,
) -> Drive:
    import orjson

    pid = server.proc.pid
    finished: list[float] = []
    latency: list[float] = []
    kinds: list[int] = []
    statuses: Counter[int] = Counter()
    ids: list[str] = []
    failures: list[str] = []
    rss: list[tuple[float, int]] = []
    rows_ok = 0
    counter = 0
    conns = [bench_serving.RawConnection(server.port, server.path) for _ in range(concurrency)]
    for conn in conns:  # connect before the clock starts
        conn.reader, conn.writer = await asyncio.open_connection("127.0.0.1", conn.port)

    cpu0, server0 = time.process_time(), _cpu_s(pid)
    t0 = time.perf_counter()
    deadline = t0 + duration_s
    stop = asyncio.Event()

    async def sampler() -> None:
        n = 0
        while not stop.is_set():
            rss.append((time.perf_counter() - t0, rss_kib(pid)))
            n += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(t0 + n - time.perf_counter(), 0))

    async def worker(slot: int) -> None:
        nonlocal rows_ok, counter
        conn = conns[slot]
        while time.perf_counter() < deadline and (until_rows is None or rows_ok < until_rows):
            body, rows = mix.pick(counter)
            counter += 1
            t = time.perf_counter()
            try:
                status, data = await conn.post(body)
            except (OSError, asyncio.IncompleteReadError) as err:
                status, data = 0, repr(err).encode()
                await conn.close()
                conn = conns[slot] = bench_serving.RawConnection(server.port, server.path)
            done = time.perf_counter()
            finished.append(done - t0)
            latency.append(done - t)
            kinds.append(rows)
            statuses[status] += 1
            if status == 200:
                rows_ok += rows
                if collect_ids:
                    ids.extend(p["id"] for p in orjson.loads(data)["predictions"])
            elif len(failures) < 5:
                failures.append(f"{status}: {data[:300]!r}")

    sampling = asyncio.create_task(sampler())
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    wall = time.perf_counter() - t0
    stop.set()
    await sampling
    rss.append((wall, rss_kib(pid)))
    cpu, server_cpu = time.process_time() - cpu0, _cpu_s(pid) - server0
    for conn in conns:
        await conn.close()
    return Drive(
        server=server.name,
        duration_s=wall,
        concurrency=concurrency,
        finished=finished,
        latency=latency,
        rows=kinds,
        statuses=statuses,
        rows_ok=rows_ok,
        ids=ids,
        rss=rss,
        client_cpu_s=cpu,
        server_cpu_s=server_cpu,
        failures=failures,
    )


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / bench_serving.CLK_TCK


def drive(
    server: Any,
    mix: Mix,
    duration_s: float = 60.0,
    concurrency: int = 32,
    collect_ids: bool = True,
) -> Drive:
    """Drive ``server`` (a ``bench_serving.Server``) with ``mix`` for ``duration_s`` seconds."""
    return asyncio.run(_drive(server, mix, duration_s, concurrency, collect_ids))


def prefill(
    server: Any, mix: Mix, rows: int, concurrency: int = 32, collect_ids: bool = True
) -> Drive:
    """Batches only, until ``rows`` predictions have been answered (or 300 s have passed).

    A server reaches its steady memory only once its bounded structures are full: pipeflow's
    map of recent prediction ids (for feedback) holds the last 200,000, and the dict under it
    settles after about twice as many. Judging memory before that would call a full cache a
    leak, or hide a leak on a fast machine that fills it sooner."""
    batches = Mix(mix.batches, mix.batches, mix.batch_rows, batch_every=1)
    return asyncio.run(_drive(server, batches, 300.0, concurrency, collect_ids, until_rows=rows))


def warm_up(server: Any, mix: Mix, collect_ids: bool = True) -> list[str]:
    """One request of each kind (imports, first predict); returns the prediction ids answered."""

    async def go() -> list[str]:
        ids: list[str] = []
        for body in (mix.singles[0], mix.batches[0]):
            conn = bench_serving.RawConnection(server.port, server.path)
            status, data = await conn.post(body)
            await conn.close()
            if status != 200:
                raise RuntimeError(f"{server.name} answered {status} to a warm-up: {data[:300]!r}")
            if collect_ids:
                ids.extend(p["id"] for p in json.loads(data)["predictions"])
        return ids

    return asyncio.run(go())


def audit_ids(store: Path) -> list[str]:
    """Prediction ids in the audit log (lines without their newline are torn: not counted)."""
    import orjson

    from pipeflow.store import journal

    ids = []
    for path in sorted((store / "audit" / "predictions").glob("*.jsonl")):
        with open(path, "rb") as fh:
            for line in fh:
                if line.endswith(b"\n"):  # a request's record holds its rows' ids
                    record = orjson.loads(line)
                    ids.extend(record["ids"] if journal.is_request(record) else [record["id"]])
    return ids


# -- the report -----------------------------------------------------------------------------------


def summary(run: Drive, baseline: Drive | None = None) -> str:
    """The figures of one run, with ratios to ``baseline`` when given."""
    batch = max(run.rows)
    mem = run.memory()
    lines = [
        f"{run.server}: {run.duration_s:.1f} s at concurrency {run.concurrency}, "
        f"{run.requests:,} requests ({run.rows.count(1):,} of 1 row, "
        f"{run.rows.count(batch):,} of {batch} rows), {run.errors} not answered 200",
        f"  throughput {run.rps:,.1f} req/s, {run.rows_per_s:,.0f} rows/s; "
        f"client CPU {run.client_cpu_s / run.duration_s:.0%}, "
        f"server CPU {run.server_cpu_s / run.duration_s:.0%} of a core",
        f"  latency all      p50 {run.pct(0.5):7.1f} ms  p99 {run.pct(0.99):7.1f} ms",
        f"  latency 1 row    p50 {run.pct(0.5, 1):7.1f} ms  p99 {run.pct(0.99, 1):7.1f} ms",
        f"  latency {batch} rows p50 {run.pct(0.5, batch):7.1f} ms  "
        f"p99 {run.pct(0.99, batch):7.1f} ms",
        f"  RSS start {mem['rss_start_mb']:.0f} MB, at {MARK_S:.0f} s {mem['rss_at_mark_mb']:.0f} MB, "
        f"end {mem['rss_end_mb']:.0f} MB, max {mem['rss_max_mb']:.0f} MB: "
        f"{mem['growth_mb']:+.1f} MB ({mem['growth_pct']:+.1f}%) since {MARK_S:.0f} s",
        "  timeline: "
        + "; ".join(
            f"{w['from_s']:.0f}-{w['to_s']:.0f} s {w['rps']:.0f} req/s p99 {w['p99_ms']:.0f} ms "
            f"{w['rss_mb']:.0f} MB"
            for w in run.timeline()
        ),
    ]
    if baseline is not None:
        lines.append(
            f"  against {baseline.server} ({baseline.duration_s:.0f} s, same mix, same run): "
            f"req/s {run.rps / baseline.rps:.2f}x ({run.rps:,.1f} / {baseline.rps:,.1f}), "
            f"rows/s {run.rows_per_s / baseline.rows_per_s:.2f}x, "
            f"p50 {run.pct(0.5) / baseline.pct(0.5):.2f}x "
            f"({run.pct(0.5):.1f} / {baseline.pct(0.5):.1f} ms), "
            f"p99 {run.pct(0.99) / baseline.pct(0.99):.2f}x "
            f"({run.pct(0.99):.1f} / {baseline.pct(0.99):.1f} ms)"
        )
    return "\n".join(lines)


def checks(run: Drive, audited: list[str], acknowledged: list[str]) -> list[tuple[bool, str]]:
    """The three correctness checks: (passed, what was seen)."""
    mem = run.memory()
    audit = Counter(audited)
    acked = Counter(acknowledged)
    return [
        (
            run.errors == 0,
            f"every response 200: {run.statuses.get(200, 0):,} of {run.requests:,}"
            + (f"; first failures: {run.failures}" if run.failures else ""),
        ),
        (
            mem["ok"],
            f"memory flat: {mem['growth_mb']:+.1f} MB ({mem['growth_pct']:+.1f}%) from {MARK_S:.0f} s "
            f"to the end (limit: < {MAX_GROWTH_PCT:.0f}% or < {MAX_GROWTH_MB:.0f} MB)",
        ),
        (
            audit == acked,
            f"audit log = acknowledged predictions: {len(audited):,} records, "
            f"{len(acknowledged):,} ids answered 200"
            + (
                ""
                if audit == acked
                else f"; {sum((acked - audit).values())} missing, "
                f"{sum((audit - acked).values())} unexpected"
            ),
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load on pipeflow")
    parser.add_argument(
        "--baseline-duration", type=float, default=20.0, help="seconds on the minimal app; 0: none"
    )
    parser.add_argument(
        "--prefill-rows", type=int, default=400_000, help="rows answered before measuring; 0: none"
    )
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--batch-every", type=int, default=10, help="every Nth request: 100 rows")
    parser.add_argument("--batch-rows", type=int, default=100)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pipeflow-load-serving-") as name:
        store = bench_serving.build_project(Path(name))
        project = store.parent
        mix = make_mix(bench_serving.request_rows(project), args.batch_rows, args.batch_every)

        baseline = None
        if args.baseline_duration > 0:
            minimal = bench_serving.start_minimal(project, store)
            try:
                warm_up(minimal, mix, collect_ids=False)
                baseline = drive(
                    minimal, mix, args.baseline_duration, args.concurrency, collect_ids=False
                )
            finally:
                minimal.stop()

        server = bench_serving.start_pipeflow(project, store)
        try:
            acknowledged = warm_up(server, mix)
            if args.prefill_rows > 0:
                pre = prefill(server, mix, args.prefill_rows, args.concurrency)
                acknowledged += pre.ids
                print(
                    f"prefill: {pre.rows_ok:,} rows in {pre.duration_s:.1f} s, {pre.errors} errors, "
                    f"RSS {pre.rss[0][1] * 1024 / 1e6:.0f} -> {pre.rss[-1][1] * 1024 / 1e6:.0f} MB"
                )
            run = drive(server, mix, args.duration, args.concurrency)
        finally:
            server.stop()
        acknowledged += run.ids
        audited = audit_ids(store)

    print(
        f"\npipeflow serve load test ({os.cpu_count()} cpus, python {sys.version.split()[0]}, "
        f"load average {os.getloadavg()[0]:.1f}; client on the same cores)"
    )
    if baseline is not None:
        print(summary(baseline))
    print(summary(run, baseline))
    results = checks(run, audited, acknowledged)
    for ok, text in results:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    print(f"\n(total {time.perf_counter() - started:.0f} s)")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "duration_s": run.duration_s,
                    "concurrency": run.concurrency,
                    "requests": run.requests,
                    "errors": run.errors,
                    "rps": run.rps,
                    "rows_per_s": run.rows_per_s,
                    "p50_ms": run.pct(0.5),
                    "p99_ms": run.pct(0.99),
                    "memory": run.memory(),
                    "timeline": run.timeline(),
                    "baseline": None
                    if baseline is None
                    else {
                        "rps": baseline.rps,
                        "rows_per_s": baseline.rows_per_s,
                        "p50_ms": baseline.pct(0.5),
                        "p99_ms": baseline.pct(0.99),
                    },
                    "checks": [{"ok": ok, "what": text} for ok, text in results],
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
