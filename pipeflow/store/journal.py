"""The audit trail: append-only JSON lines that survive a crash of the writer.

Policy, and why:

- **One file per writer process** (``<folder>/<kind>/<host>-<pid>-<token>.jsonl``): several server
  workers never interleave bytes in one file, and no lock is needed. A writer whose journal is
  shipped (a remote store, :mod:`pipeflow.store.shipping`) closes its file now and then
  (:meth:`AuditLog.rotate`: on a timer, or at ``segment_bytes``) and goes on in a new one; each
  file is then a *segment*, and a closed one is never written again. ``<token>`` is 16 random hex
  digits per segment, so names never collide across machines, processes or restarts.
- **A batch of records is one ``write()`` on an ``O_APPEND`` descriptor**, done *before* the client
  gets its answer. SIGKILL cannot split a ``write()`` to a local file (the signal is acted on when
  the system call returns), so every acknowledged prediction is in the file, whole. ``sync=True``
  adds an ``fsync`` per batch for power loss, at a cost in latency.
- **Readers skip a line without its newline** (a torn write after a power cut or a full disk), and
  :func:`repair` trims such a tail before a writer reuses nothing: files are never reopened for
  writing, so a torn tail can only be at the end of a dead writer's file.
- Records are plain JSON objects; each has ``id`` and ``time``. Kinds: ``predictions``,
  ``feedback``, ``batches`` (one record per batch-inference job), ``events`` (canary and reload),
  ``shadow`` (a shadow version's predictions, :mod:`pipeflow.serving.shadow`).
- **A served request is one record** in ``predictions`` (since issue 20; a journal written before
  holds a record per row, and both read the same): its rows' ``ids`` (a list; ``id`` is the
  first), ``rows``, ``inputs`` as columns (``{feature: [values]}``, numbers as the float64 the
  model saw, ``null`` for a missing one), ``output`` and ``flags`` as lists (``flags`` null when
  no row is flagged), ``probabilities`` as ``{class: [p]}`` or null, and the request's ``time``,
  ``model``, ``version``, ``role``, ``route``, ``caller`` and ``latency_ms``. Writing 31 feature
  names once per request instead of once per row is most of the serving throughput on large
  requests. :func:`parse` and :func:`read` hand readers one record per row whatever the format
  (:func:`rows_of`); an incremental reader (:class:`Follower`) gets the records as written, and
  counts a request's rows with :func:`row_count`. A request that asked for explanations
  (``?explain=true``) also holds ``explanation``: ``method``, ``output`` (and ``evaluations``)
  once, ``base`` and ``class`` as lists, ``contributions`` as ``{feature: [values]}``; its rows
  read back each with its own ``explanation`` (``contributions`` as ``{feature: value}``). A
  record without it (every record before explanations existed) reads as it always did.
- **Readers see segments** (:class:`Segment`, :func:`segments`): of a local folder here, or of a
  :class:`pipeflow.store.shipping.Journal` (a spool and the store's shipped copy, as one union).
  :func:`read`, :func:`find` and :func:`files` take either.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import socket
import threading
from collections.abc import Callable, Container, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO


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


KINDS = ("predictions", "feedback", "batches", "events", "alerts", "shadow")


class AuditLog:
    """Appends records of one kind to this process's own file under ``folder``."""

    def __init__(
        self,
        folder: str | os.PathLike[str],
        kind: str = "predictions",
        *,
        sync: bool = False,
        segment_bytes: int | None = None,
    ):
        if kind not in KINDS:
            raise ValueError(f"unknown audit kind {kind!r}; known: {', '.join(KINDS)}")
        self.folder = Path(folder) / kind
        self.kind = kind
        self.sync = sync
        #: close the segment once it holds this many bytes (None: one file for the process)
        self.segment_bytes = segment_bytes
        self._fd: int | None = None
        self._pid = 0
        self._written = 0
        self._closed: list[Path] = []
        #: the names of every segment this log has opened (a reader of the whole journal can
        #: tell this writer's own records from the others', see pipeflow.serving.fleet)
        self.names: set[str] = set()
        self._lock = threading.Lock()

    @property
    def path(self) -> Path | None:
        return getattr(self, "_path", None)

    def _open(self) -> int:
        pid = os.getpid()
        if self._fd is None or self._pid != pid:  # a forked worker gets its own file
            self.folder.mkdir(parents=True, exist_ok=True)
            self._path = self.folder / segment_name()
            self.names.add(self._path.name)
            self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self._pid, self._written = pid, 0
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
            self._written += len(data)
            if self.segment_bytes is not None and self._written >= self.segment_bytes:
                self._close_segment()

    def _close_segment(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
            if self._written:
                self._closed.append(self._path)
            else:  # nothing in it: no segment to ship
                with contextlib.suppress(OSError):
                    os.unlink(self._path)
        self._fd = None

    def rotate(self) -> list[Path]:
        """Close the current segment (the next append starts a new one) and hand over every
        segment closed since the last call, oldest first: each is whole and never written again."""
        with self._lock:
            self._close_segment()
            closed, self._closed = self._closed, []
            return closed

    def mine(self) -> Path | None:
        """The segment this process is appending to, if any (never shipped while open)."""
        with self._lock:
            return self._path if self._fd is not None and self._pid == os.getpid() else None

    def close(self) -> None:
        with self._lock:
            self._close_segment()


def segment_name() -> str:
    """A new segment's file name: ``<host>-<pid>-<16 hex digits>.jsonl``, unique everywhere."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(8)}.jsonl"


@dataclass(frozen=True)
class Segment:
    """One journal file: a local one (``path``), a shipped one (``fetch`` reads it), or one in a
    spool that may be shipped and removed while it is read (both: ``fetch`` is the fallback)."""

    name: str
    path: Path | None = None
    fetch: Callable[[], bytes] | None = None

    def read_bytes(self) -> bytes:
        if self.path is not None:
            try:
                return self.path.read_bytes()
            except FileNotFoundError:
                if self.fetch is None:
                    raise
        assert self.fetch is not None
        return self.fetch()

    def open(self) -> BinaryIO:
        """A binary file object: the local file itself where it is still there."""
        if self.path is not None:
            try:
                return open(self.path, "rb")
            except FileNotFoundError:
                if self.fetch is None:
                    raise
        return io.BytesIO(self.read_bytes())

    def lines(self) -> Iterator[bytes]:
        """The whole lines (a torn tail, never acknowledged, is left out)."""
        try:
            with self.open() as fh:
                for line in fh:
                    if not line.endswith(b"\n"):
                        break
                    yield line
        except FileNotFoundError:
            return  # a local segment removed between listing and reading, with no other copy


#: a local folder of a journal, or a :class:`pipeflow.store.shipping.Journal` (anything with
#: ``segments(kind)`` and ``describe()``)
Where = Any


def files(folder: str | os.PathLike[str], kind: str) -> list[Path]:
    """The local files of ``kind`` under ``folder``."""
    where = Path(folder) / kind
    return sorted(where.glob("*.jsonl")) if where.is_dir() else []


def segments(where: Where, kind: str) -> list[Segment]:
    """The segments of ``kind``: the files of a local folder, or a journal's union."""
    if hasattr(where, "segments"):
        return list(where.segments(kind))
    return [Segment(p.name, p) for p in files(where, kind)]


def describe(where: Where) -> str:
    """Where a journal is, for messages."""
    return where.describe() if hasattr(where, "describe") else str(where)


def read(where: Where, kind: str = "predictions") -> Iterator[dict[str, Any]]:
    """Every whole record of ``kind``, segment by segment (unordered across segments)."""
    if hasattr(where, "read"):
        yield from where.read(kind)
        return
    for segment in segments(where, kind):
        yield from parse(segment.lines())


def parse(lines: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """The JSON records of whole lines, a request's record as one record per row (:func:`rows_of`;
    a line that does not parse is skipped)."""
    for line in lines:
        try:
            record = loads(line)
        except ValueError:
            try:  # what another writer's json module wrote (NaN, say), as read before
                record = json.loads(line)
            except ValueError:
                continue
        if isinstance(record, dict) and isinstance(record.get("ids"), list):
            yield from rows_of(record)
        else:
            yield record


def is_request(record: dict[str, Any]) -> bool:
    """Whether ``record`` is a served request's record (its rows' ``ids``, columns of inputs)."""
    return isinstance(record.get("ids"), list)


def row_count(record: dict[str, Any]) -> int:
    """The rows a record stands for: a request's ``rows``, else one."""
    ids = record.get("ids")
    return len(ids) if isinstance(ids, list) else 1


def _column(value: Any, n: int) -> list[Any]:
    return value if isinstance(value, list) and len(value) == n else [None] * n


def rows_of(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One record per row of a request's record, as the journal held them before requests were
    written whole (``id``, ``inputs`` as an object, ``output``, ``probabilities``, ``flags``,
    and the request's fields); any other record as it is. A column missing or of the wrong
    length reads as nulls: a reader never fails on a record it can parse."""
    ids = record.get("ids")
    if not isinstance(ids, list):
        return [record]
    n = len(ids)
    shared = {
        k: v
        for k, v in record.items()
        if k
        not in ("ids", "id", "rows", "inputs", "output", "probabilities", "flags", "explanation")
    }
    inputs = record.get("inputs")
    columns = {str(k): _column(v, n) for k, v in inputs.items()} if isinstance(inputs, dict) else {}
    names = list(columns)
    values = list(zip(*columns.values(), strict=True)) if columns else [()] * n
    outputs = _column(record.get("output"), n)
    flags = _column(record.get("flags"), n)
    probabilities = record.get("probabilities")
    if isinstance(probabilities, dict):
        labels = list(probabilities)
        per_class = [_column(probabilities[c], n) for c in labels]
        probs: list[Any] = [dict(zip(labels, p, strict=True)) for p in zip(*per_class, strict=True)]
    else:
        probs = [None] * n
    out = [
        {
            "id": pid,
            **shared,
            "inputs": dict(zip(names, row, strict=True)),
            "output": outputs[i],
            "probabilities": probs[i],
            "flags": flags[i] or [],
        }
        for i, (pid, row) in enumerate(zip(ids, values, strict=True))
    ]
    explanation = record.get("explanation")
    if isinstance(explanation, dict):
        for row, one in zip(out, _explanations(explanation, n), strict=True):
            row["explanation"] = one
    return out


def _explanations(explanation: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """A request's ``explanation`` (columns) as one per row; as :func:`rows_of`, a column
    missing or of the wrong length reads as nulls."""
    head = {k: v for k, v in explanation.items() if k not in ("base", "class", "contributions")}
    base = _column(explanation.get("base"), n)
    classes = _column(explanation.get("class"), n) if "class" in explanation else None
    given = explanation.get("contributions")
    columns = {str(k): _column(v, n) for k, v in given.items()} if isinstance(given, dict) else {}
    rows = []
    for i in range(n):
        one = {**head, "base": base[i], "contributions": {k: v[i] for k, v in columns.items()}}
        if classes is not None:
            one["class"] = classes[i]
        rows.append(one)
    return rows


def fold_whole(
    lines: Iterable[bytes],
    offset: int,
    take: Callable[[Any], object],
    decode: Callable[[bytes], Any] | None = None,
) -> int:
    """Hand each record of the whole lines to ``take`` (a line that does not parse, or is not a
    JSON object, is skipped); stop at a torn last line, to be read again next time. Returns the
    offset after the last whole line: what an incremental reader (a replica's fleet view, the
    dashboard's traffic index) remembers per segment. ``decode``: what makes a line the record
    ``take`` gets, instead of a dict (a msgspec decoder of a Struct with only the fields a
    reader needs, which skips the others without building them); it raises ValueError (as
    ``msgspec.DecodeError`` does) for a line that is not such a record, which is skipped."""
    for line in lines:
        if not line.endswith(b"\n"):
            break  # not whole yet: read again next time
        offset += len(line)
        try:
            record = loads(line) if decode is None else decode(line)
        except ValueError:
            continue
        if decode is not None or isinstance(record, dict):
            take(record)
    return offset


_READ_BUFFER = 2**20


class Follower:
    """The whole records appended to one kind of a journal since the last call, segment by
    segment: a local file is read on from the offset where the last call stopped; a shipped one
    (it never changes) once, from where its spool copy was read up to. What an incremental
    reader (a replica's fleet view, the dashboard's traffic index) keeps between calls."""

    def __init__(self, where: Where, kind: str):
        self.where, self.kind = where, kind
        self.offsets: dict[str, int] = {}
        self.done: set[str] = set()  # segments read whole from the store: never again

    def follow(
        self,
        take: Callable[[str, Any], object],
        found: list[Segment] | None = None,
        skip: Callable[[], Container[str]] | None = None,
        decode: Callable[[bytes], Any] | None = None,
    ) -> None:
        """``take(segment name, record)`` for every whole record not taken before (of
        ``found``, the segments already listed, or of a fresh listing), one at a time as each
        line is read: a reader that folds them keeps no more than one line in memory.
        ``skip()``: names of segments never to read (asked after the listing, so a segment
        listed is in it if it is ever to be: a writer names its segment before creating the
        file). ``decode``: as :func:`fold_whole`'s."""
        listed = segments(self.where, self.kind) if found is None else found
        skipped = skip() if skip is not None else ()
        for segment in listed:
            if segment.name in self.done or segment.name in skipped:
                continue
            offset = self.offsets.get(segment.name, 0)

            def one(record: Any, name: str = segment.name) -> None:
                take(name, record)

            try:
                if segment.path is not None:
                    # a 1 MiB buffer: a 1000-row request's line is ~0.6 MB, and the default
                    # 8 KiB one made reading its lines a third of a replay's CPU
                    with open(segment.path, "rb", buffering=_READ_BUFFER) as fh:
                        fh.seek(offset)
                        offset = fold_whole(fh, offset, one, decode)
                else:
                    data = segment.read_bytes()
                    offset = fold_whole(io.BytesIO(data[offset:]), offset, one, decode)
                    self.done.add(segment.name)
            except FileNotFoundError:  # shipped and removed from the spool: read next time
                continue
            self.offsets[segment.name] = offset

    def new(
        self, skip: Callable[[], Container[str]] | None = None
    ) -> list[tuple[str, dict[str, Any]]]:
        """(segment name, record) of every whole record not returned before (not reading the
        segments named by ``skip()``, see :meth:`follow`)."""
        out: list[tuple[str, dict[str, Any]]] = []
        self.follow(lambda name, record: out.append((name, record)), skip=skip)
        return out


def find(where: Where, kind: str, record_id: str) -> list[dict[str, Any]]:
    """Records of ``kind`` with this ``id`` (a byte search first, so a large log is cheap)."""
    needle = json.dumps(record_id).encode()
    found = []
    for segment in segments(where, kind):
        for record in parse(line for line in segment.lines() if needle in line):
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


def default_folder(store_url: str) -> Path:
    """``<store>/audit`` for a local store; the local spool's ``audit`` for a remote one."""
    from pipeflow.store import layout

    return layout.audit_dir(store_url)
