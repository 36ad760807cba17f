"""Where fired alerts go: one small contract, built-in sinks registered like any plugin's.

An alert sink is a class built from its YAML declaration (:class:`pipeflow.monitoring.alerts.Sink`)
with one method, ``send(alert)``, which must not raise for a delivery that failed (alerting must
never break monitoring: log it). Sink types are found by name in the ``pipeflow.sinks``
entry-point group, the same path stage types take (``pipeflow.stages``): pipeflow's own
``log``, ``file`` and ``webhook`` are declared there in its ``pyproject.toml``, and a plugin
adds, say, ``slack`` by declaring ``slack = "my_pkg.sinks:SlackSink"`` under the same group. A
plugin sink reads its settings from the declaration's ``options:`` mapping.

Nothing is imported before a sink of that type is used.
"""

from __future__ import annotations

import difflib
import functools
import json
import logging
import os
import urllib.request
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pipeflow.core.entrypoints import entry_points, load_object
from pipeflow.errors import SinkTypeError

if TYPE_CHECKING:  # pragma: no cover
    from pipeflow.monitoring.alerts import Sink

ENTRY_POINT_GROUP = "pipeflow.sinks"
log = logging.getLogger("pipeflow.alerts")


@runtime_checkable
class AlertSink(Protocol):
    """The contract: built from its declaration, ``send`` delivers one alert (a JSON-able dict
    with ``rule``, ``severity``, ``message``, ``model``, ``time``, ...)."""

    def __init__(self, config: Sink) -> None: ...

    def send(self, alert: dict[str, Any]) -> None: ...


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return entry_points(ENTRY_POINT_GROUP)


def sink_types() -> list[str]:
    """The installed sink type names."""
    return sorted(_entry_points())


def check_type(name: str) -> str:
    """``name`` if a sink of that type is installed; a ValueError naming the installed ones (and
    the closest) otherwise, for the declaration's validator."""
    installed = sink_types()
    if name not in installed:
        close = difflib.get_close_matches(name, installed, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ValueError(
            f"unknown sink type; {hint}installed sink types: {', '.join(installed)}; got '{name}'"
        )
    return name


@functools.cache
def _sink_class(name: str) -> type[AlertSink]:
    ep = _entry_points().get(name)
    if ep is None:
        raise SinkTypeError(f"unknown sink type '{name}'; installed: {', '.join(sink_types())}")
    obj = load_object(f"sink type '{name}'", ep.value, SinkTypeError)
    if not (isinstance(obj, type) and callable(getattr(obj, "send", None))):
        raise SinkTypeError(f"sink type '{name}' ({ep.value}) is not a class with send(alert)")
    return obj  # type: ignore[no-any-return]


def open_sink(config: Sink) -> AlertSink:
    """The sink a declaration names, built from it."""
    return _sink_class(config.type)(config)


# ------------------------------------------------------------------------- built-in sinks


class LogSink:
    """The ``pipeflow.alerts`` logger, at the rule's severity."""

    LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.CRITICAL}

    def __init__(self, config: Sink) -> None:
        self.config = config

    def send(self, alert: dict[str, Any]) -> None:
        log.log(
            self.LEVELS[alert["severity"]],
            "ALERT %s [%s]: %s",
            alert["rule"],
            alert["severity"],
            alert["message"],
        )


class FileSink:
    """One JSON line per alert, appended with a single write (O_APPEND: whole lines even with
    several writers)."""

    def __init__(self, config: Sink) -> None:
        if not config.path:
            raise SinkTypeError("a file sink needs `path:` (the JSON-lines file to append to)")
        self.path = Path(config.path)

    def send(self, alert: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(alert, default=str).encode() + b"\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


class WebhookSink:
    """A JSON POST to an http(s) URL, with a timeout; a failure is logged, never raised."""

    def __init__(self, config: Sink) -> None:
        if not config.url:
            raise SinkTypeError("a webhook sink needs `url:` (where to POST)")
        self.url = config.url
        self.timeout_s = config.timeout_s

    def send(self, alert: dict[str, Any]) -> None:
        request = urllib.request.Request(
            self.url,
            data=json.dumps(alert, default=str).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            # B310 (urlopen of a file: URL) cannot happen: Sink._http admits only http(s) URLs
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310 # nosec B310
                response.read()
        except Exception as err:  # a down webhook must not stop monitoring
            log.error("webhook %s failed for alert %s: %s", self.url, alert["rule"], err)
