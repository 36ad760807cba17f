"""The dashboard behind ``pipeflow ui``: a JSON API over what pipeflow records, and a single-page
app (``static/``: plain HTML, JS and CSS, no build step, no CDN) that draws it.

Every source is only read, never written:

- runs and stages, and what stages logged (metrics by step, params) and people noted (tags,
  notes): the metadata database (SQLite or PostgreSQL). It is opened once it exists and is never
  created here, so pointing the dashboard at a store with no run yet leaves the store untouched;
- models, versions and alias history: the registry in the artifact store;
- live traffic: the serving audit log (``<store>/audit`` or ``audit_dir``), predictions and events;
  on a remote store, the union of what every replica shipped to ``<store>/journal/audit`` and
  this machine's spool (:mod:`pipeflow.store.shipping`), each shipped segment downloaded once;
- drift, accuracy and alerts: ``<store>/monitoring`` (:mod:`pipeflow.monitoring.history`), on
  any store.

Why traffic is aggregated incrementally: see :mod:`pipeflow.ui.traffic`.

Who may read it: without tokens, anyone who reaches the port (``pipeflow ui`` binds loopback
unless told otherwise, and refuses another address without tokens: :mod:`pipeflow.cli.ui`). With
tokens (:class:`pipeflow.auth.Tokens`, the same file and scheme as ``pipeflow serve``), every
route but the page itself and its static files needs ``Authorization: Bearer TOKEN`` with the
``ui`` scope (or ``*``), else 401/403 with ``{"error": ...}`` and none of the data. The check is a
dependency of the whole app, so a route added later is guarded without being named; the page
(``/``, a plain Starlette route) and ``/static`` (a mount) are outside it. They hold no data:
the page asks for the token, keeps it in the tab's ``sessionStorage`` (never in a URL, a cookie
or a log) and sends it with every ``fetch``, the way ``/docs`` of ``pipeflow serve`` does. No
cookie means no cross-site request can carry the token.

Why nothing from the data can run in the page: values reach the browser only as JSON, the app
puts them in the DOM with ``textContent`` and ``setAttribute``, and every response carries a
Content-Security-Policy that forbids inline script and any other origin.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from pipeflow.auth import Tokens
from pipeflow.errors import (
    BadRequest,
    InvalidName,
    PipeflowError,
    RegistryError,
    StoreError,
    UsageError,
)
from pipeflow.monitoring import history as monitoring
from pipeflow.registry import Registry, verdicts
from pipeflow.store import journal as audit
from pipeflow.store.artifacts import ArtifactStore
from pipeflow.store.shipping import open_journal
from pipeflow.ui.kpis import kpi_latest, kpi_point
from pipeflow.ui.traffic import TrafficIndex, finite_number

try:  # orjson (a dependency of the server) parses the audit lines several times faster
    from orjson import loads as _loads
except ImportError:  # pragma: no cover
    _loads = json.loads

STATIC = Path(__file__).with_name("static")
HEADLINE_METRICS = ("accuracy", "r2", "f1_macro", "rmse")
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
# what a version record carries that the dashboard shows (the rest, e.g. the training
# reference and the data summary, is large and belongs to the model card)
VERSION_FIELDS = (
    "name",
    "version",
    "created",
    "user",
    "host",
    "estimator",
    "task",
    "target",
    "description",
    "intended_use",
    "run",
    "data",
    "gates",
    "params",
)
MAX_TRAFFIC_INDEXES = 4  # bucket widths kept warm at once
SCOPE = "ui"  # the scope a token needs to read the dashboard (see pipeflow.auth)


def create_app(
    store: ArtifactStore | str,
    db_path: str | os.PathLike[str] | None,
    audit_dir: str | os.PathLike[str] | None = None,
    *,
    allowed_hosts: list[str] | None = None,
    tokens: Tokens | None = None,
) -> FastAPI:
    """The dashboard for ``store`` (an open store, with its storage options, or a URL) and the
    metadata database at ``db_path`` (which need not exist yet). ``allowed_hosts`` limits the
    Host header (DNS rebinding); with ``tokens``, every route but the page and its static files
    needs one with the ``ui`` scope."""
    sources = Sources(store, db_path, audit_dir)
    tokens = tokens if tokens is not None else Tokens()

    async def authorized(request: Request) -> str:
        return tokens.check(request.headers.get("authorization"), SCOPE)

    app = FastAPI(
        title="pipeflow ui",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        default_response_class=FiniteJSON,
        dependencies=[Depends(authorized)],  # every route declared with @app.get below
    )
    app.state.sources = sources
    app.state.tokens = tokens
    if allowed_hosts:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        if request.url.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.exception_handler(PipeflowError)
    async def pipeflow_error(request: Request, err: PipeflowError) -> Response:
        if isinstance(err, BadRequest):  # the token check: 401 or 403
            headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
            return FiniteJSON({"error": str(err)}, status_code=err.status, headers=headers)
        status = 400 if isinstance(err, InvalidName | UsageError) else 500
        if status == 500 and isinstance(err, RegistryError):
            status = 404
        return FiniteJSON({"error": str(err)}, status_code=status)

    async def index(request: Request) -> Response:  # no data here: open, as the static files
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.router.add_route("/", index, methods=["GET", "HEAD"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/summary")
    def summary() -> dict[str, Any]:
        return sources.summary()

    @app.get("/api/runs")
    def runs(
        limit: int = Query(50, ge=1, le=1000),
        pipeline: str | None = None,
        where: str | None = Query(None, max_length=2000),
    ) -> dict[str, Any]:
        return {"runs": sources.runs(limit, pipeline, where or None), "db": sources.db_label}

    @app.get("/api/metrics")
    def metrics(
        name: str | None = Query(None, max_length=250),
        pipeline: str | None = None,
        limit: int = Query(100, ge=1, le=1000),
    ) -> dict[str, Any]:
        return sources.metric_across_runs(name or None, pipeline or None, limit)

    @app.get("/api/runs/{run_id}", response_model=None)
    def run(run_id: str) -> Response | dict[str, Any]:
        found = sources.run(run_id)
        if found is None:
            return FiniteJSON({"error": f"no run '{run_id}' in {sources.db_label}"}, 404)
        return found

    @app.get("/api/models")
    def models() -> dict[str, Any]:
        return {"models": sources.models(), "store": sources.store_url}

    @app.get("/api/models/{name}")
    def model(name: str) -> dict[str, Any]:
        return sources.model(name)

    @app.get("/api/models/{name}/lineage/{version}")
    def lineage(name: str, version: int) -> dict[str, Any]:
        return sources.lineage(name, version)

    @app.get("/api/traffic")
    def traffic(
        model: str | None = None,
        bucket_s: int = Query(60, ge=1, le=86_400),
        buckets: int = Query(120, ge=1, le=2_000),
    ) -> dict[str, Any]:
        return sources.traffic(model or None, bucket_s, buckets)

    @app.get("/api/drift")
    def drift(model: str | None = None, limit: int = Query(200, ge=1, le=5_000)) -> dict[str, Any]:
        return sources.drift(model or None, limit)

    @app.get("/api/alerts")
    def alerts(model: str | None = None, limit: int = Query(200, ge=1, le=5_000)) -> dict[str, Any]:
        return sources.alerts(model or None, limit)

    return app


class FiniteJSON(JSONResponse):
    """JSON with NaN and infinities as null (a metric may be NaN; JSON has no such number)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(
            _finite(content), default=str, allow_nan=False, separators=(",", ":")
        ).encode()


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_field(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


# ---------------------------------------------------------------------------------- sources


class Sources:
    """Where each page's data comes from; every method returns plain JSON-ready values."""

    def __init__(
        self,
        store: ArtifactStore | str,
        db_path: str | os.PathLike[str] | None,
        audit_dir: str | os.PathLike[str] | None,
    ):
        store = ArtifactStore(store) if isinstance(store, str) else store
        self.store_url = store.url
        self.registry = Registry(store)
        self.store = store
        self.db_path = str(db_path) if db_path else None  # a SQLite file or a PostgreSQL URL
        self.journal = open_journal(store, "audit", audit_dir, remember=True)
        self.audit_dir = self.journal.describe()
        self._db: Any = None
        self._db_lock = threading.Lock()
        self._indexes: OrderedDict[int, TrafficIndex] = OrderedDict()
        self._indexes_lock = threading.Lock()

    # -- metadata database ------------------------------------------------------------------
    @property
    def db_label(self) -> str | None:
        from pipeflow.store.metadata import redact

        return redact(self.db_path) if self.db_path else None

    def _query(self, fn: Any) -> Any:
        """``fn(db)`` under a lock, or None while there is no database (no run recorded yet)."""
        with self._db_lock:
            if self._db is None:
                from pipeflow.store.database import open_metadata
                from pipeflow.store.metadata import exists

                if self.db_path is None or not exists(self.db_path):
                    return None

                self._db = open_metadata(self.db_path)
            return fn(self._db)

    def runs(
        self, limit: int, pipeline: str | None = None, where: str | None = None
    ) -> list[dict[str, Any]]:
        from pipeflow.store.search import parse_where

        conditions = parse_where(where) if where is not None else []

        def read(db: Any) -> list[dict[str, Any]]:
            rows = [dict(r) for r in db.runs(limit=limit, pipeline=pipeline, where=conditions)]
            tags = db.tags_of([r["id"] for r in rows]) if rows else {}
            return [{**r, "tags": tags.get(r["id"], {})} for r in rows]

        return [_run_row(r) for r in self._query(read) or []]

    def metric_across_runs(
        self, name: str | None, pipeline: str | None, limit: int
    ) -> dict[str, Any]:
        """The metric names logged, and metric ``name`` (default: the first) in each of the
        latest ``limit`` runs that logged it, oldest first: a point per run and stage."""

        def read(db: Any) -> dict[str, Any]:
            names = db.metric_names(pipeline)
            chosen = name if name is not None else (names[0] if names else None)
            rows = (
                db.metric_across_runs(chosen, pipeline=pipeline, limit=limit)
                if chosen is not None
                else []
            )
            return {"names": names, "name": chosen, "points": [dict(r) for r in rows]}

        return self._query(read) or {"names": [], "name": name, "points": []}

    def run(self, run_id: str) -> dict[str, Any] | None:
        def read(db: Any) -> dict[str, Any] | None:
            try:
                found = db.find_run(run_id)
            except StoreError as err:  # an ambiguous prefix: the request's fault
                raise UsageError(str(err)) from None
            if found is None:
                return None
            rid = found["id"]
            return {
                **_run_row(dict(found)),
                "params": db.params(rid),
                "stages": [_stage_row(dict(s)) for s in db.stage_runs(rid)],
                "outputs": [
                    {k: o[k] for k in ("stage", "port", "digest", "codec", "kind", "size")}
                    for o in db.outputs(rid)
                ],
                "lineage": [dict(e) for e in db.lineage(rid)],
                "tags": db.tags(rid),
                "metrics": [dict(m) for m in db.metrics(rid)],
                "logged_params": [dict(p) for p in db.logged_params(rid)],
            }

        return self._query(read)

    # -- registry ---------------------------------------------------------------------------
    def models(self) -> list[dict[str, Any]]:
        out = []
        for name in self.registry.models():
            versions = self.registry.versions(name)
            if not versions:
                continue
            latest = versions[-1]
            metrics = _scalar_metrics(latest.get("metrics"))
            headline = next(
                (
                    (m, metrics[m])
                    for m in HEADLINE_METRICS
                    if finite_number(metrics.get(m)) is not None
                ),
                None,
            )
            out.append(
                {
                    "name": name,
                    "versions": len(versions),
                    "latest": latest["version"],
                    "latest_created": latest.get("created"),
                    "aliases": self.registry.aliases(name),
                    "headline": None
                    if headline is None
                    else {"metric": headline[0], "value": headline[1]},
                }
            )
        return out

    def model(self, name: str) -> dict[str, Any]:
        versions = self.registry.versions(name)
        if not versions:
            raise RegistryError(self.registry._unknown_model(name))
        aliases = self.registry.aliases(name)
        held: dict[int, list[str]] = {}
        for alias, version in sorted(aliases.items()):
            held.setdefault(version, []).append(alias)
        history = self.registry.history(name)
        verdict = verdicts(versions, history, self.registry.refusals(name))
        return {
            "name": name,
            "aliases": aliases,
            "versions": [
                {
                    **{k: v.get(k) for k in VERSION_FIELDS},
                    # as last checked (champion included), and "not promoted: ..." if refused
                    "gates": verdict[v["version"]]["gates"],
                    "status": verdict[v["version"]]["status"],
                    "model_digest": (v.get("model") or {}).get("digest"),
                    "metrics": _scalar_metrics(v.get("metrics")),
                    "aliases": held.get(v["version"], []),
                }
                for v in versions
            ],
            "history": history,
        }

    def lineage(self, name: str, version: int) -> dict[str, Any]:
        from pipeflow.registry.lineage import model_lineage

        record = self.registry.version(name, version)
        found = self._query(lambda db: model_lineage(db, self.registry, record))
        if found is None:  # no metadata database: what the version record alone holds
            found = model_lineage(None, self.registry, record)
        return found

    # -- traffic ----------------------------------------------------------------------------
    def _index(self, bucket_s: int) -> TrafficIndex:
        with self._indexes_lock:
            index = self._indexes.pop(bucket_s, None) or TrafficIndex(self.journal, bucket_s)
            self._indexes[bucket_s] = index
            while len(self._indexes) > MAX_TRAFFIC_INDEXES:
                self._indexes.popitem(last=False)
            return index

    def traffic(self, model: str | None, bucket_s: int, buckets: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": model,
            "bucket_s": bucket_s,
            "audit_dir": self.audit_dir,
            "models": [],
            "series": [],
            "versions": [],
            "events": [],
        }
        index = self._index(bucket_s)
        out.update(index.query(model, buckets))
        events = [
            e
            for e in audit.read(self.journal, "events")
            if model is None or e.get("model") == model
        ]
        events.sort(key=lambda e: finite_number(e.get("time")) or 0.0)
        out["events"] = events[-200:]
        return out

    # -- monitoring -------------------------------------------------------------------------
    def drift(self, model: str | None, limit: int) -> dict[str, Any]:
        models = monitoring.monitored_models(self.store)
        model = model or (models[0] if models else None)
        reports = monitoring.load_reports(self.store, model, limit=limit) if model else []
        points = [_report_point(r) for r in reports]
        latest = None
        if reports:
            last = reports[-1]
            latest = {
                **points[-1],
                "window": last.get("window"),
                "features": sorted(
                    (_feature(name, f) for name, f in (last.get("features") or {}).items()),
                    key=lambda f: -(f["psi"] if f["psi"] is not None else -1.0),
                ),
                "prediction": last.get("prediction"),
                "alerts": last.get("alerts") or [],
                **kpi_latest(last),
            }
        return {"model": model, "models": models, "reports": points, "latest": latest}

    def alerts(self, model: str | None, limit: int) -> dict[str, Any]:
        found = monitoring.load_alerts(self.store, model=model)
        return {"alerts": list(reversed(found))[:limit], "total": len(found)}

    # -- summary ----------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        def read(db: Any) -> dict[str, Any]:
            (count,) = db.query("SELECT COUNT(*) FROM runs")[0]
            latest = db.runs(limit=1)
            return {"count": count, "latest": _run_row(dict(latest[0])) if latest else None}

        traffic = self._index(60).totals()
        alerts = self.alerts(None, 1)
        return {
            "store": self.store_url,
            "db": self.db_label,
            "audit_dir": self.audit_dir,
            "runs": self._query(read) or {"count": 0, "latest": None},
            "models": self.models(),
            "traffic": traffic,
            "monitored": monitoring.monitored_models(self.store),
            "alerts": {"total": alerts["total"], "latest": (alerts["alerts"] or [None])[0]},
        }


def _run_row(r: dict[str, Any]) -> dict[str, Any]:
    started, ended = finite_number(r.get("started")), finite_number(r.get("ended"))
    return {
        **r,
        "overrides": _json_field(r.get("overrides")) or [],
        "duration_s": ended - started if started is not None and ended is not None else None,
    }


def _stage_row(s: dict[str, Any]) -> dict[str, Any]:
    started, ended = finite_number(s.get("started")), finite_number(s.get("ended"))
    return {
        "stage": s["stage"],
        "type": s["type"],
        "state": s["state"],
        "reason": s.get("reason"),
        "cache_hit": bool(s.get("cache_hit")),
        "started": started,
        "ended": ended,
        "duration_s": ended - started if started is not None and ended is not None else None,
        "attempts": s.get("attempts"),
        "worker": s.get("worker"),
        "error": s.get("error"),
        "traceback": s.get("traceback"),
        "cache_key": s.get("cache_key"),
        "config": _json_field(s.get("config")),
        "input_digests": _json_field(s.get("input_digests")) or {},
    }


def _scalar_metrics(metrics: Any) -> dict[str, float]:
    """The top-level numbers of a metrics dict (curves and per-class tables are left out; NaN
    stays, and is sent as null)."""
    if not isinstance(metrics, dict):
        return {}
    return {k: v for k, v in metrics.items() if _is_number(v)}


def _report_point(r: dict[str, Any]) -> dict[str, Any]:
    """One report as a point of the drift time series (see the format in monitoring.history)."""
    window = r.get("window") or {}
    accuracy = r.get("accuracy") or {}
    latency = r.get("latency_ms") or {}
    return {
        "time": finite_number(window.get("end")) or finite_number(r.get("created")),
        "version": r.get("version"),
        "alias": r.get("alias"),
        "rows": r.get("rows"),
        "drift_share": finite_number(r.get("drift_share")),
        "drifted": bool(r.get("drifted")),
        "accuracy": finite_number(accuracy.get("accuracy")),
        "labelled": accuracy.get("labelled"),
        "prediction_psi": finite_number((r.get("prediction") or {}).get("psi")),
        "p95_ms": finite_number(latency.get("p95")),
        "flagged_rate": finite_number(r.get("flagged_rate")),
        **kpi_point(r),  # business and bias, where the version declared them at promotion
        "features": {
            name: _feature(name, f)["psi"] for name, f in (r.get("features") or {}).items()
        },
    }


def _feature(name: str, f: Any) -> dict[str, Any]:
    """A feature's drift score: its PSI, or for a text feature the PSI of its lengths."""
    f = f if isinstance(f, dict) else {}
    metric = "psi" if "psi" in f else "length_psi" if "length_psi" in f else None
    return {
        "name": name,
        "role": f.get("role"),
        "metric": metric,
        "psi": finite_number(f.get(metric)) if metric else None,
        "drifted": bool(f.get("drifted")),
    }
