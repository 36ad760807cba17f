"""Draining: a replica told to stop first stops being *ready*, then stops taking requests.

In a fleet (Kubernetes pods behind a Service, or any load balancer that probes readiness) a
replica that is about to stop must be taken out of rotation *before* it closes its port, or the
balancer keeps sending it requests that are refused. The order on SIGTERM, with
``pipeflow serve --drain-seconds S``:

1. **Draining** (``S`` seconds): the readiness routes (``/ready``, ``/v2/health/ready``,
   ``/v2/models/{name}/ready``) answer 503 ``{"status": "draining"}``, ``pipeflow_draining`` is 1,
   and every answer carries ``Connection: close``, so keep-alive clients (which a Service pins to
   one pod) reconnect and land on another replica. Requests are still answered as usual: a
   balancer that has not noticed yet loses nothing. Liveness (``/health``) stays 200: a draining
   replica is not a dead one.
2. **Stopping**: uvicorn's graceful shutdown: the port is closed, idle connections are closed, the
   requests in flight are answered (each audited before its answer, see
   :mod:`pipeflow.serving.batcher`), then the lifespan closes the audit log.

A second SIGTERM or a SIGINT during the drain skips the rest of it (step 2 at once). With
``S = 0`` (the default) step 1 is skipped, as before. The drain is per process, so it needs
``--workers 1`` (the fleet layout: one process per pod, scaled with replicas); uvicorn's
multi-process supervisor starts its own servers, which this module cannot reach.

:class:`Drain` is the state the routes read (``app.state.drain``); :class:`GracefulServer` is the
uvicorn server whose signal handler starts it; :class:`CloseWhileDraining` is the ASGI wrapper
that adds ``Connection: close``.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType
from typing import Any

import uvicorn

log = logging.getLogger("pipeflow.serve")


class Drain:
    """Whether this process is draining, since when, and for how long it will."""

    def __init__(self, seconds: float = 0.0):
        self.seconds = seconds
        self.since: float | None = None

    @property
    def draining(self) -> bool:
        return self.since is not None

    def begin(self) -> None:
        if self.since is None:
            self.since = time.time()


class CloseWhileDraining:
    """ASGI wrapper: while draining, every HTTP answer says ``Connection: close``."""

    def __init__(self, app: Any, drain: Drain):
        self.app, self.drain = app, drain

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.drain.draining:
            await self.app(scope, receive, send)
            return

        async def closing(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, closing)


class GracefulServer(uvicorn.Server):
    """A uvicorn server whose first SIGTERM drains for ``drain.seconds`` before stopping."""

    def __init__(self, config: uvicorn.Config, drain: Drain):
        super().__init__(config)
        self.drain = drain
        self._timer: threading.Timer | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and self.drain.seconds > 0 and not self.drain.draining:
            self.drain.begin()
            log.info(
                "SIGTERM: draining for %gs (not ready; answering requests), then stopping",
                self.drain.seconds,
            )
            self._timer = threading.Timer(self.drain.seconds, self._stop, (sig, frame))
            self._timer.daemon = True
            self._timer.start()
            return
        if self._timer is not None:  # a second signal: stop now
            self._timer.cancel()
        self._stop(sig, frame)

    def _stop(self, sig: int, frame: FrameType | None) -> None:
        self.drain.begin()  # not ready from here on, drained or not
        super().handle_exit(sig, frame)
