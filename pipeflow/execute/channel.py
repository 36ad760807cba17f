"""How live updates of running stages reach the client, on each of the four executors.

A stage's :class:`~pipeflow.core.progress.StageMonitor` sends each update (a plain list, see
:class:`~pipeflow.core.progress.Update`) through the ``progress`` sender its task carries;
:func:`open_channel` makes that sender for an executor kind and hands every update that arrives
to ``deliver`` on the client:

- ``sync``, ``threads``: the stage runs in this process: the sender calls ``deliver`` directly,
  on the stage's thread;
- ``processes``: a :mod:`multiprocessing.connection` listener on 127.0.0.1 (a random port and a
  random authentication key); each stage's sender connects to it once, from its worker process,
  and a thread per connection here reads its updates (no extra process, nothing to pickle but
  the address and key);
- ``distributed``: workers may be on other machines: the sender publishes to the cluster's
  event log under a topic of this run (:func:`pipeflow.execute.cluster.publish`), to which the
  client subscribes.

``deliver`` is therefore called from threads other than the caller's: it must be thread-safe
(the CLI's display is). Updates are best effort: a sender that cannot reach the client drops
them (the stage goes on); they are never needed to record the run.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Callable, Iterator
from typing import Any

from pipeflow.core.progress import Update
from pipeflow.execute import cluster

Deliver = Callable[[Update], None]


class _Direct:
    """The sender of an in-process stage: calls ``deliver`` (never pickled)."""

    def __init__(self, deliver: Deliver) -> None:
        self._deliver = deliver

    def __call__(self, message: list[Any]) -> None:
        self._deliver(Update.from_list(message))


class _Connection:
    """The sender of a stage in a worker process: one connection to the client's listener,
    opened on first use (pickled as the address and key only)."""

    def __init__(self, address: tuple[str, int], authkey: bytes) -> None:
        self.address, self.authkey = address, authkey
        self._conn: Any = None
        self._lock = threading.Lock()
        self._broken = False

    def __getstate__(self) -> dict[str, Any]:
        return {"address": self.address, "authkey": self.authkey}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["address"], state["authkey"])  # type: ignore[misc]

    def __call__(self, message: list[Any]) -> None:
        from multiprocessing.connection import Client

        with self._lock:
            if self._broken:
                return
            try:
                if self._conn is None:
                    self._conn = Client(self.address, authkey=self.authkey)
                self._conn.send(message)
            except (OSError, EOFError, ValueError):
                self._broken = True  # the client went away: the stage goes on unwatched

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            if self._conn is not None:
                self._conn.close()


class _Published:
    """The sender of a stage on a cluster: the run's topic in the event log."""

    def __init__(self, topic: str) -> None:
        self.topic = topic

    def __call__(self, message: list[Any]) -> None:
        cluster.publish(self.topic, message)


@contextlib.contextmanager
def open_channel(kind: str, deliver: Deliver, client: Any = None) -> Iterator[Any]:
    """The sender stage tasks of executor ``kind`` carry, for the block (module docstring)."""
    if kind in ("sync", "threads"):
        yield _Direct(deliver)
    elif kind == "processes":
        with _listening(deliver) as sender:
            yield sender
    else:
        topic = f"pipeflow-progress-{secrets.token_hex(8)}"

        def received(message: Any) -> None:
            with contextlib.suppress(Exception):
                deliver(Update.from_list(message))

        cluster.subscribe(client, topic, received)
        try:
            yield _Published(topic)
        finally:
            cluster.unsubscribe(client, topic)


@contextlib.contextmanager
def _listening(deliver: Deliver) -> Iterator[_Connection]:
    from multiprocessing.connection import Client, Listener

    authkey = secrets.token_bytes(32)
    listener = Listener(("127.0.0.1", 0), authkey=authkey)
    stopping = threading.Event()

    def read(conn: Any) -> None:
        with conn:
            while True:
                try:
                    message = conn.recv()
                except (EOFError, OSError):
                    return
                with contextlib.suppress(Exception):
                    deliver(Update.from_list(message))

    def accept() -> None:
        while not stopping.is_set():
            try:
                conn = listener.accept()
            except Exception:  # a peer without the key, or the listener closed
                if stopping.is_set():
                    return
                continue
            threading.Thread(
                target=read, args=(conn,), name="pipeflow-progress", daemon=True
            ).start()

    acceptor = threading.Thread(target=accept, name="pipeflow-progress-accept", daemon=True)
    acceptor.start()
    try:
        yield _Connection(listener.address, authkey)
    finally:
        stopping.set()
        with contextlib.suppress(Exception):  # wake accept() so the thread ends
            Client(listener.address, authkey=authkey).close()
        listener.close()
        acceptor.join(timeout=2)
