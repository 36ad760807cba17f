"""A restarted replica's replay of the fleet's audit journal: time and memory.

A ``pipeflow serve`` replica reads the whole journal once when it starts
(:meth:`pipeflow.serving.fleet.Fleet.refresh`). This writes a journal of 1000-row request
records (31 float features, two classes' probabilities: what the batcher writes) through the
real :class:`~pipeflow.store.journal.AuditLog`, in 64 MiB segments, with feedback for one row in
a hundred and a model error now and then, and replays it in a fresh process per repeat, taking
turns:

- **baseline**: the fold as it was before (kept here only, :func:`list_refresh`): every record of
  the journal parsed whole into a list by ``Follower.new``, then folded;
- **pipeflow**: ``Fleet.refresh`` as it is: record by record as the lines are read, decoding of
  a prediction only the fields the fold reads.

Both must fold the same state (rows, errors and latency per cell, accuracy counts, labels,
pending feedback): the script stops if they differ. Figures, best of the repeats:

1. Peak memory of the replay: the process's peak RSS (``VmHWM``) above its RSS before the
   replay. Target: <= 1.5x one segment's size (it must not grow with the journal).
2. CPU seconds (user + system) of the replay per GB of journal. Target: <= 0.5x the baseline's.
3. With ``--serve``: the command a restarted replica runs, ``pipeflow serve`` (a whole process,
   a registered tumours model) with this journal as its audit folder, against the same command
   with an empty one, alternately: seconds until ``/health`` answers (the ratio) and the peak
   RSS then. Target: the peak at most 1.5 segments above the empty folder's.

Usage: ``python benchmarks/bench_replay.py [--quick] [--mb 300] [--repeat 2] [--serve]
[--json out]``.
It never fails on a missed target: it prints MISS and the figures, and exits 0 unless the
benchmark itself breaks.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core import Row, report  # noqa: E402

SEGMENT = 64 * 2**20
ROWS, FEATURES = 1000, 31


def write_journal(folder: Path, mb: int, now: float) -> int:
    """About ``mb`` MB of 1000-row request records spread over the last half hour; returns
    the bytes written to ``predictions``."""
    from pipeflow.store.journal import AuditLog

    rng = random.Random(7)
    predictions = AuditLog(folder, "predictions", segment_bytes=SEGMENT)
    feedback, events = AuditLog(folder, "feedback"), AuditLog(folder, "events")
    columns = {f"f{j}": [rng.gauss(0, 1) for _ in range(ROWS)] for j in range(FEATURES)}
    p = [rng.random() for _ in range(ROWS)]
    written, k = 0, 0
    while written < mb * 1_000_000:
        when = now - 1800 + 1800 * written / (mb * 1_000_000)
        ids = [f"{k:08x}-{i:04x}" for i in range(ROWS)]
        output = ["yes" if x > 0.5 else "no" for x in p]
        record = {
            "id": ids[0], "ids": ids, "rows": ROWS, "time": when, "model": "m", "version": 1 + k % 2,
            "role": "primary", "route": "v1", "inputs": columns, "output": output,
            "probabilities": {"no": [1 - x for x in p], "yes": p}, "flags": None,
            "latency_ms": 20 + k % 50, "caller": "anonymous",
        }  # fmt: skip
        predictions.append([record])
        written += len(json.dumps(record, separators=(",", ":")))
        feedback.append(
            {"id": ids[i], "time": when + 1, "outcome": rng.choice(["yes", "no"])}
            for i in range(0, ROWS, 100)
        )
        if k % 40 == 0:
            events.append([{"event": "model_error", "model": "m", "version": 1, "time": when}])
        k += 1
    predictions.close()
    feedback.close()
    events.close()
    return sum(p.stat().st_size for p in (folder / "predictions").glob("*.jsonl"))


def list_refresh(fleet: Any, now: float) -> None:
    """The fold before (until 2026-12-08): every record of the journal parsed whole and listed,
    then folded. The baseline only."""
    from pipeflow.store.journal import is_request, row_count

    predictions = fleet.followers["predictions"].new(skip=fleet.own)
    own = fleet.own()
    events = fleet.followers["events"].new()
    feedback = [r for name, r in fleet.followers["feedback"].new() if name not in own]
    others: dict[tuple[str, int], tuple[list[str], list[Any]]] = {}
    for name, r in predictions:
        model, version, when = r.get("model"), r.get("version"), r.get("time")
        if not isinstance(model, str) or not isinstance(version, int):
            continue
        n = row_count(r)
        if isinstance(when, int | float):
            cell = fleet._cell(model, version, int(when))
            cell.rows += n
            cell.add_latency(r.get("latency_ms"), n)
        if name in own:
            continue
        if is_request(r):
            ids, outputs = others.setdefault((model, version), ([], []))
            out = r.get("output")
            ids.extend(r["ids"])
            outputs.extend(out if isinstance(out, list) and len(out) == n else [None] * n)
        elif isinstance(r.get("id"), str):
            ids, outputs = others.setdefault((model, version), ([], []))
            ids.append(r["id"])
            outputs.append(r.get("output"))
    for _, r in events:
        model, version, when = r.get("model"), r.get("version"), r.get("time")
        if r.get("event") != "model_error" or not isinstance(version, int):
            continue
        if isinstance(model, str) and isinstance(when, int | float):
            rows = r.get("rows")
            fleet._cell(model, version, int(when)).errors += (
                rows if isinstance(rows, int) and rows > 0 else 1
            )
    for (model, version), (ids, outputs) in others.items():
        fleet.recent.add(model, version, ids, outputs)
    waiting = list(fleet.pending.items()) if others else []
    for r in feedback:
        if isinstance(r.get("id"), str) and isinstance(r.get("time"), int | float):
            fleet.label(r["id"], r.get("outcome"), r["time"])
    for pid, (when, outcome) in waiting:
        if fleet.recent.get(pid) is not None:
            fleet.pending.pop(pid, None)
            fleet.label(pid, outcome, when)
    oldest = int(now - fleet.horizon_s)
    for key in [k for k in fleet.cells if k[2] < oldest]:
        del fleet.cells[key]


def folded(fleet: Any) -> dict[str, Any]:
    """What a replay leaves that the two paths must agree on, as JSON-able values."""
    return {
        "cells": sorted(
            [list(k), c.rows, c.errors, c.correct, c.labelled, sorted(c.latency.items())]
            for k, c in fleet.cells.items()
        ),
        "counts": sorted([list(k), v] for k, v in fleet.counts.items()),
        "labels": sorted([k, list(v)] for k, v in fleet.labels.items()),
        "pending": sorted(fleet.pending),
    }


def _vm(field: str) -> int:
    for text in Path("/proc/self/status").read_text().splitlines():
        if text.startswith(field + ":"):
            return int(text.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(path: str, folder: Path, now: float) -> None:
    """One replay in this (fresh) process; prints its figures as JSON."""
    from pipeflow.serving.fleet import Fleet

    fleet = Fleet(folder, set)
    rss = _vm("VmRSS")
    before = resource.getrusage(resource.RUSAGE_SELF)
    if path == "list":
        list_refresh(fleet, now)
    else:
        fleet.refresh(now)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    state = folded(fleet)
    print(json.dumps({"cpu_s": cpu, "peak": _vm("VmHWM") - rss, "state": state}))


def replay(path: str, folder: Path, now: float) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", path, str(folder), repr(now)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


def serve_ready(store: str, audit: Path, model: str) -> dict[str, float]:
    """``pipeflow serve`` (a whole process, this checkout's) started on ``store`` with ``audit``
    as its audit folder: seconds until ``/health`` answers, and its peak RSS (MiB) then."""
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "pipeflow", "serve", f"{model}@production", "--store", store]
    cmd += ["--port", str(port), "--audit-dir", str(audit)]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            if proc.poll() is not None or time.perf_counter() - t > 300:
                raise RuntimeError(f"pipeflow serve did not start: {' '.join(cmd)}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                    break
            except OSError:
                time.sleep(0.05)
        ready = time.perf_counter() - t
        status = Path(f"/proc/{proc.pid}/status").read_text().splitlines()
        peak = next(int(x.split()[1]) for x in status if x.startswith("VmHWM:")) / 1024
    finally:
        proc.terminate()
        proc.wait(30)
    return {"ready_s": ready, "peak_mib": peak}


def serve_rows(folder: Path, size: int, repeat: int) -> list[Row]:
    """Row 3 (``--serve``): the command a restarted replica runs, on the journal against an
    empty audit folder, alternately, best of ``repeat``."""
    from bench_batch import registered_model

    with tempfile.TemporaryDirectory(prefix="pipeflow-bench-serve-") as name:
        root = Path(name)
        registry, _ = registered_model(root / "store")
        (root / "empty").mkdir()
        runs: dict[str, list[dict[str, float]]] = {"journal": [], "empty": []}
        for _ in range(repeat):
            for which, audit in (("journal", folder), ("empty", root / "empty")):
                runs[which].append(serve_ready(registry.store.url, audit, "tumours"))
    best = {
        k: {f: min(r[f] for r in rs) for f in ("ready_s", "peak_mib")} for k, rs in runs.items()
    }
    ours, base = best["journal"], best["empty"]
    above = ours["peak_mib"] - base["peak_mib"]
    limit = 1.5 * SEGMENT / 2**20
    return [
        Row(
            figure=f"pipeflow serve ready, a {size / 1e6:.0f} MB journal (whole process)",
            pipeflow=f"{ours['ready_s']:.2f} s, peak {ours['peak_mib']:.0f} MiB",
            baseline=f"{base['ready_s']:.2f} s, peak {base['peak_mib']:.0f} MiB (no journal)",
            ratio=ours["ready_s"] / base["ready_s"],
            verdict=f"peak {above:+.0f} MiB above no journal (<= 1.5 segments, {limit:.0f} MiB)",
            ok=above <= limit,
            data={"journal": ours, "empty": base, "bytes": size},
        )
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 30 MB journal, for a smoke run")
    parser.add_argument("--mb", type=int, default=300, help="the journal's size (MB)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--serve", action="store_true", help="also time a whole `pipeflow serve` start on it"
    )
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), float(args.child[2]))
        return 0
    mb = 30 if args.quick else args.mb
    t0 = time.perf_counter()
    now = time.time()
    with tempfile.TemporaryDirectory(prefix="pipeflow-bench-") as name:
        folder = Path(name)
        size = write_journal(folder, mb, now)
        runs: dict[str, list[dict[str, Any]]] = {"list": [], "fold": []}
        for _ in range(args.repeat):
            for path in runs:
                runs[path].append(replay(path, folder, now))
        served = serve_rows(folder, size, args.repeat) if args.serve else []
    states = {json.dumps(r.pop("state")) for rs in runs.values() for r in rs}
    if len(states) != 1:
        raise SystemExit("the two replays folded different states")
    gb = size / 1e9
    peak = {k: min(r["peak"] for r in rs) / 2**20 for k, rs in runs.items()}
    cpu = {k: min(r["cpu_s"] for r in rs) / gb for k, rs in runs.items()}
    limit = 1.5 * SEGMENT / 2**20

    def row(what: str, unit: str, fmt: str, of: dict, key: str, verdict: str, ok: bool) -> Row:
        return Row(
            figure=f"replay of a {size / 1e6:.0f} MB journal: {what}",
            pipeflow=f"{of['fold']:{fmt}} {unit} record by record",
            baseline=f"{of['list']:{fmt}} {unit} listed whole",
            ratio=of["fold"] / of["list"],
            verdict=verdict,
            ok=ok,
            data={key: of, "bytes": size},
        )

    lean = cpu["fold"] / cpu["list"]
    rows = [
        row(
            "peak RSS above start", "MiB", ".0f", peak, "peak_mib",
            f"{peak['fold']:.0f} MiB (<= 1.5 segments, {limit:.0f} MiB)", peak["fold"] <= limit,
        ),
        row(
            "CPU", "s/GB", ".1f", cpu, "cpu_s_per_gb",
            f"{lean:.2f}x the baseline's (<= 0.5)", lean <= 0.5,
        ),
    ]  # fmt: skip
    report(rows + served, "pipeflow replay benchmark", args.repeat, t0, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
