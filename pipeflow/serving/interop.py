"""The routes of other servers' clients: MLflow's scoring protocol (``/invocations``) and the Open
Inference Protocol (KServe v2, ``/v2/...``), versioned paths included.

What a body means is each protocol's own (:mod:`pipeflow.serving.protocols.mlflow`,
:mod:`pipeflow.serving.protocols.v2`); the request path is the one every prediction route shares
(:func:`pipeflow.serving.routes.answer`: caller, body, rows, signature check, micro-batch). What
differs, and lives here, is how each reads a body its clients send and how it answers:

- ``/invocations`` reads JSON or CSV, UTF-8 only, as MLflow's scoring server does; any other
  content type, charset or content-type parameter is 415 naming what is read
  (:func:`read_mlflow`);
- ``/v2/models/{name}[/versions/{version}]/infer`` reads the JSON request or, with the
  ``Inference-Header-Content-Length`` header, the JSON request followed by binary tensor data
  (:func:`read_v2`), and answers JSON or JSON followed by binary outputs (:func:`v2_reply`); every
  refusal on a ``/v2`` route is the protocol's ``{"error": "<message>"}``
  (:func:`pipeflow.serving.routes.v2_failure`);
- a version in the path is one the server serves (:func:`pipeflow.serving.routes.served`: the
  primary, and the canary while on probation), and that version answers, whatever the rollout
  would pick; another is 404 naming those served.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from pipeflow.errors import BadRequest
from pipeflow.serving.jsonbody import parse_json
from pipeflow.serving.protocols import mlflow, v2
from pipeflow.serving.routes import (
    answer,
    caller_for,
    draining,
    is_json,
    model_for,
    read_bytes,
    reply,
    served,
    served_version,
    v2_failure,
)

if TYPE_CHECKING:
    from pipeflow.serving.state import Server


async def invocations(request: Request) -> Response:
    return await answer(
        request,
        None,
        "mlflow",
        mlflow.rows_from_mlflow,
        mlflow.invocations_body,
        by_name=True,
        read=read_mlflow,
    )


async def read_mlflow(server: Server, request: Request) -> Any:
    """An ``/invocations`` body: JSON or CSV, UTF-8, as MLflow's scoring server reads them (any
    other content type, charset or content-type parameter: 415 naming what is read), its
    ``params`` checked (:func:`pipeflow.serving.protocols.mlflow.check_params`)."""
    raw = request.headers.get("content-type", "application/json")
    ctype, *rest = (part.strip() for part in raw.split(";"))
    ctype = ctype.lower()
    params = dict(p.partition("=")[::2] for p in rest if p)
    charset = params.pop("charset", "utf-8").strip('"').lower()
    if ctype != "text/csv" and not is_json(ctype):
        raise BadRequest(
            415,
            "unsupported_media_type",
            f"expected Content-Type application/json or text/csv (MLflow's scoring server's), "
            f"got {ctype!r}",
        )
    if charset not in ("utf-8", "utf8"):
        raise BadRequest(
            415, "unsupported_media_type", f"only UTF-8 bodies are read, got charset={charset}"
        )
    if params:
        raise BadRequest(
            415,
            "unsupported_media_type",
            f"Content-Type parameters other than charset are not read (got "
            f"{', '.join(sorted(params))}); MLflow 1's format= is now the body's dataframe_split "
            "or dataframe_records",
        )
    body = await read_bytes(server, request)
    if ctype == "text/csv":
        kinds = {f.name: f.expect for f in server.primary.signature.features}
        payload = mlflow.payload_from_csv(body, kinds)
    else:
        payload = parse_json(body)
    mlflow.check_params(payload, server.primary)
    return payload


async def v2_live() -> Response:
    return reply({"live": True})


async def v2_ready(request: Request) -> Response:
    if (refused := draining(request)) is not None:
        return refused
    return reply({"ready": True})


async def v2_server() -> Response:
    from pipeflow import __version__

    return reply({"name": "pipeflow", "version": __version__, "extensions": ["binary_tensor_data"]})


def _model_and_version(
    inner: Callable[[str, str | None, Request], Awaitable[Response]], model: str, version: str
) -> tuple[Callable[..., Awaitable[Response]], Callable[..., Awaitable[Response]]]:
    """The handlers of a ``/v2/models/{name}...`` route and of its
    ``/v2/models/{name}/versions/{version}...`` twin, named ``model`` and ``version`` (the names
    the OpenAPI document's operation ids and summaries come from): ``inner(name, version,
    request)`` answers both, the first with no version."""

    async def of_model(name: str, request: Request) -> Response:
        return await inner(name, None, request)

    async def of_version(name: str, version: str, request: Request) -> Response:
        return await inner(name, version, request)

    of_model.__name__ = of_model.__qualname__ = model
    of_version.__name__ = of_version.__qualname__ = version
    return of_model, of_version


async def _v2_metadata(name: str, version: str | None, request: Request) -> Response:
    server: Server = request.app.state.server
    try:
        caller_for(server, name, request, "predict")
        handle = server.primary if version is None else served_version(server, version)
    except BadRequest as err:
        return v2_failure(server, err)
    return reply(v2.metadata_body(handle, [int(v) for v in served(server)]))


async def _v2_model_ready(name: str, version: str | None, request: Request) -> Response:
    server: Server = request.app.state.server
    try:
        model_for(server, name)
        if version is not None:
            served_version(server, version)
    except BadRequest as err:
        return v2_failure(server, err)
    if request.app.state.drain.draining:
        return reply({"name": name, "ready": False}, 503)
    return reply({"name": name, "ready": True})


async def _v2_infer(name: str, version: str | None, request: Request) -> Response:
    return await answer(
        request,
        name,
        "v2",
        v2.rows_from_v2,
        v2.infer_answer,
        by_name=True,
        read=read_v2,
        respond=v2_reply,
        fail=v2_failure,
        version=version,
    )


v2_metadata, v2_version_metadata = _model_and_version(
    _v2_metadata, "v2_metadata", "v2_version_metadata"
)
v2_model_ready, v2_version_ready = _model_and_version(
    _v2_model_ready, "v2_model_ready", "v2_version_ready"
)
v2_infer, v2_version_infer = _model_and_version(_v2_infer, "v2_infer", "v2_version_infer")


#: the content types of an inference request without binary data (with it, any: the header says)
V2_TYPES = ("application/json", "application/octet-stream")


async def read_v2(server: Server, request: Request) -> Any:
    """An ``/infer`` body: the JSON request, or with the ``Inference-Header-Content-Length``
    header the JSON request followed by binary tensor data (:mod:`pipeflow.serving.protocols.v2`);
    its parameters and outputs checked."""
    header = request.headers.get(v2.HEADER)
    if header is None:
        raw = request.headers.get("content-type", "application/json")
        ctype = raw.split(";")[0].strip().lower()
        if ctype not in V2_TYPES and not is_json(ctype):
            raise BadRequest(
                415,
                "unsupported_media_type",
                f"expected Content-Type {' or '.join(V2_TYPES)} (or any, with binary tensor "
                f"data and the {v2.HEADER} header), got {ctype!r}",
            )
        body = await read_bytes(server, request)
        hint = (
            f" (a body with binary tensor data needs the {v2.HEADER} header: the byte length "
            "of its JSON part)"
        )
        payload = parse_json(body, hint)
    else:
        head, binary = v2.split_body(await read_bytes(server, request), header)
        hint = f" (in the JSON part: the first {len(head)} bytes, by the {v2.HEADER} header)"
        payload = v2.attach_binary(parse_json(head, hint), binary)
    v2.check_request(payload, server.primary)
    return payload


def v2_reply(answer: tuple[bytes, int | None]) -> Response:
    """An ``/infer`` answer: JSON, or JSON and binary outputs (with the header giving the length
    of the JSON part)."""
    content, header_length = answer
    if header_length is None:
        return Response(content, media_type="application/json")
    return Response(
        content,
        media_type="application/octet-stream",
        headers={v2.HEADER: str(header_length)},
    )


def register(app: FastAPI) -> None:
    """Add MLflow's and the Open Inference Protocol's routes to ``app``."""
    app.post("/invocations", tags=["mlflow"])(invocations)
    oip = ["open inference protocol"]
    app.get("/v2/health/live", tags=oip)(v2_live)
    app.get("/v2/health/ready", tags=oip)(v2_ready)
    app.get("/v2", tags=oip)(v2_server)
    app.get("/v2/models/{name}", tags=oip)(v2_metadata)
    app.get("/v2/models/{name}/ready", tags=oip)(v2_model_ready)
    app.post("/v2/models/{name}/infer", tags=oip)(v2_infer)
    app.get("/v2/models/{name}/versions/{version}", tags=oip)(v2_version_metadata)
    app.get("/v2/models/{name}/versions/{version}/ready", tags=oip)(v2_version_ready)
    app.post("/v2/models/{name}/versions/{version}/infer", tags=oip)(v2_version_infer)
