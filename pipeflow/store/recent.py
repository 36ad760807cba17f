"""Small objects a run wrote or read, kept in memory while it runs.

A stage's output is read back by every stage that takes it. On the sync and threads executors
that reader is the process that has just written it, and each read opened the file, read it and
hashed it again: as much as a no-op stage costs, once per edge of the graph (a fan-out's source
is read once per branch, a join reads every branch).

So while a run is in progress in this process (:meth:`Recent.during`, which the runner holds
around a run), an artifact of at most :attr:`Recent.max_object` bytes that the store saved, or
loaded and verified (``ArtifactStore.save`` / ``load``), is kept, up to :attr:`Recent.max_total`
bytes in all (the oldest go first), and loading it again is answered from memory. Those bytes
are the ones whose sha256 names the object, so a reader gets exactly what verifying the file
would have let through; it decodes its own copy of the value, as before. Outside a run nothing
is kept and every read goes to the store and is verified (a store changed between two runs in
one process is seen as it is). Raw bytes (``put`` / ``get``: the code bundle a remote worker
fetches, registry files) are never kept, and workers in other processes (the processes and
distributed executors) hold no run and keep nothing.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator


class Recent:
    """The objects kept while runs are in progress (any number of them, from any thread)."""

    #: larger objects are read from the store (a table or a model: reading is not what costs)
    max_object = 64 * 1024
    max_total = 16 * 1024 * 1024

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs = 0
        self._kept: dict[str, bytes] = {}
        self._size = 0

    @contextlib.contextmanager
    def during(self) -> Iterator[None]:
        """Keep objects for the ``with`` block (a run); forgotten when the last block ends."""
        with self._lock:
            self._runs += 1
        try:
            yield
        finally:
            with self._lock:
                self._runs -= 1
                if not self._runs:
                    self._kept, self._size = {}, 0

    def get(self, digest: str) -> bytes | None:
        """The bytes of object ``digest`` if kept (verified when they were kept)."""
        return self._kept.get(digest)

    def fetch(self, digest: str, read: Callable[[str], bytes]) -> bytes:
        """The bytes of object ``digest``: kept ones, else ``read(digest)`` (which verifies
        them), kept from now on."""
        data = self._kept.get(digest)
        if data is None:
            data = read(digest)
            self.keep(digest, data)
        return data

    def keep(self, digest: str, data: bytes) -> None:
        """Keep ``data``, whose sha256 is ``digest``, if a run is in progress and it is small."""
        if not self._runs or len(data) > self.max_object or type(data) is not bytes:
            return
        with self._lock:
            if not self._runs or digest in self._kept:
                return
            self._kept[digest] = data
            self._size += len(data)
            while self._size > self.max_total:
                self._size -= len(self._kept.pop(next(iter(self._kept))))
