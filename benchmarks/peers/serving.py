"""Serving against a peer: ``pipeflow serve`` vs ``mlflow models serve``, the same model.

The tumours project of ``bench_serving.py`` is built in a temporary folder (breast-cancer CSV ->
scikit-learn pipeline -> ``tumours@production``). The production model, the very
``sklearn.pipeline.Pipeline`` object pipeflow serves, is then logged with
``mlflow.sklearn.log_model`` (skops format, the same trusted types as pipeflow's registry, and a
signature inferred from 50 rows) to a ``file://`` tracking folder in the same temporary folder: no
network, no tracking server. Two uvicorn servers on 127.0.0.1, one worker process each:

- **MLflow**: ``mlflow models serve -m <model> --env-manager local --workers 1`` (its
  ``/invocations`` route, ``{"dataframe_records": [...]}`` bodies, schema enforcement from the
  signature). Its uvicorn access log is switched off (``UVICORN_ACCESS_LOG=false``), as pipeflow's
  is, so neither pays for a console line per request. MLflow starts ``uvicorn`` from ``PATH``; a
  shim in the temporary folder makes that the peers' Python.
- **pipeflow**: ``pipeflow serve tumours@production`` with its defaults (signature validation,
  unusual-input flags, micro-batching, the audit log written before each answer, metrics; it also
  returns probabilities and an id per row), on its native route.

Scenarios, as in ``bench_serving.py`` (each server loaded alone, warm-ups first, the two alternate
and the order flips between the 2 repeats, the best repeat reported): single-row requests at
concurrency 8 and 64 (req/s, p50, p99), and 1000-row requests at concurrency 4 (rows/s). The load
generator is ``bench_serving``'s raw asyncio HTTP/1.1 client, on the same cores. Before measuring,
both servers must answer the same predictions for 50 rows.

MLflow conflicts with pipeflow's environment (it pins ``pyarrow<26``): it is looked for in
``$PIPEFLOW_PEERS_PYTHON``, ``benchmarks/peers/.venv`` (see docs/benchmarks.md), then this Python;
without it the MLflow rows print ``skip`` with the reason.

Usage: ``python benchmarks/peers/serving.py [--quick] [--json out.json]``; ``--quick`` is a
quarter of the requests and one repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import Row, finish, parser, peer_python, sibling, skipped

LOG_MODEL = """
import json, sys
import mlflow, mlflow.sklearn
import pandas as pd
from mlflow.models import infer_signature
from pipeflow.registry import Registry
from pipeflow.store.artifacts import ArtifactStore

store, data, tracking = sys.argv[1:4]
model, record = Registry(ArtifactStore(store)).load_model("tumours", "production")
sample = pd.read_csv(data).drop(columns=["diagnosis"]).head(50)
mlflow.set_tracking_uri(tracking)
mlflow.set_experiment("pipeflow-peers")
with mlflow.start_run():
    info = mlflow.sklearn.log_model(
        model,
        name="tumours",
        signature=infer_signature(sample, model.predict(sample)),
        skops_trusted_types=record.get("trusted_types") or [],
    )
