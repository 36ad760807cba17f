"""What a running stage says while it runs: its progress (``ctx.progress``) and its log lines.

**Log lines.** Records of Python ``logging`` emitted while a stage runs — by any logger, INFO and
up — are kept for that stage (:class:`StageLog`) and travel back with its result
(``StageResult.log``), like the metrics of :mod:`pipeflow.core.tracking`: nothing is written
where the stage runs; the client records them with the stage (table ``stage_logs``), and
``pipeflow runs logs RUN [STAGE]`` prints them. Which stage a record belongs to is a context
variable set around the stage's call (:func:`capture`): on the threads executor each stage runs in
its own thread, so records of concurrent stages do not mix; in a worker process (processes,
distributed) the same holds per worker thread. A thread the stage starts itself does not inherit
the variable unless started under ``contextvars.copy_context().run`` (the ``timeout_s`` thread
is); records from elsewhere (Dask, other stages) are not a stage's.

Capturing means one handler on the root logger, installed while any stage of the process runs
(for the whole graph where the stages run in the client, on the sync and threads executors:
:func:`held`).
For INFO records to reach it, the root level is lowered to INFO while it is installed (when it
was higher), and every handler the root already had is raised to the old root level for that
time, so what a program printed before it still prints, no more (``pipeflow run`` prints nothing
new). A WARNING or worse from inside a stage still reaches Python's last-resort stderr handler
when the root has no handler of its own, as it did before.

**Bounds.** A stage keeps its last :data:`MAX_LINES` lines and :data:`MAX_BYTES` of text (each
line cut at :data:`MAX_LINE` characters); lines are numbered from 1 in the order logged, so
the first kept number says how many earlier lines were dropped. Every attempt of a retried stage
logs into the same log (a failed attempt's lines explain the retry); a failed stage keeps its
lines; a stage reused from the store did not run and has none in the run that reused it.

**Progress.** ``ctx.progress(done, total=None, message=None)`` reports how far the stage is.
It is cheap: an update is passed on at most every :data:`INTERVAL` seconds (the first, and one
with ``done == total``, always), and where nobody watches (no terminal) it goes nowhere. The same
rate limit passes the latest log line on. Updates reach the client through the executor's
channel (:mod:`pipeflow.execute.channel`): a plain call on sync/threads, a queue from worker
processes, Dask's event log from a cluster. Progress is not stored: it is for the live display.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "INTERVAL",
    "MAX_BYTES",
    "MAX_LINES",
    "LogLine",
    "StageLog",
    "StageMonitor",
    "Update",
    "capture",
    "held",
]

MAX_LINES = 1000
MAX_BYTES = 256 * 1024
MAX_LINE = 4000
#: the least time between two updates of one stage passed on to the display
INTERVAL = 0.2


@dataclass(frozen=True)
class LogLine:
    """One log record of a stage: its number (from 1), when, level name, logger and text."""

    line: int
    time: float
    level: str
    logger: str
    message: str

    def to_list(self) -> list[Any]:
        return [self.line, self.time, self.level, self.logger, self.message]

    @classmethod
    def from_list(cls, item: Any) -> LogLine:
        line, at, level, logger, message = item
        return cls(int(line), float(at), str(level), str(logger), str(message))

    def text(self) -> str:
        return f"{self.level} {self.logger}: {self.message}"


@dataclass(frozen=True)
class Update:
    """What a running stage tells the display: its progress (``done``/``total``, a message) and
    its latest log line, as of ``time``. Sent as a plain list (Dask's event log takes msgpack)."""

    stage: str
    time: float
    done: float | None = None
    total: float | None = None
    message: str | None = None
    line: str | None = None

    def to_list(self) -> list[Any]:
        return [self.stage, self.time, self.done, self.total, self.message, self.line]

    @classmethod
    def from_list(cls, item: Any) -> Update:
        stage, at, done, total, message, line = item
        return cls(str(stage), float(at), done, total, message, line)


#: where a stage's updates go: a callable taking ``Update.to_list()`` (picklable for workers in
#: other processes), or None when nobody watches
Sender = Callable[[list[Any]], None]


class StageLog:
    """The bounded log of one stage (see the module docstring); thread-safe."""

    def __init__(self, max_lines: int = MAX_LINES, max_bytes: int = MAX_BYTES) -> None:
        self._lock = threading.Lock()
        self._lines: deque[LogLine] = deque()
        self._bytes = 0
        self._count = 0
        self.max_lines, self.max_bytes = max_lines, max_bytes

    def add(self, level: str, logger: str, message: str, at: float | None = None) -> LogLine:
        if len(message) > MAX_LINE:
            message = message[:MAX_LINE] + f" ... ({len(message) - MAX_LINE} more characters)"
        with self._lock:
            self._count += 1
            entry = LogLine(self._count, time.time() if at is None else at, level, logger, message)
            self._lines.append(entry)
            self._bytes += len(message)
            while len(self._lines) > self.max_lines or (
                self._bytes > self.max_bytes and len(self._lines) > 1
            ):
                self._bytes -= len(self._lines.popleft().message)
            return entry

    def lines(self) -> list[LogLine]:
        with self._lock:
            return list(self._lines)

    def __getstate__(self) -> dict[str, Any]:
        with self._lock:
            return {
                "lines": list(self._lines),
                "count": self._count,
                "limits": (self.max_lines, self.max_bytes),
            }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._lock = threading.Lock()
        self._lines = deque(state["lines"])
        self._count = state["count"]
        self._bytes = sum(len(x.message) for x in self._lines)
        self.max_lines, self.max_bytes = state["limits"]


class StageMonitor:
    """One stage's log and its channel to the display (``send``, None when nobody watches)."""

    def __init__(self, stage: str, send: Sender | None = None) -> None:
        self.stage = stage
        self.log = StageLog()
        self._send = send
        self._lock = threading.Lock()
        self._last = 0.0
        self._done: float | None = None
        self._total: float | None = None
        self._message: str | None = None
        self._line: str | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        """A copy sent to another process keeps the log so far and reports to nobody."""
        return (_unpickled, (self.stage, self.log))

    def progress(self, done: float, total: float | None = None, message: str | None = None) -> None:
        """Record how far the stage is (see :meth:`StageContext.progress`)."""
        for what, value in (("done", done), ("total", total)):
            if value is None and what == "total":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                try:
                    value = float(value)  # type: ignore[arg-type]  # numpy numbers
                except (TypeError, ValueError):
                    raise ValueError(f"progress: {what} must be a number, not {value!r}") from None
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"progress: {what} must be a finite number >= 0, not {value!r}")
        if self._send is None:
            return
        with self._lock:
            self._done, self._total = float(done), None if total is None else float(total)
            if message is not None:
                self._message = str(message)[:200]
            final = total is not None and float(done) >= float(total)
        self._flush(force=final)

    def record(self, record: logging.LogRecord) -> None:
        """Keep ``record`` in the stage's log (and pass it on as the latest line)."""
        try:
            message = record.getMessage()
        except Exception as err:  # a bad format string is the logger's bug, not the stage's
            message = f"{record.msg!r} (unformattable: {err})"
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
        entry = self.log.add(record.levelname, record.name, message, record.created)
        if self._send is not None:
            with self._lock:
                self._line = entry.text().splitlines()[0][:200]
            self._flush(force=record.levelno >= logging.WARNING)

    def _flush(self, *, force: bool) -> None:
        now = time.monotonic()
        with self._lock:
            if not force and now - self._last < INTERVAL:
                return
            self._last = now
            update = Update(
                self.stage, time.time(), self._done, self._total, self._message, self._line
            )
        with contextlib.suppress(Exception):  # a watcher gone away never fails the stage
            self._send(update.to_list())  # type: ignore[misc]


