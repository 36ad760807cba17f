"""The HTTP server of a registered model (FastAPI on uvicorn): :func:`create_app` wires it up.

This module only assembles the parts, each of which says in its own docstring what it does and
why:

- :mod:`~pipeflow.serving.config`: :class:`ServeConfig`, everything a server process is told;
- :mod:`~pipeflow.serving.state`: the :class:`~pipeflow.serving.state.Server` the routes share
  (audit logs, bearer tokens, the alias watch that hot-reloads on promote / rollback, feedback);
- :mod:`~pipeflow.serving.rollout`: the canary (sticky by a request key, ramped step by step
  over the fleet), withdrawn when it breaches its limits;
- :mod:`~pipeflow.serving.shadow`: a challenger scored on the answered rows off the answer path;
- :mod:`~pipeflow.serving.handle` and :mod:`~pipeflow.serving.batcher`: a loaded model version,
  and the micro-batcher that scores concurrent requests in one call and audits before answering;
- :mod:`~pipeflow.serving.routes`: the routes, and the request path they share (caller, body,
  signature check, micro-batch, errors); :mod:`~pipeflow.serving.interop`: MLflow's and the
  Open Inference Protocol's routes on that path (CSV, binary tensors, versioned paths);
- :mod:`~pipeflow.serving.protocols`: the native, MLflow and Open Inference Protocol (KServe v2)
  formats;
- :mod:`~pipeflow.serving.metrics`: the Prometheus metrics;
- :mod:`~pipeflow.serving.docs`: ``/openapi.json`` (under the ``predict`` scope) and Swagger UI
  at ``/docs`` with its assets served locally;
- :mod:`~pipeflow.serving.drain`: not ready, then stopped, on SIGTERM (a fleet's replica leaves
  its load balancer before it closes its port).

Here: the app (its OpenAPI title and version name the served model), the lifespan (the alias
watch, and on a remote store the audit shipper, run while the app does; at shutdown the shipper
ships what is left and the audit logs are closed), the handler that answers FastAPI's own 404
and 405 in the server's error shape (the Open Inference Protocol's under ``/v2``), and
:func:`app_from_env`, the factory ``pipeflow serve --workers N`` hands uvicorn as
``"pipeflow.serving.app:app_from_env"``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeflow.errors import BadRequest
from pipeflow.serving import docs, interop
from pipeflow.serving.config import ServeConfig
from pipeflow.serving.drain import CloseWhileDraining, Drain
from pipeflow.serving.routes import failure, register, v2_failure
from pipeflow.serving.state import Server


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    server: Server = app.state.server
    watcher = asyncio.get_running_loop().create_task(server.watch_alias())
    if server.shadow is not None:
        server.shadow.start()
    if server.shipper is not None:
        server.shipper.start()
    try:
        yield
    finally:
        watcher.cancel()
        if server.shadow is not None:  # score what is queued, briefly, before the logs close
            await asyncio.to_thread(server.shadow.stop)
        if server.shipper is not None:  # SIGTERM: ship what is closed and what is open
            shipped = await asyncio.to_thread(server.shipper.stop)
            logging.getLogger("pipeflow.serve").info(
                "shipped %d audit segment(s) to %s", shipped, server.shipper.describe()
            )
        for audit_log in (server.audit, server.feedback_log, server.events):
            audit_log.close()
        if server.shadow is not None:
            server.shadow.journal.close()


async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """FastAPI's own refusals (no such route: 404, wrong method: 405) in the server's shape (under
    ``/v2``, the Open Inference Protocol's)."""
    kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    path = request.url.path
    refuse = v2_failure if path == "/v2" or path.startswith("/v2/") else failure
    return refuse(request.app.state.server, BadRequest(exc.status_code, kind, str(exc.detail)))


def create_app(config: ServeConfig) -> Any:
    """The FastAPI application serving ``config.model`` (loads the model now)."""
    server = Server(config)
    primary = server.primary
    app = FastAPI(
        title=f"pipeflow: {config.model}",
        version=str(primary.version),
        description=f"Predictions from the registered model {config.model}@{config.which or primary.version}.",
        lifespan=lifespan,
        # served by pipeflow.serving.docs: the schema under the predict scope, no CDN
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.server = server
    app.state.drain = drain = Drain(config.drain_s)
    server.metrics.track(lambda: queued(server), lambda: drain.draining)
    app.add_middleware(CloseWhileDraining, drain=drain)
    app.exception_handler(StarletteHTTPException)(http_error)
    register(app, server)
    docs.register(app, server)
    interop.register(app)  # MLflow's and the Open Inference Protocol's routes, after pipeflow's
    return app


def queued(server: Server) -> int:
    """Requests waiting in the batch queues of the versions served (primary and canary)."""
    return sum(
        h.batcher.queue.qsize()
        for h in (server.primary, server.canary)
        if h is not None and h.batcher is not None
    )


def app_from_env() -> Any:
    """uvicorn factory for ``--workers N``: the config comes from ``$PIPEFLOW_SERVE_CONFIG``."""
    from pipeflow.core import gcpause

    app = create_app(ServeConfig.from_json(os.environ["PIPEFLOW_SERVE_CONFIG"]))
    gcpause.settle_for_serving()
    return app
