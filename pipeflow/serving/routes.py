"""The HTTP routes, and what every request goes through on its way to the model.

Routes: native ``/v1/models/{name}`` (describe), ``/predict`` and ``/feedback``; the Open
Inference Protocol (KServe v2) under ``/v2``; MLflow's ``/invocations`` and ``/ping``;
``/health``, ``/ready``, ``/metrics`` (Prometheus). The readiness routes answer 503 while the
replica drains before stopping (:mod:`pipeflow.serving.drain`); liveness never does. What a body means, and what an answer looks
like, is each protocol's own (:mod:`pipeflow.serving.protocols`); everything else is shared and
lives here, once:

1. The caller: a request for another model is 404, and without the route's scope 401/403
   (:func:`caller_for`; the tokens are :meth:`pipeflow.serving.state.Server.authorize`'s).
2. The body is read with a size limit (:func:`read_bytes`; too large -> 413) and parsed
   (:func:`pipeflow.serving.jsonbody.parse_json`; malformed -> 400, a key twice in one object
   -> 422 naming it; a native array of clean rows is decoded straight into the model's columns
   instead, :func:`read_native`, :mod:`pipeflow.serving.columnar`); :func:`read_body` takes JSON
   only (other content types -> 415), the MLflow and Open Inference Protocol routes also their
   protocol's other bodies (:mod:`pipeflow.serving.interop`: ``text/csv``; binary tensor data).
   The protocol's decoder turns the body into rows, which are
   checked against the model's signature (:mod:`pipeflow.registry.signature`; -> 422 naming row
   and field). The native predict route also takes tables (Arrow IPC, Parquet:
   :mod:`pipeflow.serving.tables`), checked column by column. Bad input never reaches the model
   and never answers 500.
3. Valid rows join the micro-batch of the version the path names (:func:`served_version`), else
   of the version the rollout picks (by the ``--route-by`` key, :mod:`pipeflow.serving.rollout`;
   :func:`predict_rows`, :mod:`pipeflow.serving.batcher`), which answers once the rows are
   audited; the answered request is then offered to the shadow, if any
   (:mod:`pipeflow.serving.shadow`), which scores it off the answer path. A native request
   that asks for explanations (``?explain=true``, :mod:`pipeflow.serving.protocols.native`) is
   scored alone instead, off the micro-batch (:meth:`~pipeflow.serving.batcher.Batcher.explain`).
4. Every refusal is a :class:`~pipeflow.errors.BadRequest` (FastAPI's own 404 and 405
   become one in :mod:`pipeflow.serving.app`), answered in one JSON error shape and counted in
   the metrics (:func:`failure`); under ``/v2`` in the Open Inference Protocol's own
   ``{"error": "<message>"}`` (:func:`v2_failure`), which its clients read.

A prediction route is :func:`answer` with its protocol's reader, decoder and encoder; MLflow's
and the Open Inference Protocol's routes, with their readers and answers, are in
:mod:`pipeflow.serving.interop`. The route functions are plain module functions that find the
server in ``request.app.state.server``; :func:`register` adds them to an app in a fixed order (the order of the OpenAPI document), with
the request schemas that depend on the served model's signature.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from pipeflow.errors import AuditUnavailable, BadRequest, ExplainUnavailable
from pipeflow.serving import columnar, tables
from pipeflow.serving.batcher import Pending
from pipeflow.serving.jsonbody import parse_json
from pipeflow.serving.protocols import native
from pipeflow.store.journal import dumps

if TYPE_CHECKING:
    from pipeflow.serving.handle import Handle
    from pipeflow.serving.state import Server

log = logging.getLogger("pipeflow.serve")


# ----------------------------------------------------------------------------------- answers


def reply(value: Any, status: int = 200) -> Response:
    return Response(dumps(value), status_code=status, media_type="application/json")


def failure(server: Server, err: BadRequest) -> Response:
    """The JSON error answer of a refused request, counted in the metrics."""
    body: dict[str, Any] = {"type": err.kind, "message": str(err)}
    if err.fields:
        body["fields"] = err.fields
    return _refused(server, err, {"error": body})


def v2_failure(server: Server, err: BadRequest) -> Response:
    """The error answer on the Open Inference Protocol's routes: ``{"error": "<message>"}``, the
    protocol's error object (its clients format ``error`` as a string), counted as any other."""
    return _refused(server, err, {"error": str(err)})


def _refused(server: Server, err: BadRequest, body: dict[str, Any]) -> Response:
    server.metrics.refused(err.kind, server.config.model, str(server.primary.version), err.status)
    response = reply(body, err.status)
    if err.status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


# ------------------------------------------------------------------------------- the request