def _unpickled(stage: str, log: StageLog) -> StageMonitor:
    monitor = StageMonitor(stage)
    monitor.log = log
    return monitor


_current: contextvars.ContextVar[StageMonitor | None] = contextvars.ContextVar(
    "pipeflow_stage_monitor", default=None
)


class _StageHandler(logging.Handler):
    """The root handler that files a record under the stage running in its context."""

    def emit(self, record: logging.LogRecord) -> None:
        monitor = _current.get()
        if monitor is None:
            return
        monitor.record(record)
        root = logging.getLogger()
        if (
            record.levelno >= logging.WARNING
            and logging.lastResort is not None
            and all(h is _handler for h in root.handlers)
            and record.levelno >= logging.lastResort.level
        ):
            logging.lastResort.handle(record)  # as if we were not here (module docstring)


_handler = _StageHandler(logging.INFO)
_install_lock = threading.Lock()
_installed = 0
_restore: list[tuple[Any, int]] = []


def _install() -> None:
    global _installed
    with _install_lock:
        _installed += 1
        if _installed > 1:
            return
        root = logging.getLogger()
        old = root.level
        if old > logging.INFO:
            _restore.append((root, old))
            for h in root.handlers:
                if h.level < old:
                    _restore.append((h, h.level))
                    h.setLevel(old)
            root.setLevel(logging.INFO)
        root.addHandler(_handler)


def _uninstall() -> None:
    global _installed
    with _install_lock:
        _installed -= 1
        if _installed:
            return
        logging.getLogger().removeHandler(_handler)
        while _restore:
            owner, level = _restore.pop()
            owner.setLevel(level)


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Keep the handler installed for the whole block, so that each :func:`capture` inside it
    only sets its context variable. Installing lowers the root logger's level, and every
    ``setLevel`` clears the level cache of every logger in the process: done per stage, that was
    a fifth of a no-op stage's cost on the threads executor."""
    _install()
    try:
        yield
    finally:
        _uninstall()


@contextlib.contextmanager
def capture(monitor: StageMonitor) -> Iterator[StageMonitor]:
    """Within the block, log records of this context are ``monitor``'s stage's."""
    token = _current.set(monitor)
    _install()
    try:
        yield monitor
    finally:
        _uninstall()
        _current.reset(token)
