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
quarter of the requests and one repeat. To measure one change: ``--scenario "tumours 1000"``
(the scenarios whose model and label hold that text; repeatable), ``--peer mlflow-nosignature``
(only these peers besides the minimal app; repeatable; ``--peer none`` for none), ``--repeats N``.
Each server's CPU per request (user + system seconds of its process, best repeat) is printed
with each line: less sensitive to a busy machine than its rate.

In the 1000-row scenario a second ``pipeflow serve`` runs with glibc's malloc defaults
(``PIPEFLOW_MALLOC=default``; :mod:`pipeflow.core.malloc`): its row compares the server CPU and
the page faults per request of the two, the same code but for malloc's settings.
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

store, data, tracking, signed = sys.argv[1:5]
model, record = Registry(ArtifactStore(store)).load_model("tumours", "production")
sample = pd.read_csv(data).drop(columns=["diagnosis"]).head(50)
mlflow.set_tracking_uri(tracking)
mlflow.set_experiment("pipeflow-peers")
with mlflow.start_run():
    info = mlflow.sklearn.log_model(
        model,
        name="tumours",
        signature=infer_signature(sample, model.predict(sample)) if signed == "1" else None,
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


def log_model(python: str, store: Path, root: Path, signed: bool = True) -> str:
    """Log the production model with MLflow (with an inferred signature, or none); returns the
    local folder of the logged model."""
    done = subprocess.run(
        [
            python,
            "-c",
            LOG_MODEL,
            str(store),
            str(store.parent / "data.csv"),
            root.as_uri(),
            "1" if signed else "0",
        ],
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

    def cpu_s(self) -> float:
        """User + system CPU seconds so far of the server's process and every live descendant
        (the uvicorn and worker processes the command starts), as ``bench_serving.Server.cpu_s``."""
        children: dict[int, list[int]] = {}
        ticks: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            pid = int(stat.parent.name)
            children.setdefault(int(fields[1]), []).append(pid)
            ticks[pid] = int(fields[11]) + int(fields[12])
        total, todo = 0, [self.inner.proc.pid]
        while todo:
            pid = todo.pop()
            total += ticks.get(pid, 0)
            todo += children.get(pid, [])
        return total / os.sysconf("SC_CLK_TCK")

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


def start_mlflow(python: str, model: str, where: Path, name: str = "mlflow") -> GroupServer:
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
    server = GroupServer(bs.Server(name, proc, port, "/invocations", log))
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


BENTO_SERVICE = """
import os

import bentoml
import numpy as np
import pandas as pd

from bentoml._internal.runner.container import PandasDataFrameContainer

from pipeflow.registry import Registry
from pipeflow.store.artifacts import ArtifactStore

# BentoML 1.4.40's adaptive batching sizes a DataFrame batch as ``batch.shape`` (a tuple), so
# the dispatcher fails ("unsupported operand type(s) for +: 'int' and 'tuple'") and every batched
# request waits for its 60 s timeout; its rows are ``shape[0]``, as for numpy arrays
PandasDataFrameContainer.get_batch_size = classmethod(lambda cls, batch, batch_dim: batch.shape[0])


@bentoml.service(workers=1)
class Model:
    def __init__(self) -> None:
        self.model, _ = Registry(ArtifactStore(os.environ["BENCH_STORE"])).load_model(
            os.environ.get("BENCH_MODEL", "tumours"), "production"
        )

    # BentoML's default max_batch_size is 100 rows: a 1000-row request would be split into ten
    # jobs; room for four concurrent 1000-row requests is what a user serving them would set
    @bentoml.api(batchable=True, max_batch_size=4096)
    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return self.model.predict(frame)
"""


def start_bentoml(python: str, store: Path, where: Path) -> GroupServer:
    """``bentoml serve`` of the same model with adaptive batching (``batchable=True``), one
    worker, from its own Python."""
    import httpx

    bs = sibling("bench_serving")
    (where / "bento_service.py").write_text(BENTO_SERVICE)
    port = bs.free_port()
    log = where / f"bentoml-{port}.log"
    env = {**os.environ, **QUIET, "BENCH_STORE": str(store), "BENTOML_DO_NOT_TRACK": "True"}
    cmd = [python, "-m", "bentoml", "serve", "bento_service:Model"]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(
        cmd, cwd=where, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env,
        start_new_session=True,
    )  # fmt: skip
    server = GroupServer(bs.Server("bentoml", proc, port, "/predict", log))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bentoml serve exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"bentoml serve did not become ready: {log.read_text()[-2000:]}")


def start_pipeflow(
    project: Path, store: Path, model: str, name: str, glibc_malloc: bool = False
) -> Any:
    """``pipeflow serve`` of ``model@production``. ``glibc_malloc``: with glibc's malloc
    defaults (``PIPEFLOW_MALLOC=default``), the baseline of the malloc settings, its audit log a
    folder of its own: in the store's, the two servers would be one fleet, each reading the
    other's records every reload interval."""
    bs = sibling("bench_serving")
    port = bs.free_port()
    cmd = [bs.PIPEFLOW, "serve", f"{model}@production", "--store", str(store)]
    cmd += ["--port", str(port), "--log-level", "warning"]
    env: dict[str, str] = {}
    if glibc_malloc:
        cmd += ["--audit-dir", str(project / f"audit-{name}")]
        env = {"PIPEFLOW_MALLOC": "default"}
    return bs.start(name, cmd, project, port, f"/v1/models/{model}/predict", "/ready", env)


#: the name of the pipeflow server that runs with glibc's malloc defaults
GLIBC = "pipeflow-glibc-malloc"


def minor_faults(server: Any) -> int:
    """Minor page faults of the server's process so far (``/proc/PID/stat``)."""
    with open(f"/proc/{server.proc.pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[7])


def start_minimal(project: Path, store: Path, model: str, name: str) -> Any:
    bs = sibling("bench_serving")
    (project / "minimal_app.py").write_text(bs.MINIMAL_APP)
    port = bs.free_port()
    cmd = [sys.executable, "-m", "uvicorn", "minimal_app:app", "--port", str(port)]
    cmd += ["--log-level", "warning", "--no-access-log"]
    env = {"BENCH_STORE": str(store), "BENCH_MODEL": model}
    return bs.start(name, cmd, project, port, "/predict", "/health", env)


def register_cheap(store: Path, project: Path) -> None:
    """``cheap@production``: a bare LogisticRegression on the 30 numeric tumour features (no
    preprocessing), registered with its signature and reference profile as ``train`` would."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from pipeflow.governance.profile import reference_profile
    from pipeflow.registry import Registry
    from pipeflow.store.artifacts import ArtifactStore

    frame = pd.read_csv(project / "data.csv")
    X = frame.drop(columns=["diagnosis", "size_band"]).fillna(0.0)
    model = LogisticRegression(max_iter=2000).fit(X, frame["diagnosis"])
    st = ArtifactStore(str(store))
    registry = Registry(st)
    roles = dict.fromkeys(X.columns, "numeric")
    record = registry.register(
        "cheap",
        st.save(model, "model"),
        signature={
            "features": [{"name": c, "dtype": "float64", "role": "numeric"} for c in X.columns],
            "classes": [str(c) for c in model.classes_],
        },
        reference=reference_profile(X, roles),
        metrics={"accuracy": float(model.score(X, frame["diagnosis"]))},
    )
    registry.move_alias("cheap", "production", int(record["version"]), force=True)


def per_call_ms(store: Path, model: str, row: dict[str, Any], n: int = 300) -> float:
    """The model's own cost of one ``predict`` call on one row (median, in this process)."""
    import pandas as pd

    from pipeflow.registry import Registry
    from pipeflow.store.artifacts import ArtifactStore

    loaded, _ = Registry(ArtifactStore(str(store))).load_model(model, "production")
    frame = pd.DataFrame([row])
    times = []
    for _ in range(n):
        t = time.perf_counter()
        loaded.predict(frame)
        times.append(time.perf_counter() - t)
    return sorted(times)[n // 2] * 1000


async def _answer(server: Any, body: bytes) -> Any:
    conn = sibling("bench_serving").RawConnection(server.port, server.path)
    status, data = await conn.post(body)
    await conn.close()
    if status != 200:
        raise RuntimeError(f"{server.name} answered {status}: {data[:500]!r}")
    return json.loads(data)


def _predictions(server: Any, answer: Any) -> list[Any]:
    if isinstance(answer, list):  # bentoml: the array
        return answer
    preds = answer["predictions"]
    return [p["prediction"] if isinstance(p, dict) else p for p in preds]


def _body(kind: str, rows: list[dict[str, Any]]) -> bytes:
    if kind.startswith("mlflow"):
        return json.dumps({"dataframe_records": rows}).encode()
    if kind == "bentoml":
        return json.dumps({"frame": rows}).encode()
    return json.dumps(rows if len(rows) > 1 else rows[0]).encode()


def _peer(label: str, why: list[str], start: Any) -> Any:
    try:
        return start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as err:
        why.append(f"{label}: {str(err).splitlines()[0][:200]}")
        print(f"skipping {label}: {err}", file=sys.stderr)
        return None


def measure(args: Any) -> dict[str, Any]:
    """Run the scenarios; returns the results, the peers' versions and why any were skipped."""
    bs = sibling("bench_serving")
    scale = 0.25 if args.quick else 1.0
    single_n, big_n = max(200, int(2000 * scale)), max(12, int(60 * scale))
    repeats = args.repeats or (1 if args.quick else 2)
    wanted = set(args.peer or ["mlflow-signature", "mlflow-nosignature", "bentoml"])
    mlflow_python, mlflow_version = peer_python("mlflow")
    bento_python, bento_version = peer_python("bentoml", "PIPEFLOW_BENTOML_PYTHON", ".venv-bentoml")
    skipped_why: dict[str, str] = {}
    if not mlflow_python:
        skipped_why["mlflow"] = mlflow_version
    if not bento_python:
        skipped_why["bentoml"] = bento_version
    with tempfile.TemporaryDirectory(prefix="pipeflow-peers-serving-") as name:
        root = Path(name)
        store = bs.build_project(root)
        project = store.parent
        register_cheap(store, project)
        rows = bs.request_rows(project)
        cheap_rows = [{k: v for k, v in r.items() if k != "size_band"} for r in rows]
        cheap_rows = [{k: (0.0 if v != v else v) for k, v in r.items()} for r in cheap_rows]
        big_rows = [rows[i % len(rows)] for i in range(1000)]
        cost = {
            "tumours": per_call_ms(store, "tumours", rows[0]),
            "cheap": per_call_ms(store, "cheap", cheap_rows[0]),
        }
        scenarios = [  # (model, label, rows per request, requests, concurrency)
            ("tumours", "1 row, c=8", 1, single_n, 8),
            ("tumours", "1 row, c=64", 1, single_n, 64),
            ("tumours", "1000 rows, c=4", 1000, big_n, 4),
            ("cheap", "1 row, c=8", 1, single_n, 8),
            ("cheap", "1 row, c=64", 1, single_n, 64),
        ]
        if args.scenario:
            scenarios = [s for s in scenarios if any(w in f"{s[0]} {s[1]}" for w in args.scenario)]
        models = {s[0] for s in scenarios}
        servers: dict[str, list[Any]] = {"tumours": [], "cheap": []}
        results: dict[tuple[str, str, str], list[Any]] = {}
        faults: dict[tuple[str, str, str], list[float]] = {}  # minor page faults per request
        same: dict[str, bool] = {}
        why: list[str] = []
        try:
            for model in sorted(models):
                servers[model].append(start_minimal(project, store, model, "minimal"))
            if mlflow_python and "tumours" in models:
                for signed, label in ((True, "mlflow-signature"), (False, "mlflow-nosignature")):
                    if label not in wanted:
                        continue
                    s = _peer(
                        label,
                        why,
                        lambda signed=signed, label=label: start_mlflow(
                            mlflow_python, log_model(mlflow_python, store, root, signed), root,
                            label,
                        ),
                    )  # fmt: skip
                    if s is not None:
                        servers["tumours"].append(s)
            if bento_python and "tumours" in models and "bentoml" in wanted:
                s = _peer("bentoml", why, lambda: start_bentoml(bento_python, store, root))
                if s is not None:
                    servers["tumours"].append(s)
            for model in sorted(models):
                servers[model].append(start_pipeflow(project, store, model, "pipeflow"))
            if any(s[0] == "tumours" and s[2] > 1 for s in scenarios):
                servers["tumours"].append(
                    start_pipeflow(project, store, "tumours", GLIBC, glibc_malloc=True)
                )
            for model, group in servers.items():
                if not group:
                    continue  # the same predictions for 50 rows first
                sample = (rows if model == "tumours" else cheap_rows)[:50]
                answers = []
                for s in list(group):
                    try:
                        answers.append(
                            _predictions(s, asyncio.run(_answer(s, _body(s.name, sample))))
                        )
                    except RuntimeError as err:
                        if s.name in ("minimal", "pipeflow"):
                            raise
                        why.append(f"{s.name}: {str(err)[:200]}")  # a peer that fails: skipped
                        group.remove(s)
                        s.stop()
                same[model] = all(a == answers[0] for a in answers)

            def bodies(server: Any, model: str, kind: int) -> list[tuple[bytes, int]]:
                source = rows if model == "tumours" else cheap_rows
                if kind == 1:
                    return [(_body(server.name, [r]), 1) for r in source]
                return [(_body(server.name, big_rows), 1000)]

            for model, _label, kind, n, concurrency in scenarios:  # warm-up
                for s in servers[model]:
                    if s.name == GLIBC and kind == 1:
                        continue  # the malloc baseline runs the large requests only
                    warm = max(50, n // 10) if kind == 1 else 4
                    bs.load(s, bodies(s, model, kind), warm, concurrency, "raw")
            for rep in range(repeats):
                for model, label, kind, n, concurrency in scenarios:
                    group = servers[model] if rep % 2 == 0 else servers[model][::-1]
                    for s in group:
                        if s.name == GLIBC and kind == 1:
                            continue
                        cpu, flt = s.cpu_s(), minor_faults(s)
                        r = bs.load(s, bodies(s, model, kind), n, concurrency, "raw")
                        cpu_ms = (s.cpu_s() - cpu) * 1000 / n
                        faults.setdefault((model, label, s.name), []).append(
                            (minor_faults(s) - flt) / n
                        )
                        results.setdefault((model, label, s.name), []).append(r)
                        print(
                            f"  [{rep + 1}/{repeats}] {model:7} {label:15} {s.name:18} "
                            f"{r.rps:8.1f} req/s  p50 {r.pct(0.5):7.1f} ms  "
                            f"p99 {r.pct(0.99):7.1f} ms  cpu {cpu_ms:6.2f} ms/req  "
                            f"errors {r.errors}  load {os.getloadavg()[0]:.1f}",
                            flush=True,
                        )
        finally:
            for group in servers.values():
                for s in group:
                    s.stop()
    versions = {"mlflow": mlflow_version if mlflow_python else None}
    versions["bentoml"] = bento_version if bento_python else None
    for w in why:
        skipped_why[w.split(":", 1)[0]] = w
    return {
        "scenarios": scenarios, "results": results, "same": same, "why": skipped_why,
        "versions": versions, "cost": cost, "faults": faults,
    }  # fmt: skip


def _best(runs: list[Any]) -> dict[str, float]:
    return {
        "rps": max(r.rps for r in runs),
        "p50": min(r.pct(0.5) for r in runs),
        "p99": min(r.pct(0.99) for r in runs),
        "errors": sum(r.errors for r in runs),
    }


def rows_of(out: dict[str, Any]) -> list[Row]:
    """The table: per scenario, pipeflow against the minimal app, both MLflow configurations and
    BentoML, each ratio beside the model's per-call cost and the minimal app's figure."""
    rows: list[Row] = []
    v = out["versions"]
    mlflow = f"MLflow {v['mlflow']}" if v["mlflow"] else "MLflow"
    bento = f"BentoML {v['bentoml']}" if v["bentoml"] else "BentoML"
    who = {
        "minimal": "minimal FastAPI app",
        "mlflow-signature": f"{mlflow} models serve, signature",
        "mlflow-nosignature": f"{mlflow} models serve, no signature",
        "bentoml": f"{bento} serve, adaptive batching",
    }
    for model, label, kind, _, _ in out["scenarios"]:
        cost = out["cost"][model]
        what = "tumours pipeline" if model == "tumours" else "bare LogisticRegression, 30 features"
        name = f"{what} ({cost:.2f} ms/predict), {label}"
        res = {k[2]: _best(r) for k, r in out["results"].items() if k[:2] == (model, label)}
        ours = res.get("pipeflow")
        if ours is None:
            continue
        unit = "rows/s" if kind > 1 else "req/s"

        def fig(b: dict[str, float], kind: int = kind) -> str:
            rate = b["rps"] * kind
            note = f"; {int(b['errors'])} errors" if b["errors"] else ""
            return f"{rate:,.0f} {'rows/s' if kind > 1 else 'req/s'} (p99 {b['p99']:.1f} ms){note}"

        minimal = res.get("minimal")
        mlflows = {k: res[k] for k in ("mlflow-signature", "mlflow-nosignature") if k in res}
        fastest = max(mlflows, key=lambda k: mlflows[k]["rps"]) if mlflows else None
        # targets (issue 20): 1000 rows >= 2x minimal, >= 1.5x MLflow (its fastest), >= 1.3x
        # BentoML; cheap model single rows >= 2x minimal and p99 no worse; the tumours single
        # rows keep issue 6's >= 2x MLflow and p99 no worse
        for peer, base in [("minimal", minimal), *mlflows.items(), ("bentoml", res.get("bentoml"))]:
            if base is None:
                continue
            ratio = ours["rps"] / base["rps"]
            target, ok = "info", None
            if peer == "minimal" and (kind > 1 or model == "cheap"):
                target, ok = ">= 2.0x", ratio >= 2.0
            elif peer == fastest and kind > 1:
                target, ok = ">= 1.5x (the faster MLflow)", ratio >= 1.5
            elif peer == fastest and model == "tumours":
                target, ok = ">= 2.0x (the faster MLflow)", ratio >= 2.0
            elif peer == "bentoml" and kind > 1:
                target, ok = ">= 1.3x", ratio >= 1.3
            if ok is not None:
                ok = ok and not ours["errors"]
            rows.append(
                Row("serving", f"{name}: {unit}", who[peer], fig(base), fig(ours), ratio,
                    target, ok)
            )  # fmt: skip
            if kind == 1 and (peer == "minimal" or peer == fastest):
                p99_ok = ours["p99"] <= base["p99"]
                rows.append(
                    Row("serving", f"{name}: p99", who[peer],
                        f"p99 {base['p99']:.1f} ms (p50 {base['p50']:.1f})",
                        f"p99 {ours['p99']:.1f} ms (p50 {ours['p50']:.1f})",
                        ours["p99"] / base["p99"], "<= 1.0x p99", p99_ok)
                )  # fmt: skip
        if GLIBC in res:
            rows.append(_malloc_row(out, (model, label), name))
        if model == "tumours":
            for peer in ("mlflow-signature", "mlflow-nosignature", "bentoml"):
                if peer not in res:
                    key = "bentoml" if peer == "bentoml" else peer
                    reason = out["why"].get(key) or out["why"].get("mlflow") or "not run"
                    rows.append(skipped("serving", f"{name}: {unit}", who[peer], "-", reason))
    for model, ok in out["same"].items():
        print(
            f"{'PASS' if ok else 'MISS'}  {model}: the same predictions from every server, 50 rows"
        )
    return rows


def _malloc_row(out: dict[str, Any], key: tuple[str, str], name: str) -> Row:
    """pipeflow's server CPU per request against the same server with glibc's malloc defaults
    (the median of the repeats: both ran alternately), with the page faults per request of each.
    Target: at most 0.95x the CPU (the settings saved 8-13% in A/B runs on the 2-core VM)."""

    def per_request(who: str) -> tuple[float, float]:
        runs = out["results"][(*key, who)]
        cpu = sorted(r.server_cpu_s * 1000 / len(r.latencies) for r in runs)
        faults = sorted(out["faults"][(*key, who)])
        return cpu[len(cpu) // 2], faults[len(faults) // 2]

    (ours, our_faults), (base, base_faults) = per_request("pipeflow"), per_request(GLIBC)
    ratio = ours / base
    return Row(
        "serving", f"{name}: server CPU per request", "pipeflow serve, glibc's malloc defaults",
        f"{base:.2f} ms ({base_faults:,.0f} page faults)",
        f"{ours:.2f} ms ({our_faults:,.0f} page faults)", ratio, "<= 0.95x", ratio <= 0.95,
    )  # fmt: skip


def main() -> int:
    p = parser(__doc__)
    p.add_argument(
        "--scenario",
        action="append",
        help='only the scenarios whose "model label" holds this text, e.g. "tumours 1000"',
    )
    p.add_argument(
        "--peer",
        action="append",
        choices=["mlflow-signature", "mlflow-nosignature", "bentoml", "none"],
        help="only these peers besides the minimal app (default: all)",
    )
    p.add_argument("--repeats", type=int, help="repeats (default 2; --quick 1)")
    args = p.parse_args()
    started = time.perf_counter()
    out = measure(args)
    rows = rows_of(out)
    return finish(
        "serving: pipeflow serve vs the minimal app, MLflow and BentoML, same model, best of the "
        "repeats",
        rows,
        args.json,
        time.perf_counter() - started,
    )


if __name__ == "__main__":
    sys.exit(main())
