"""The HTTP server of a registered model (FastAPI on uvicorn).

Request path, and why it is shaped this way:

1. The body is read with a size limit and parsed with :mod:`json` (malformed JSON -> 400, too
   large -> 413, wrong content type -> 415), then checked against the model's signature
   (:mod:`pipeflow.registry.signature`; -> 422 naming row and field). Bad input never reaches the
   model and never answers 500.
2. Valid rows join a **micro-batch**: concurrent requests queue up while the model is busy and are
   scored together in one ``predict`` call on a dedicated thread. There is no artificial delay: a
   lone request is scored at once; under load, the batch is whatever arrived meanwhile. One
   DataFrame and one ``predict`` per batch instead of per request is where the throughput comes from.
3. Before any answer leaves, the batch's audit records (id, time, model and version, inputs,
   outputs, flags, latency, caller) are appended in one ``write()`` (:mod:`pipeflow.store.journal`),
   so every acknowledged prediction is in the audit trail, even if the process is killed.

Routes: native ``/v1/models/{name}/predict`` and ``/feedback``; the Open Inference Protocol (KServe
v2) under ``/v2``; MLflow's ``/invocations`` (``dataframe_split``, ``dataframe_records``,
``instances``, ``inputs``); ``/health``, ``/ready``, ``/metrics`` (Prometheus). Optional bearer
tokens with scopes (``predict``, ``feedback``, ``metrics``; ``*`` = all), compared in constant time.

The alias is re-read every ``reload_interval_s``: when it moves (promote, rollback), the new version
is loaded off the request path and swapped in; requests already queued finish on the old one.
A canary version takes ``weight`` of the traffic; when its error rate, p95 latency or live accuracy
(from feedback) breaches the limits, it is withdrawn, the event is audited and an alert logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from pipeflow.serving.batcher import Pending
from pipeflow.serving.config import ServeConfig
from pipeflow.serving.errors import AuditUnavailable, BadRequest
from pipeflow.serving.handle import Handle
from pipeflow.serving.protocols.mlflow import invocations_body, rows_from_mlflow
from pipeflow.serving.protocols.native import (
    FEEDBACK_SCHEMA,
    feedback_items,
    predict_body,
    rows_from_native,
)
from pipeflow.serving.protocols.v2 import infer_body, metadata_body, rows_from_v2
from pipeflow.serving.state import Server
from pipeflow.store.journal import dumps, loads

log = logging.getLogger("pipeflow.serve")
OPEN_PATHS = (
    "/health",
    "/ready",
    "/v2/health/live",
    "/v2/health/ready",
    "/ping",
    "/docs",
    "/openapi.json",
)


# ------------------------------------------------------------------------------ payloads


def _json_int(text: str) -> int | float:
    """Integers as orjson reads them: beyond 64 bits they become floats (so a 400-digit number
    is ``inf``, refused by the signature as not finite, not an integer no float can hold)."""
    if len(text) < 19:
        return int(text)
    value = float(text)
    if -(2**63) <= value < 2**64:
        number = int(text)
        if -(2**63) <= number < 2**64:
            return number
    return value


# ------------------------------------------------------------------------------------ the app


def create_app(config: ServeConfig) -> Any:
    """The FastAPI application serving ``config.model`` (loads the model now)."""
    from contextlib import asynccontextmanager

    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from starlette.exceptions import HTTPException as StarletteHTTPException

    server = Server(config)
    primary = server.primary
    row_schema = primary.signature.json_schema()

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        watcher = asyncio.get_running_loop().create_task(server.watch_alias())
        try:
            yield
        finally:
            watcher.cancel()
            server.audit.close()

    app = FastAPI(
        title=f"pipeflow: {config.model}",
        version=str(primary.version),
        description=f"Predictions from the registered model {config.model}@{config.which or primary.version}.",
        lifespan=lifespan,
    )
    app.state.server = server

    def reply(value: Any, status: int = 200) -> Response:
        return Response(dumps(value), status_code=status, media_type="application/json")

    def failure(err: BadRequest) -> Response:
        server.metrics.refused(err.kind, config.model, str(server.primary.version), err.status)
        body: dict[str, Any] = {"type": err.kind, "message": str(err)}
        if err.fields:
            body["fields"] = err.fields
        response = reply({"error": body}, err.status)
        if err.status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return failure(BadRequest(exc.status_code, kind, str(exc.detail)))

    async def body_json(request: Request, *, predict: bool = True) -> Any:
        """The parsed body. A predict request counts as *arriving* while its body is read and
        parsed: the batchers wait briefly for arriving requests (see :meth:`Batcher.collect`).
        Between the end of this and joining a batch queue nothing awaits, so the count is exact.
        """
        if not predict:
            return await _body_json(request)
        server.arriving += 1
        try:
            return await _body_json(request)
        finally:
            server.arriving -= 1

    async def _body_json(request: Request) -> Any:
        ctype = (
            request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        )
        if ctype != "application/json" and not ctype.endswith("+json"):
            raise BadRequest(
                415,
                "unsupported_media_type",
                f"expected Content-Type application/json, got {ctype!r}",
            )
        length = request.headers.get("content-length")
        limit = config.max_body_bytes
        if length is not None and length.isdigit() and int(length) > limit:
            raise BadRequest(
                413, "too_large", f"the body is {int(length)} bytes; the limit is {limit}"
            )
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BadRequest(413, "too_large", f"the body is over the limit of {limit} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
        try:
            return loads(body)
        except ValueError:
            pass  # orjson refuses NaN/Infinity: the standard parser reads them, so the
            # signature check can name the field, and words the error if the JSON is broken
        try:
            value = json.loads(body, parse_int=_json_int)
        except RecursionError:
            raise BadRequest(400, "malformed_json", "the JSON is nested too deeply") from None
        except (ValueError, UnicodeDecodeError) as err:
            raise BadRequest(400, "malformed_json", f"malformed JSON: {err}") from None
        try:  # what orjson refused may also be what it cannot write (audit log, error replies)
            dumps(value)
        except TypeError as err:  # a lone surrogate escape ("\ud800"), or nesting orjson refuses
            raise BadRequest(400, "malformed_json", f"unusable JSON: {err}") from None
        return value

    def model_for(name: str) -> None:
        if name != config.model:
            raise BadRequest(
                404,
                "not_found",
                f"no model named '{name}' here (this server serves '{config.model}')",
            )

    def caller_for(name: str | None, request: Request, scope: str) -> str:
        """The caller of a request to the model ``name`` (None: any route) with ``scope``; 404
        for another model, 401/403 without the right token."""
        if name is not None:
            model_for(name)
        return server.authorize(request.headers.get("authorization"), scope)

    async def predict_rows(
        rows: list[Any], caller: str, route: str, started: float
    ) -> tuple[Handle, list[dict[str, Any]]]:
        if not rows:
            raise BadRequest(422, "invalid_request", "no rows to predict")
        if len(rows) > config.max_rows:
            raise BadRequest(
                413, "too_large", f"{len(rows)} rows in one request; the limit is {config.max_rows}"
            )
        reference = server.primary
        problems, flags, data = reference.signature.check_columns(
            rows, reject_unusual=config.reject_unusual
        )
        if problems:
            first = problems[0]
            where = f"row {first['row']}" + (
                f", field '{first['field']}'" if first["field"] else ""
            )
            raise BadRequest(
                422,
                "validation_error",
                f"{len(problems)} problem(s); first: {where}: expected {first['expected']}, got {first['got']}",
                problems[:100],
            )
        handle = server.rollout.pick()
        columns = reference.signature.names
        item = Pending(
            rows,
            columns,
            data,
            flags,
            caller,
            route,
            started,
            asyncio.get_running_loop().create_future(),
        )
        try:
            assert handle.batcher is not None
            results = await handle.batcher.submit(item)
        except AuditUnavailable as err:
            log.error("audit log unavailable, refusing to answer: %s", err)
            raise BadRequest(
                503, "audit_unavailable", "the audit log cannot be written; try again later"
            ) from None
        except Exception as err:
            server.rollout.observe(handle, time.perf_counter() - started, True)
            log.error("%s failed on a valid request: %s: %s", handle.label, type(err).__name__, err)
            with contextlib.suppress(OSError):  # monitoring's error rate reads these
                server.events.append(
                    [
                        {
                            "id": server.new_id(),
                            "time": time.time(),
                            "event": "model_error",
                            "model": handle.name,
                            "version": handle.version,
                            "role": handle.role,
                            "rows": len(rows),
                            "error": f"{type(err).__name__}: {err}"[:500],
                        }
                    ]
                )
            raise BadRequest(
                500, "model_error", f"the model {handle.label} failed: {type(err).__name__}"
            ) from None
        elapsed = time.perf_counter() - started
        server.rollout.observe(handle, elapsed, False)
        server.metrics.answered(
            handle.name, str(handle.version), route, elapsed, len(rows), sum(1 for f in flags if f)
        )
        return handle, results

    predict_schema = {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"oneOf": [row_schema, {"type": "array", "items": row_schema}]}
                }
            },
        }
    }

    @app.get("/health", tags=["probes"])
    async def health() -> Response:
        return reply({"status": "ok"})

    @app.get("/ready", tags=["probes"])
    async def ready() -> Response:
        return reply({"status": "ready", "model": config.model, "version": server.primary.version})

    @app.get("/ping", tags=["mlflow"])
    async def ping() -> Response:
        return reply({"status": "ok"})

    @app.get("/metrics", tags=["probes"])
    async def metrics(request: Request) -> Response:
        try:
            caller_for(None, request, "metrics")
        except BadRequest as err:
            return failure(err)
        return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models/{name}", tags=["native"])
    async def describe(name: str, request: Request) -> Response:
        try:
            caller_for(name, request, "predict")
        except BadRequest as err:
            return failure(err)
        h = server.primary
        return reply(
            {
                "name": h.name,
                "version": h.version,
                "alias": config.which,
                "signature": h.record.get("signature"),
                "canary": None
                if server.canary is None
                else {"version": server.canary.version, "weight": server.rollout.weight},
            }
        )

    @app.post("/v1/models/{name}/predict", tags=["native"], openapi_extra=predict_schema)
    async def predict(name: str, request: Request) -> Response:
        started = time.perf_counter()
        try:
            caller = caller_for(name, request, "predict")
            payload = await body_json(request)
            rows = rows_from_native(payload)
            handle, results = await predict_rows(rows, caller, "v1", started)
        except BadRequest as err:
            return failure(err)
        return reply(predict_body(payload, handle, results))

    feedback_schema = {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            {"$ref": "#/components/schemas/Feedback"},
                            {"type": "array", "items": {"$ref": "#/components/schemas/Feedback"}},
                        ]
                    }
                }
            },
        }
    }

    @app.post("/v1/models/{name}/feedback", tags=["native"], openapi_extra=feedback_schema)
    async def feedback(name: str, request: Request) -> Response:
        try:
            caller = caller_for(name, request, "feedback")
            payload = await body_json(request, predict=False)
            items = feedback_items(payload)
            recorded = server.record_feedback(items, caller)
        except BadRequest as err:
            return failure(err)
        return reply({"recorded": recorded})

    @app.post("/invocations", tags=["mlflow"])
    async def invocations(request: Request) -> Response:
        started = time.perf_counter()
        try:
            caller = caller_for(None, request, "predict")
            payload = await body_json(request)
            rows = rows_from_mlflow(payload, server.primary.signature.names)
            handle, results = await predict_rows(rows, caller, "mlflow", started)
        except BadRequest as err:
            return failure(err)
        return reply(invocations_body(payload, handle, results))

    @app.get("/v2/health/live", tags=["open inference protocol"])
    async def v2_live() -> Response:
        return reply({"live": True})

    @app.get("/v2/health/ready", tags=["open inference protocol"])
    async def v2_ready() -> Response:
        return reply({"ready": True})

    @app.get("/v2", tags=["open inference protocol"])
    async def v2_server() -> Response:
        from pipeflow import __version__

        return reply({"name": "pipeflow", "version": __version__, "extensions": []})

    @app.get("/v2/models/{name}", tags=["open inference protocol"])
    async def v2_metadata(name: str, request: Request) -> Response:
        try:
            caller_for(name, request, "predict")
        except BadRequest as err:
            return failure(err)
        return reply(metadata_body(server.primary))

    @app.get("/v2/models/{name}/ready", tags=["open inference protocol"])
    async def v2_model_ready(name: str) -> Response:
        try:
            model_for(name)
        except BadRequest as err:
            return failure(err)
        return reply({"name": name, "ready": True})

    @app.post("/v2/models/{name}/infer", tags=["open inference protocol"])
    async def v2_infer(name: str, request: Request) -> Response:
        started = time.perf_counter()
        try:
            caller = caller_for(name, request, "predict")
            payload = await body_json(request)
            rows = rows_from_v2(payload, server.primary.signature.names)
            handle, results = await predict_rows(rows, caller, "v2", started)
        except BadRequest as err:
            return failure(err)
        return reply(infer_body(payload, handle, results))

    _add_feedback_schema(app)
    return app


def _add_feedback_schema(app: Any) -> None:
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        schema.setdefault("components", {}).setdefault("schemas", {})["Feedback"] = FEEDBACK_SCHEMA
        app.openapi_schema = schema
        return schema

    app.openapi = openapi


def app_from_env() -> Any:
    """uvicorn factory for ``--workers N``: the config comes from ``$PIPEFLOW_SERVE_CONFIG``."""
    import gc

    app = create_app(ServeConfig.from_json(os.environ["PIPEFLOW_SERVE_CONFIG"]))
    gc.collect()
    gc.freeze()  # see pipeflow.cli_serve._freeze_heap
    return app
