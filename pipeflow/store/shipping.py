"""Journals on an object store: each writer's local spool, the segments it ships, and readers of
the union of every machine's records.

Why a spool and not appends to the store: an object store cannot append, a PUT per prediction
would put the network on the request path, and the server's promise (a prediction is in the
journal *before* it is answered, :mod:`pipeflow.store.journal`) needs a write that survives
SIGKILL in microseconds. So a writer on a remote store appends to a local folder exactly as it
does in a local store, and a :class:`Shipper` copies what it has closed to the store:

- **Where**: the spool is ``$PIPEFLOW_SPOOL/<digest>/<journal>`` (``~/.cache/pipeflow/spool`` by
  default; :func:`pipeflow.store.layout.spool_dir`), or the ``--audit-dir`` given; segments land
  in ``<store>/journal/<journal>/<kind>/<segment name>`` (``journal``: ``audit``,
  ``monitoring``, ``watch``). One flat folder per kind: a reader lists it in one request (1000
  names a page), and names never collide (``<host>-<pid>-<16 random hex digits>.jsonl``), so no
  per-writer folder is needed.
- **When**: a segment is closed when it reaches :data:`SEGMENT_BYTES`, on the shipper's timer
  (``interval_s``, so a quiet writer's records still arrive within that many seconds; ``serve
  --ship-interval``), and at a clean shutdown (SIGTERM: :meth:`Shipper.stop`). One-shot writers
  (a monitoring pass's alerts, ``watch`` events, a batch job's summary) ship as they close
  (:func:`append_and_ship`).
- **How**: a closed segment is written whole, under its own name (S3: one PUT, visible only once
  complete; a local store: a temporary file renamed), then removed from the spool. Shipping it
  twice writes the same bytes under the same name, and readers count a name once, so a retry or
  two processes adopting the same orphan never double a record. A segment that fails to ship
  stays in the spool and is retried on the next tick.
- **Crash recovery**: :meth:`Shipper.adopt`, called when a writer starts on a spool, ships the
  segments whose writer is gone (same host, process dead; or this process's id but older than
  this process: a container restarted with the same pid), less a torn tail.
- **Readers** (:class:`Journal`): the union of the local folder (this machine's unshipped spool,
  or a local store's journal) and the shipped segments, by name: local first, then the store,
  so a segment shipped and removed between the two listings is still seen once. A long-lived
  reader (``remember=True``: the dashboard) keeps the parsed records of shipped segments by name
  and downloads each one once; the traffic index does the same with its own offsets. A store
  that cannot be listed or read is a :class:`~pipeflow.errors.StoreError` naming it, never an
  empty journal.

Known limit: a busy writer ships a segment per interval per kind; there is no compaction yet, so
a reader of a long history lists (and ``monitor`` downloads) many small objects.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from pipeflow.errors import StoreError
from pipeflow.store import layout
from pipeflow.store.journal import KINDS, AuditLog, Segment, files, parse

log = logging.getLogger("pipeflow.journal")

#: a segment is closed (and shipped on the next tick) once it holds this many bytes
SEGMENT_BYTES = 16 * 1024 * 1024
#: the default seconds between ship passes of a long-lived writer
INTERVAL_S = 10.0
#: when this process started: a spool file named with our pid but older is a predecessor's
_STARTED = time.time()

__all__ = ["INTERVAL_S", "Journal", "Shipper", "append_and_ship", "open_journal"]


def _put(store: Any, dest: str, data: bytes) -> None:
    """Write ``data`` whole at ``dest`` (a full path on the store's filesystem)."""
    if store.is_local:
        folder = os.path.dirname(dest)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{os.path.basename(dest)}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, dest)
    else:
        store.fs.pipe_file(dest, data)