path = mlflow.artifacts.download_artifacts(info.model_uri)
print(json.dumps({"path": path, "uri": info.model_uri}))
"""

QUIET = {
    "MLFLOW_ALLOW_FILE_STORE": "true",  # MLflow 3 refuses file:// tracking without it
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
}


def log_model(python: str, store: Path, root: Path) -> str:
    """Log the production model with MLflow; returns the local folder of the logged model."""
    done = subprocess.run(
        [python, "-c", LOG_MODEL, str(store), str(store.parent / "data.csv"), root.as_uri()],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **QUIET},
        cwd=root,
    )
    if done.returncode != 0:
        raise RuntimeError(f"logging the model with MLflow failed:\n{done.stderr[-3000:]}")
    return str(json.loads(done.stdout.strip().splitlines()[-1])["path"])


class GroupServer:
    """A ``bench_serving.Server`` started in its own session: ``mlflow models serve`` runs
    uvicorn as a child, and stopping must reach both."""

    def __init__(self, server: Any):
        self.inner = server

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def stop(self) -> None:
        proc = self.inner.proc
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(15)


def start_mlflow(python: str, model: str, where: Path) -> GroupServer:
    import httpx

    bs = sibling("bench_serving")
    shim = where / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "uvicorn").write_text(f'#!/bin/sh\nexec "{python}" -m uvicorn "$@"\n')
    (shim / "uvicorn").chmod(0o755)
    port = bs.free_port()
    log = where / f"mlflow-{port}.log"
    env = {
        **os.environ,
        **QUIET,
        "PATH": f"{shim}{os.pathsep}{os.environ.get('PATH', '')}",
        "UVICORN_ACCESS_LOG": "false",
    }
    cmd = [python, "-m", "mlflow", "models", "serve", "-m", model, "--env-manager", "local"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    proc = subprocess.Popen(
        cmd,
        cwd=where,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # its own process group: stop() ends uvicorn too
    )
    server = GroupServer(bs.Server("mlflow", proc, port, "/invocations", log))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow models serve exited {proc.returncode}: {log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"mlflow models serve did not become ready: {log.read_text()}")


async def _answer(server: Any, body: bytes) -> Any:
    conn = sibling("bench_serving").RawConnection(server.port, server.path)
    status, data = await conn.post(body)
    await conn.close()
    if status != 200:
        raise RuntimeError(f"{server.name} answered {status}: {data[:500]!r}")
    return json.loads(data)


def measure(args: Any) -> tuple[dict[str, Any], str | None]:
    """Run the scenarios; returns the results and MLflow's version (None: not available)."""
    bs = sibling("bench_serving")
    scale = 0.25 if args.quick else 1.0
    single_n, big_n, repeats = max(200, int(2000 * scale)), max(12, int(60 * scale)), 1
    if not args.quick:
        repeats = 2
    python, version = peer_python("mlflow")
    why = None if python else version
    with tempfile.TemporaryDirectory(prefix="pipeflow-peers-serving-") as name:
        root = Path(name)
        store = bs.build_project(root)
        project = store.parent
        rows = bs.request_rows(project)
        big_rows = [rows[i % len(rows)] for i in range(1000)]
        bodies = {
            "pipeflow": {
                1: [(json.dumps(r).encode(), 1) for r in rows],
                1000: [(json.dumps(big_rows).encode(), 1000)],
            },
            "mlflow": {
                1: [(json.dumps({"dataframe_records": [r]}).encode(), 1) for r in rows],
                1000: [(json.dumps({"dataframe_records": big_rows}).encode(), 1000)],
            },
        }
        scenarios = [
            ("1 row, concurrency 8", 1, single_n, 8),
            ("1 row, concurrency 64", 1, single_n, 64),
            ("1000 rows, concurrency 4", 1000, big_n, 4),
        ]
        servers: list[Any] = []
        results: dict[tuple[str, str], list[Any]] = {}
        same = None
        try:
            if python:
                try:
                    model = log_model(python, store, root)
                    servers.append(start_mlflow(python, model, root))
                except RuntimeError as err:
                    why = f"MLflow failed: {str(err).splitlines()[0][:200]}"
                    print(f"skipping MLflow: {err}", file=sys.stderr)
            servers.append(bs.start_pipeflow(project, store))
            if len(servers) == 2:
                sample = rows[:50]
                theirs = asyncio.run(
                    _answer(servers[0], json.dumps({"dataframe_records": sample}).encode())
                )
                ours = asyncio.run(_answer(servers[1], json.dumps(sample).encode()))
                same = theirs["predictions"] == [p["prediction"] for p in ours["predictions"]]
            for s in servers:  # warm-up
                for _, kind, n, concurrency in scenarios:
                    warm = max(50, n // 10) if kind == 1 else 4
                    bs.load(s, bodies[s.name][kind], warm, concurrency, "raw")
            for rep in range(repeats):
                for label, kind, n, concurrency in scenarios:
                    for s in servers if rep % 2 == 0 else servers[::-1]:
                        r = bs.load(s, bodies[s.name][kind], n, concurrency, "raw")
                        results.setdefault((label, s.name), []).append(r)
                        print(
                            f"  [{rep + 1}/{repeats}] {label:26} {s.name:8} {r.rps:8.1f} req/s  "
                            f"p50 {r.pct(0.5):7.1f} ms  p99 {r.pct(0.99):7.1f} ms  "
                            f"errors {r.errors}",
                            flush=True,
                        )
        finally:
            for s in servers:
                s.stop()
    return {"scenarios": scenarios, "results": results, "same": same, "why": why}, (
        version if python and not why else None
    )


def rows_of(out: dict[str, Any], version: str | None) -> list[Row]:
    def best(runs: list[Any], key: Any, low: bool = False) -> float:
        values = [key(r) for r in runs]
        return min(values) if low else max(values)

    rows: list[Row] = []
    who = f"MLflow {version} models serve" if version else "MLflow models serve"
    for label, kind, _, _ in out["scenarios"]:
        ours = out["results"][(label, "pipeflow")]
        theirs = out["results"].get((label, "mlflow"))
        errors = sum(r.errors for r in ours + (theirs or []))
        # issue 6 asks for more than "ahead": 2x MLflow's single-row req/s (its aim) and
        # 1.5x MLflow's rows/s in 1000-row requests
        factor = 2.0 if kind == 1 else 1.5
        if kind == 1:
            names = [
                (f"{label}: req/s", f"ahead: >= {factor:.1f}x req/s"),
                (f"{label}: p99", "<= 1.0x p99"),
            ]
        else:
            names = [(f"{label}: rows/s", f"ahead: >= {factor:.1f}x rows/s")]
        if theirs is None:
            rows.extend(skipped("serving", n, who, t, out["why"]) for n, t in names)
            continue
        p = {
            "rps": best(ours, lambda r: r.rps),
            "p50": best(ours, lambda r: r.pct(0.5), low=True),
            "p99": best(ours, lambda r: r.pct(0.99), low=True),
        }
        m = {
            "rps": best(theirs, lambda r: r.rps),
            "p50": best(theirs, lambda r: r.pct(0.5), low=True),
            "p99": best(theirs, lambda r: r.pct(0.99), low=True),
        }
        note = f"; {errors} errors" if errors else ""
        if kind == 1:
            theirs_rate, ours_rate = f"{m['rps']:,.1f} req/s", f"{p['rps']:,.1f} req/s{note}"
        else:
            theirs_rate = f"{m['rps'] * kind:,.0f} rows/s (p99 {m['p99']:.0f} ms)"
            ours_rate = f"{p['rps'] * kind:,.0f} rows/s (p99 {p['p99']:.0f} ms){note}"
        figures = [
            (theirs_rate, ours_rate, p["rps"] / m["rps"], p["rps"] >= factor * m["rps"]),
            (
                f"p99 {m['p99']:.1f} ms (p50 {m['p50']:.1f})",
                f"p99 {p['p99']:.1f} ms (p50 {p['p50']:.1f})",
                p["p99"] / m["p99"],
                p["p99"] <= m["p99"],
            ),
        ]
        for (name, target), (base, mine, ratio, ok) in zip(names, figures, strict=False):
            rows.append(Row("serving", name, who, base, mine, ratio, target, ok and not errors))
    if out["same"] is not None:
        print(f"{'PASS' if out['same'] else 'MISS'}  same predictions from both servers, 50 rows")
    return rows


def main() -> int:
    args = parser(__doc__).parse_args()
    started = time.perf_counter()
    out, version = measure(args)
    rows = rows_of(out, version)
    return finish(
        "serving: pipeflow serve vs mlflow models serve, same model, best of the repeats",
        rows,
        args.json,
        time.perf_counter() - started,
    )


if __name__ == "__main__":
    sys.exit(main())
