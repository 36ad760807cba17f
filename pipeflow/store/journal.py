"""The audit trail: append-only JSON lines that survive a crash of the writer.

Policy, and why:

- **One file per writer process** (``<folder>/<kind>/<host>-<pid>-<token>.jsonl``): several server
  workers never interleave bytes in one file, and no lock is needed.
- **A batch of records is one ``write()`` on an ``O_APPEND`` descriptor**, done *before* the client
  gets its answer. SIGKILL cannot split a ``write()`` to a local file (the signal is acted on when
  the system call returns), so every acknowledged prediction is in the file, whole. ``sync=True``
  adds an ``fsync`` per batch for power loss, at a cost in latency.
- **Readers skip a line without its newline** (a torn write after a power cut or a full disk), and
  :func:`repair` trims such a tail before a writer reuses nothing: files are never reopened for
  writing, so a torn tail can only be at the end of a dead writer's file.
- Records are plain JSON objects; each has ``id`` and ``time``. Kinds: ``predictions``,
  ``feedback``, ``batches`` (one record per batch-inference job), ``events`` (canary and reload).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def _dumps_std(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=str, allow_nan=False).encode()


def _line_std(value: Any) -> bytes:
    return _dumps_std(value) + b"\n"


try:  # orjson: several times faster for the per-row audit records; same JSON out
    import orjson

    def dumps(value: Any) -> bytes:
        """Compact JSON bytes (NaN/inf become null; unknown types as str)."""
        return orjson.dumps(value, default=str, option=orjson.OPT_SERIALIZE_NUMPY)

    _LINE = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE

    def line(value: Any) -> bytes:
        """One JSON line: :func:`dumps` and a newline, in one call."""
        return orjson.dumps(value, default=str, option=_LINE)

    loads = orjson.loads

except ImportError:  # pragma: no cover - orjson is a dependency; keep working without it
    dumps = _dumps_std
    line = _line_std
    loads = json.loads


KINDS = ("predictions", "feedback", "batches", "events", "alerts")


class AuditLog:
    """Appends records of one kind to this process's own file under ``folder``."""

    def __init__(
        self, folder: str | os.PathLike[str], kind: str = "predictions", *, sync: bool = False
    ):
        if kind not in KINDS:
            raise ValueError(f"unknown audit kind {kind!r}; known: {', '.join(KINDS)}")
        self.folder = Path(folder) / kind
        self.sync = sync
        self._fd: int | None = None
        self._pid = 0
        self._lock = threading.Lock()

    @property
    def path(self) -> Path | None:
        return getattr(self, "_path", None)

    def _open(self) -> int:
        pid = os.getpid()
        if self._fd is None or self._pid != pid:  # a forked worker gets its own file
            self.folder.mkdir(parents=True, exist_ok=True)
            name = f"{socket.gethostname()}-{pid}-{secrets.token_hex(3)}.jsonl"
            self._path = self.folder / name
            self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self._pid = pid
        return self._fd

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        data = b"".join([line(r) for r in records])
        if not data:
            return
        with self._lock:
            fd = self._open()
            view = memoryview(data)
            while view:  # a regular file takes it in one go; loop for the letter of the law
                written = os.write(fd, view)
                view = view[written:]
            if self.sync:
                os.fsync(fd)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None and self._pid == os.getpid():
                os.close(self._fd)
            self._fd = None


def files(folder: str | os.PathLike[str], kind: str) -> list[Path]:
    where = Path(folder) / kind
    return sorted(where.glob("*.jsonl")) if where.is_dir() else []


def read(folder: str | os.PathLike[str], kind: str = "predictions") -> Iterator[dict[str, Any]]:
    """Every whole record of ``kind``, file by file (unordered across files)."""
    for path in files(folder, kind):
        with open(path, "rb") as fh:
            for line in fh:
                if not line.endswith(b"\n"):
                    break  # a torn tail: never acknowledged
                try:
                    yield json.loads(line)
                except ValueError:
                    continue


def find(folder: str | os.PathLike[str], kind: str, record_id: str) -> list[dict[str, Any]]:
    """Records of ``kind`` with this ``id`` (a byte search first, so a large log is cheap)."""
    needle = json.dumps(record_id).encode()
    found = []
    for path in files(folder, kind):
        with open(path, "rb") as fh:
            for line in fh:
                if needle in line and line.endswith(b"\n"):
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue
                    if record.get("id") == record_id:
                        found.append(record)
    return found


def _writer_gone(path: Path) -> bool:
    """Whether the process that wrote ``path`` (named ``<host>-<pid>-<token>.jsonl``) is dead on
    this host. A live writer's file, or another host's, is never touched: a reader may see a
    write in progress as a torn tail."""
    parts = path.stem.rsplit("-", 2)
    if len(parts) != 3 or not parts[1].isdigit() or parts[0] != socket.gethostname():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def repair(folder: str | os.PathLike[str]) -> int:
    """Trim torn tails (bytes after the last newline) from the audit files of writers that are
    gone (see :func:`_writer_gone`); returns how many. Readers skip torn tails anyway."""
    trimmed = 0
    for kind in KINDS:
        for path in files(folder, kind):
            if not _writer_gone(path):
                continue
            with open(path, "rb+") as fh:
                data = fh.read()
                if data and not data.endswith(b"\n"):
                    fh.truncate(data.rfind(b"\n") + 1)
                    trimmed += 1
    return trimmed


def default_folder(store_url: str) -> Path | None:
    """``<store>/audit`` for a local store; None for remote stores (give --audit-dir)."""
    from pipeflow.store import layout

    return layout.audit_dir(store_url)