def _orphan(path: Path) -> bool:
    """Whether the writer of a spool file is gone (see the module docstring)."""
    parts = path.stem.rsplit("-", 2)
    if len(parts) != 3 or not parts[1].isdigit() or parts[0] != socket.gethostname():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        try:
            return path.stat().st_mtime < _STARTED - 1
        except OSError:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Shipper:
    """Ships the closed segments of one journal's spool to ``<store>/journal/<journal>/``."""

    def __init__(
        self,
        store: Any,
        journal: str,
        spool: str | os.PathLike[str],
        *,
        interval_s: float = INTERVAL_S,
    ):
        self.store, self.journal, self.spool = store, journal, Path(spool)
        self.interval_s = interval_s
        self.shipped = 0
        self._logs: list[AuditLog] = []
        self._pending: list[Path] = []  # closed, not shipped yet
        self._lock = threading.Lock()  # one ship pass at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def describe(self) -> str:
        return f"{self.store.url.rstrip('/')}/{layout.JOURNAL}/{self.journal}"

    def log(self, kind: str, *, sync: bool = False) -> AuditLog:
        """A log of ``kind`` in the spool whose segments this shipper closes and ships."""
        audit_log = AuditLog(self.spool, kind, sync=sync, segment_bytes=SEGMENT_BYTES)
        self._logs.append(audit_log)
        return audit_log

    def _dest(self, kind: str, name: str) -> str:
        return self.store.path(f"{layout.shipped_dir(self.journal, kind)}/{name}")

    def _ship(self, path: Path) -> bool:
        """Ship one closed segment (its whole lines) and remove it from the spool."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return False  # shipped and removed by another process adopting it
        data = data[: data.rfind(b"\n") + 1]  # a torn tail was never acknowledged
        if data:
            _put(self.store, self._dest(path.parent.name, path.name), data)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return bool(data)

    def _ship_all(self, paths: Iterable[Path]) -> list[Path]:
        """Ship each; returns those that failed (kept for the next pass)."""
        failed = []
        for path in paths:
            try:
                self.shipped += self._ship(path)
            except Exception as err:  # fsspec backends raise their own types; retried next pass
                log.warning("cannot ship %s to %s: %s", path, self.describe(), err)
                failed.append(path)
        return failed

    def flush(self) -> int:
        """Close every log's segment and ship all closed ones; returns how many were shipped."""
        with self._lock:
            before = self.shipped
            for audit_log in self._logs:
                self._pending.extend(audit_log.rotate())
            self._pending = self._ship_all(self._pending)
            return self.shipped - before

    def adopt(self) -> int:
        """Ship the segments left in the spool by writers that are gone; returns how many."""
        with self._lock:
            before = self.shipped
            mine = {p.name for p in self._pending}
            mine |= {p.name for p in (a.mine() for a in self._logs) if p is not None}
            orphans = [
                path
                for kind in KINDS
                for path in files(self.spool, kind)
                if path.name not in mine and _orphan(path)
            ]
            self._pending.extend(self._ship_all(orphans))
            return self.shipped - before

    def start(self) -> None:
        """Ship every ``interval_s`` seconds on a daemon thread, until :meth:`stop`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="pipeflow-ship", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()

    def stop(self) -> int:
        """Stop the timer, close the logs and ship what is left (a clean shutdown)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        return self.flush()


def append_and_ship(
    store: Any,
    journal: str,
    kind: str,
    records: list[dict[str, Any]],
    *,
    local: str | os.PathLike[str] | None = None,
) -> None:
    """Append ``records`` as a short-lived writer: in a local store's journal folder as before;
    for a remote store, in the spool, then the segment is shipped at once (left in the spool if
    the store cannot be reached, for the next writer on that spool, once this process is gone)."""
    folder = Path(local) if local is not None else layout.journal_dir(store.url, journal)
    if store.is_local:
        audit_log = AuditLog(folder, kind)
        try:
            audit_log.append(records)
        finally:
            audit_log.close()
        return
    shipper = Shipper(store, journal, folder)
    shipper.log(kind).append(records)
    shipper.flush()
    shipper.adopt()  # and what an earlier writer that is gone could not ship


