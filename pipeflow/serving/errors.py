"""The two ways a request is refused, shared by every layer of the server.

:class:`BadRequest` carries the HTTP status, an error ``type`` and the fields at fault; the
decoders (:mod:`pipeflow.serving.protocols`), the token check (:mod:`pipeflow.serving.state`) and
the request helpers (:mod:`pipeflow.serving.routes`) raise it, and one place turns it into the JSON
error reply (``routes.failure``): bad input never reaches the model and never answers 500.
:class:`AuditUnavailable` is raised by the batcher when a batch's audit records cannot be written;
the request is answered 503, because no prediction is answered unaudited.
"""

from __future__ import annotations

from typing import Any


class AuditUnavailable(Exception):
    """The audit log cannot be written: no prediction is answered unaudited (503)."""


class BadRequest(Exception):
    def __init__(
        self, status: int, kind: str, message: str, fields: list[dict[str, Any]] | None = None
    ):
        super().__init__(message)
        self.status, self.kind, self.fields = status, kind, fields or []
