"""The watch lease: at most one ``pipeflow watch`` of a pipeline acts on a store at a time.

Two watchers of one pipeline (a laptop and a server, or two replicas of a deployment) must not
both retrain on one trigger. The run lock (:mod:`pipeflow.runner.lock`) only stops the same
resolved spec running twice *at once*; a watcher that checks its triggers just after another's
run would retrain again. So a watcher acts (checks triggers and starts runs) only while it holds
the lease of its pipeline on the store; the others stand by and take over when the holder is gone.

**The lease is a chain of generations**, ``leases/<pipeline>/<generation>.json`` (twelve digits,
so names sort as numbers), each ``{holder, host, pid, acquired, expires, released, ...}``. The
newest generation is the lease. It is written only by :meth:`ArtifactStore.create_exclusive`,
never overwritten and never deleted-then-recreated:

- *take* (or *renew*): read the newest generation ``g``; if it is ours, released, or expired
  (``now > expires``), create ``g + 1`` naming us, exclusively. Exactly one contender can create
  ``g + 1``, so two watchers that both judged ``g`` stale cannot both win: the loser's create
  fails and it reads the winner's fresh generation. The holder renews the same way, so a holder
  whose lease a contender took over learns it at its next renewal, whose create fails;
- *release* (a watcher that stops): create ``g + 1`` marked ``released``: the next contender
  takes over at once instead of waiting for expiry.

Why not one lease file, deleted when stale and created again? Between A's delete and A's create,
B (which judged the same file stale) may delete A's fresh lease and create its own: both hold it.
Renaming aside and comparing (the run lock's reclaim) closes that on a local disk, but object
stores have no rename; an exclusive create of the next name needs nothing else.

**Old generations** are removed by the holder after each renewal (all but the two newest). A
contender that read an old newest generation, stalled, and then creates a removed name would
succeed; so a create only counts if, listed afterwards, it is the newest generation. The
holder's generations are created before older ones are removed, so such a contender always sees
the newer one and backs off.

**Time.** A holder renews every third of the lease period (``ttl``, ``pipeflow watch --lease``,
default 60 s) from a background thread, also while a run goes on; a killed holder's lease is
taken over once ``expires`` has passed (by the reader's clock: hosts' clocks must agree to well
within two thirds of ``ttl``). A holder that stalled longer than ``ttl`` (a frozen VM) may find
at its next renewal that another took over; a run it had started goes on, and the run lock still
keeps the same spec from running twice at once. With an object-store root, the guarantee is that
of ``create_exclusive`` on that store (a conditional write on S3).

Each generation also carries ``watched_until``, the last time its holder checked the triggers: a
watcher that takes over counts a schedule slot from there, so slots the dead holder had already
handled are not fired again and those after its last check are not lost.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from pipeflow.errors import StoreError
from pipeflow.store import layout
from pipeflow.store.artifacts import ArtifactStore

log = logging.getLogger("pipeflow.watch")

#: default lease period, seconds
DEFAULT_TTL = 60.0
_WIDTH = 12


class Lease:
    """The lease ``name`` (a pipeline) on ``store`` for one holder; see the module docstring.

    ``note()`` adds fields to every generation this holder writes (``watched_until``)."""

    def __init__(
        self,
        store: ArtifactStore,
        name: str,
        *,
        ttl: float = DEFAULT_TTL,
        note: Callable[[], dict[str, Any]] | None = None,
        clock: Callable[[], float] = time.time,
    ):
        if ttl <= 0:
            raise ValueError(f"lease period must be positive, got {ttl}")
        self.store, self.name, self.ttl = store, name, ttl
        self.folder = layout.lease_dir(name)
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._note, self._clock = note, clock
        self._lock = threading.Lock()
        self.generation: int | None = None  # ours, while held
        self.expires = 0.0
        #: the generation before ours when we took the lease (None if we created the first)
        self.previous: dict[str, Any] | None = None
        #: the newest generation seen when the lease was refused (who holds it)
        self.seen: dict[str, Any] | None = None

    @property
    def held(self) -> bool:
        return self.generation is not None and self._clock() < self.expires

    # -- the chain ---------------------------------------------------------------------------
    def _generations(self) -> list[int]:
        names = self.store.list_names(self.folder)
        return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())

    def _rel(self, generation: int) -> str:
        return f"{self.folder}/{generation:0{_WIDTH}d}.json"

    def newest(self) -> tuple[int, dict[str, Any] | None]:
        """(generation, record) of the newest generation; (0, None) when there is none."""
        for _ in range(20):
            gens = self._generations()
            if not gens:
                return 0, None
            raw = self.store.read_text(self._rel(gens[-1]))
            if raw is None:
                continue  # removed between listing and reading: list again
            try:
                return gens[-1], json.loads(raw)
            except ValueError:
                raise StoreError(
                    f"lease {self.store.path(self._rel(gens[-1]))} is unreadable: remove "
                    f"{self.store.path(self.folder)} if no watcher of '{self.name}' runs"
                ) from None
        raise StoreError(f"cannot read lease {self.store.path(self.folder)}: it keeps changing")

    # -- take, renew, release ---------------------------------------------------------------
    def acquire(self) -> bool:
        """Take the lease, or renew it if ours; whether we hold it now."""
        with self._lock:
            for _ in range(20):
                now = self._clock()
                gen, record = self.newest()
                ours = record is not None and record.get("holder") == self.holder
                free = (
                    record is None
                    or ours
                    or bool(record.get("released"))
                    or now > float(record.get("expires", 0))
                )
                if not free:
                    self.seen, self.generation = record, None
                    return False
                data = self._record(now, released=False)
                if not self.store.create_exclusive(self._rel(gen + 1), data):
                    continue  # a contender created gen + 1 first: read it
                if self._generations()[-1] != gen + 1:
                    # we re-created a removed old name (we had stalled): ours is not the lease
                    with contextlib.suppress(Exception):
                        self.store.fs.rm_file(self.store.path(self._rel(gen + 1)))
                    continue
                if not ours:
                    self.previous = record
                self.generation, self.expires = gen + 1, now + self.ttl
                self._prune(gen + 1)
                return True
            return False

    def release(self) -> None:
        """Give the lease up (if still ours), so another watcher takes it at once. Never raises."""
        with self._lock, contextlib.suppress(Exception):
            if self.generation is None:
                return
            gen, record = self.newest()
            if record is not None and record.get("holder") == self.holder:
                self.store.create_exclusive(self._rel(gen + 1), self._record(self._clock(), True))
            self.generation = None

    def _record(self, now: float, released: bool) -> bytes:
        record = {
            "holder": self.holder,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "acquired": now,
            "expires": now if released else now + self.ttl,
            "ttl": self.ttl,
            "released": released,
            **(self._note() if self._note is not None else {}),
        }
        return json.dumps(record, sort_keys=True).encode()

    def _prune(self, current: int) -> None:
        for gen in self._generations():
            if gen >= current - 1:
                break
            with contextlib.suppress(Exception):
                self.store.fs.rm_file(self.store.path(self._rel(gen)))

    # -- while the watcher lives ------------------------------------------------------------
    @contextlib.contextmanager
    def kept(self) -> Iterator[Lease]:
        """Renew the lease (when held) every third of its period from a background thread, and
        release it when the block ends."""
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(self.ttl / 3):
                if self.generation is None:
                    continue
                try:
                    if not self.acquire():
                        log.warning(
                            "%s: the watch lease was taken over by %s",
                            self.name,
                            (self.seen or {}).get("holder", "another watcher"),
                        )
                except Exception as err:  # a store hiccup: the next turn tries again
                    log.warning("%s: renewing the watch lease failed: %s", self.name, err)

        thread = threading.Thread(target=renew, name="pipeflow-lease", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join(timeout=5)
            self.release()


def describe(record: dict[str, Any] | None, clock: Callable[[], float] = time.time) -> str:
    """Who holds a lease generation, for messages."""
    if not record:
        return "nobody"
    left = float(record.get("expires", 0)) - clock()
    return f"{record.get('holder', '?')} (expires in {max(left, 0):.0f} s)"


__all__ = ["DEFAULT_TTL", "Lease", "describe"]