class Journal:
    """One journal's records as a union: a local folder and, for a remote store, the segments
    shipped to it (see the module docstring)."""

    def __init__(
        self,
        local: str | os.PathLike[str] | None,
        store: Any,
        journal: str,
        *,
        remember: bool = False,
    ):
        self.local = Path(local) if local is not None else None
        self.store = store
        self.journal = journal
        self.remember = remember
        self._records: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._root_seen = False

    def describe(self) -> str:
        where = [str(self.local)] if self.local is not None else []
        if self.store is not None and (not self.store.is_local or not where):
            where.append(f"{self.store.url.rstrip('/')}/{layout.JOURNAL}/{self.journal}")
        return " and ".join(where) or "nowhere"

    def _folder(self, kind: str) -> str:
        return self.store.path(layout.shipped_dir(self.journal, kind))

    def shipped(self, kind: str) -> list[str]:
        """The names of the shipped segments of ``kind``, sorted (none when nothing was shipped
        yet; a store that cannot be listed is an error)."""
        if self.store is None:
            return []
        folder = self._folder(kind)
        fs = self.store.fs
        try:
            fs.invalidate_cache(folder)  # s3fs caches listings: a long-lived reader must not
            found = fs.ls(folder, detail=False)
        except FileNotFoundError:
            self._check_root()  # nothing shipped yet, or no store at all (no bucket)?
            return []
        except Exception as err:  # fsspec backends raise their own types
            raise StoreError(f"cannot list the journal at {folder}: {_reason(err)}") from None
        names = (str(p).rstrip("/").rsplit("/", 1)[-1] for p in found)
        return sorted(n for n in names if n.endswith(".jsonl"))

    def _check_root(self) -> None:
        """An empty journal only where the store itself is there: a missing bucket or root is an
        error, never "no records"."""
        if self._root_seen:
            return
        root = self.store.root
        try:
            there = self.store.fs.isdir(root) or bool(self.store.fs.ls(root, detail=False))
        except FileNotFoundError:
            there = False
        except Exception as err:
            raise StoreError(f"cannot read the store {self.store.url}: {_reason(err)}") from None
        if not there:
            raise StoreError(
                f"cannot read the journal: no store at {self.store.url} (check the URL, the "
                "bucket and the endpoint)"
            )
        self._root_seen = True

    def _fetch(self, kind: str, name: str) -> bytes:
        path = f"{self._folder(kind)}/{name}"
        try:
            return bytes(self.store.fs.cat_file(path))
        except FileNotFoundError:
            raise  # an empty segment removed from a spool unshipped: nothing to read
        except Exception as err:
            raise StoreError(f"cannot read the journal segment {path}: {_reason(err)}") from None

    def segments(self, kind: str) -> list[Segment]:
        local = files(self.local, kind) if self.local is not None else []
        fetch = None if self.store is None else partial(self._fetch, kind)
        out = [Segment(p.name, p, partial(fetch, p.name) if fetch else None) for p in local]
        seen = {p.name for p in local}
        if fetch is not None:
            out += [
                Segment(n, None, partial(fetch, n)) for n in self.shipped(kind) if n not in seen
            ]
        return out

    def read(self, kind: str) -> Iterator[dict[str, Any]]:
        """Every whole record of ``kind`` (a shipped segment parsed once when remembering)."""
        segments = self.segments(kind)
        if self.remember:
            names = {s.name for s in segments}
            for key in [k for k in self._records if k[0] == kind and k[1] not in names]:
                del self._records[key]  # a segment no longer listed
        for segment in segments:
            if not self.remember or segment.path is not None:
                yield from parse(segment.lines())
                continue
            key = (kind, segment.name)
            if key not in self._records:
                self._records[key] = list(parse(segment.lines()))
            yield from self._records[key]


def _reason(err: BaseException) -> str:
    return getattr(err, "strerror", None) or str(err) or type(err).__name__


def open_journal(
    store: Any,
    journal: str = layout.AUDIT,
    local: str | os.PathLike[str] | None = None,
    *,
    remember: bool = False,
) -> Journal:
    """The journal ``journal`` of ``store`` as this machine sees it: ``local`` (default: the
    local store's folder, or this machine's spool of a remote store) and what was shipped to
    ``<store>/journal/`` (nothing, in a local store: its writers append in place)."""
    folder = Path(local) if local is not None else layout.journal_dir(store.url, journal)
    return Journal(folder, store, journal, remember=remember)