async def read_body(server: Server, request: Request, *, predict: bool = True) -> Any:
    """The parsed JSON body (another content type: 415); see :func:`read_bytes`."""
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if not is_json(ctype):
        raise BadRequest(
            415,
            "unsupported_media_type",
            f"expected Content-Type application/json, got {ctype!r}",
        )
    body = await read_bytes(server, request, predict=predict)
    request.state.json = body  # the text the value was parsed from (see answer)
    return parse_json(body)


async def read_native(server: Server, request: Request) -> Any:
    """A native predict body: :func:`read_body`'s value, or, for an array of clean rows, the
    rows decoded straight into the model's columns (:mod:`pipeflow.serving.columnar`). Not
    when the rows are read for more than the model: with an ``explain`` query parameter, or a
    ``--route-by field:`` key."""
    if "explain" in request.query_params or server.rollout.route_kind == "field":
        return await read_body(server, request)
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if not is_json(ctype):
        return await read_body(server, request)  # words the 415
    body = await read_bytes(server, request)
    request.state.json = body
    config = server.config
    decoded = columnar.decode(
        body,
        server.primary.signature,
        max_rows=config.max_rows,
        reject_unusual=config.reject_unusual,
    )
    return decoded if decoded is not None else parse_json(body)


def is_json(ctype: str) -> bool:
    return ctype == "application/json" or ctype.endswith("+json")


async def read_bytes(server: Server, request: Request, *, predict: bool = True) -> bytes:
    """The body, read with the size limit. A predict request counts as *arriving* while its body
    is read: the batchers wait briefly for arriving requests (see
    :meth:`pipeflow.serving.batcher.Batcher.collect`). From the end of this until the request joins
    a batch queue nothing awaits (parsing and decoding are synchronous), so the count is exact.
    """
    if not predict:
        return await _read_bytes(request, server.config.max_body_bytes)
    server.arriving += 1
    try:
        return await _read_bytes(request, server.config.max_body_bytes)
    finally:
        server.arriving -= 1


async def _read_bytes(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise BadRequest(413, "too_large", f"the body is {int(length)} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, "too_large", f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def model_for(server: Server, name: str) -> None:
    config = server.config
    if name != config.model:
        raise BadRequest(
            404,
            "not_found",
            f"no model named '{name}' here (this server serves '{config.model}')",
        )


def caller_for(server: Server, name: str | None, request: Request, scope: str) -> str:
    """The caller of a request to the model ``name`` (None: any route) with ``scope``; 404
    for another model, 401/403 without the right token."""
    if name is not None:
        model_for(server, name)
    return server.authorize(request.headers.get("authorization"), scope)


def refusal(server: Server, request: Request, name: str | None, scope: str) -> Response | None:
    """The error answer when the caller may not ask the model ``name`` (None: any route) with
    ``scope`` (see :func:`caller_for`), or None: go on."""
    try:
        caller_for(server, name, request, scope)
    except BadRequest as err:
        return failure(server, err)
    return None


async def predict_rows(
    server: Server,
    rows: list[Any],
    caller: str,
    route: str,
    started: float,
    headers: Any = None,
    handle: Handle | None = None,
    table: Any = None,
    explain: bool = False,
    text: bytes | None = None,
) -> tuple[Handle, list[dict[str, Any]]]:
    """The results of a request's rows, checked against the signature of the version that
    answers and scored in a batch by it: ``handle``, else the version the rollout picks (by the
    request's ``--route-by`` key, from ``headers`` or the rows). Fields that only another live
    version takes (:meth:`~pipeflow.serving.state.Server.others_fields`) are left out of the
    check, so a request may carry what either a canary or the primary needs. The request is
    observed for the rollout, counted in the metrics, and offered to the shadow once answered.
    ``table``: the rows' Arrow table (a table body), checked column by column
    (:mod:`pipeflow.serving.tables`). ``explain``: each row's answer and audit record carry its
    explanation (422 naming ``explain`` for a model without one).
    ``text``: the JSON body ``rows`` are the objects of (see
    :meth:`~pipeflow.registry.signature.Signature.check_columns`)."""
    config = server.config
    if not rows:
        raise BadRequest(422, "invalid_request", "no rows to predict")
    if len(rows) > config.max_rows:
        raise BadRequest(
            413, "too_large", f"{len(rows)} rows in one request; the limit is {config.max_rows}"
        )
    key = server.rollout.key_of(headers if headers is not None else {}, rows)
    if handle is None:
        handle = server.rollout.pick(key)
    # checked against the answering version's own signature, leaving out the fields only the
    # other live versions take (the rows keep them: the shadow may need them)
    signature, checked = handle.signature, rows
    # a body decoded into this signature's columns was checked as it was decoded; its rows
    # hold exactly this version's features, so none of the others' to leave out
    decoded = isinstance(rows, columnar.Decoded) and rows.signature is signature
    others = frozenset() if decoded else server.others_fields(handle)
    if others:
        checked = [_without(r, others) for r in rows]
        if table is not None:
            table = table.drop_columns([c for c in table.column_names if c in others])
        text = None
    if table is not None:
        problems, flags, data = signature.check_table(table, reject_unusual=config.reject_unusual)
    elif decoded:
        problems, flags, data = [], rows.flags, rows.data  # type: ignore[attr-defined]
    else:
        problems, flags, data = signature.check_columns(
            checked, reject_unusual=config.reject_unusual, text=text
        )
    if problems:
        first = problems[0]
        where = f"row {first['row']}" + (f", field '{first['field']}'" if first["field"] else "")
        raise BadRequest(
            422,
            "validation_error",
            f"{len(problems)} problem(s); first: {where}: expected {first['expected']}, got {first['got']}",
            problems[:100],
        )
    columns = signature.names
    item = Pending(
        rows,
        columns,
        data,
        flags,
        caller,
        route,
        started,
        asyncio.get_running_loop().create_future(),
        explain,
    )
    try:
        assert handle.batcher is not None
        if explain:
            results = await handle.batcher.explain(item)
        else:
            results = await handle.batcher.submit(item)
    except ExplainUnavailable as err:
        raise BadRequest(
            422,
            "validation_error",
            f"explain: {err}",
            [{"field": "explain", "expected": "a model that can be explained", "got": str(err)}],
        ) from None
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
    if server.shadow is not None:  # off the answer path: a queue put, never a wait
        server.shadow.offer(item, [r["id"] for r in results], handle.version)
    server.rollout.observe(handle, elapsed, False)
    server.metrics.answered(
        handle.name, str(handle.version), route, elapsed, len(rows), sum(1 for f in flags if f)
    )
    return handle, results


def _without(row: Any, names: frozenset[str]) -> Any:
    """A row object without the fields ``names`` (anything else as it is, for the check to name)."""
    return {k: v for k, v in row.items() if k not in names} if isinstance(row, dict) else row


async def answer(
    request: Request,
    name: str | None,
    route: str,
    decode: Callable[..., list[Any]],
    encode: Callable[[Any, Handle, list[dict[str, Any]]], Any],
    *,
    by_name: bool = False,
    read: Callable[[Server, Request], Awaitable[Any]] = read_body,
    respond: Callable[[Any], Response] = reply,
    fail: Callable[[Server, BadRequest], Response] = failure,
    version: str | None = None,
    options: Callable[[Any, Any, list[str]], tuple[Any, bool]] | None = None,
) -> Response:
    """A prediction request from end to end: the caller with the ``predict`` scope, the version
    asked for by path (``version``; None: the rollout's pick), the body (``read``), its rows
    (``decode``; given the model's feature names too where ``by_name``: MLflow's and the Open
    Inference Protocol's inputs are columns), their predictions, and the protocol's answer
    (``encode``, made a response by ``respond``; a refusal by ``fail``). ``options``: the
    protocol's reading of (query, body, feature names) into (body, explain)."""
    started = time.perf_counter()
    server: Server = request.app.state.server
    in_flight = server.metrics.in_flight
    in_flight.inc()
    try:
        caller = caller_for(server, name, request, "predict")
        handle = None if version is None else served_version(server, version)
        if options is not None:  # a bad query parameter is refused before the body is read
            native.explain_query(request.query_params)
        payload = original = await read(server, request)
        explain = False
        if options is not None:
            payload, explain = options(
                request.query_params, payload, server.primary.signature.names
            )
        rows = decode(payload, server.primary.signature.names) if by_name else decode(payload)
        table = rows.table if isinstance(rows, tables.TableRows) else None
        # the native body's rows are its own objects: its text can vouch for their types
        text = getattr(request.state, "json", None) if decode is native.rows_from_native else None
        handle, results = await predict_rows(
            server, rows, caller, route, started, request.headers, handle, table, explain=explain,
            text=text if payload is original else None,
        )  # fmt: skip
        return respond(encode(payload, handle, results))
    except BadRequest as err:
        return fail(server, err)
    finally:
        in_flight.dec()


def served(server: Server) -> dict[str, Handle]:
    """The versions a client may ask for by path, by version: the primary, and the canary while
    it is on probation (a withdrawn one stays loaded only to finish its requests)."""
    handles = {str(server.primary.version): server.primary}
    canary = server.canary
    if canary is not None and server.rollout.weight > 0:
        handles.setdefault(str(canary.version), canary)
    return handles


def served_version(server: Server, version: str) -> Handle:
    """The handle of ``version`` of the served model; 404 naming the versions served."""
    handles = served(server)
    if version not in handles:
        raise BadRequest(
            404,
            "not_found",
            f"version {version!r} of '{server.config.model}' is not served here "
            f"(versions served: {', '.join(handles)})",
        )
    return handles[version]


# ------------------------------------------------------------------------------------ routes


async def health() -> Response:
    return reply({"status": "ok"})


def draining(request: Request) -> Response | None:
    """The readiness routes' answer while this replica drains (503), or None: ready."""
    if request.app.state.drain.draining:
        return reply({"status": "draining", "ready": False}, 503)
    return None


async def ready(request: Request) -> Response:
    server: Server = request.app.state.server
    if (refused := draining(request)) is not None:
        return refused
    return reply(
        {"status": "ready", "model": server.config.model, "version": server.primary.version}
    )


async def ping() -> Response:
    return reply({"status": "ok"})


async def metrics(request: Request) -> Response:
    server: Server = request.app.state.server
    if (refused := refusal(server, request, None, "metrics")) is not None:
        return refused
    body, media_type = server.metrics.exposition()
    return Response(body, media_type=media_type)


async def describe(name: str, request: Request) -> Response:
    server: Server = request.app.state.server
    if (refused := refusal(server, request, name, "predict")) is not None:
        return refused
    h = server.primary
    return reply(
        {
            "name": h.name,
            "version": h.version,
            "alias": server.config.which,
            "signature": h.signature.described(h.record),
            "canary": None
            if server.canary is None
            else {
                "version": server.canary.version,
                "weight": server.rollout.weight,
                "withdrawn": server.rollout.withdrawn,
                "ramp": None
                if server.rollout.plan is None
                else {
                    "step": server.rollout.step + 1,
                    "steps": server.rollout.plan["steps"],
                    "since": server.rollout.step_since or None,
                },
            },
            "route_by": server.config.route_by,
            "shadow": None if server.shadow is None else server.shadow.handle.label,
        }
    )


async def predict(name: str, request: Request) -> Response:
    if tables.content_type(request) in tables.TABLE_TYPES:
        return await answer_table(request, name)
    return await answer(
        request, name, "v1", native.rows_from_native, native.predict_body,
        read=read_native, options=native.explain_option,
    )  # fmt: skip


async def answer_table(request: Request, name: str) -> Response:
    """A predict request whose body is a table (Arrow IPC, Parquet; :mod:`pipeflow.serving.tables`),
    answered as a JSON body's."""
    return await answer(
        request, name, "v1", _as_is, native.predict_body, read=_table_rows, options=_query_only
    )


async def _table_rows(server: Server, request: Request) -> Any:
    """The rows of a table body: lazily, from its Arrow table (checked column by column), or as
    dicts where ``--route-by field:`` reads them (the key may be a column that is no feature)."""
    body = await read_bytes(server, request)
    table = tables.read_table(body, tables.content_type(request), server.config.max_rows)
    if server.rollout.route_kind == "field":
        return table.to_pylist()
    return tables.TableRows(table)


def _as_is(rows: Any) -> Any:
    return rows


def _query_only(query: Any, payload: Any, names: list[str]) -> tuple[Any, bool]:
    """A table body asks for explanations by the query only (``?explain=true``)."""
    return payload, bool(native.explain_query(query))


async def feedback(name: str, request: Request) -> Response:
    server: Server = request.app.state.server
    try:
        caller = caller_for(server, name, request, "feedback")
        payload = await read_body(server, request, predict=False)
        items = native.feedback_items(payload)
        recorded = server.record_feedback(items, caller)
    except BadRequest as err:
        return failure(server, err)
    return reply({"recorded": recorded})


def register(app: FastAPI, server: Server) -> None:
    """Add the routes to ``app``, in the order of its OpenAPI document; the request schemas of
    predict and feedback are written in (FastAPI cannot infer them: the routes read raw bodies).
    MLflow's and the Open Inference Protocol's routes come next, from
    :func:`pipeflow.serving.interop.register`."""

    row_schema = server.primary.signature.json_schema()
    predict_schema = {
        "parameters": [native.EXPLAIN_PARAMETER],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": native.predict_schema(row_schema)}},
        },
    }
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
    app.get("/health", tags=["probes"])(health)
    app.get("/ready", tags=["probes"])(ready)
    app.get("/ping", tags=["mlflow"])(ping)
    app.get("/metrics", tags=["probes"])(metrics)
    app.get("/v1/models/{name}", tags=["native"])(describe)
    app.post("/v1/models/{name}/predict", tags=["native"], openapi_extra=predict_schema)(predict)
    app.post("/v1/models/{name}/feedback", tags=["native"], openapi_extra=feedback_schema)(feedback)
    _add_feedback_schema(app)


def _add_feedback_schema(app: Any) -> None:
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        schema.setdefault("components", {}).setdefault("schemas", {})["Feedback"] = (
            native.FEEDBACK_SCHEMA
        )
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
