"""The run lock of one resolved spec on one store.

While a run executes it holds ``locks/<pipeline>-<digest12>.lock`` in the store (the
digest is the resolved spec's, so the same file with different ``--set`` overrides runs
concurrently, but the same resolved spec twice does not: two runs would compute and record the
same stages at once). The lock is created exclusively (:meth:`ArtifactStore.create_exclusive`),
holds ``{pid, host, started, run_id}`` and is removed when the run ends. A second run fails at
once with :class:`~pipeflow.errors.RunLocked` naming the holder. A lock whose process is gone
(same host, pid no longer running, or reused by a process started later) is stale and reclaimed
automatically; a lock held on another host is never guessed about (the message says which file
to remove). The create is atomic on local and network file systems (a hard link) and on S3 (a
conditional write); on object stores without one (``gs://``, ``az://``) it is check-then-write,
so there the lock is advisory: it stops the common mistake, not a race. Reclaiming a stale lock
on any object store is remove-then-create, so two processes reclaiming the same stale lock at
the same instant could both go on (stale locks are judged on their own host only).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from pipeflow.errors import RunLocked, StoreError
from pipeflow.store import layout
from pipeflow.store.artifacts import ArtifactStore


def lock_name(pipeline: str, digest: str) -> str:
    """The lock of one resolved spec, relative to the store root."""
    return layout.lock_path(pipeline, digest)


@contextlib.contextmanager
def run_lock(
    store: ArtifactStore, pipeline: str, digest: str, run_id: str, *, spec: str = ""
) -> Iterator[dict[str, Any]]:
    """Hold the run lock of ``pipeline`` at spec ``digest`` for the duration of the block.

    Raises :class:`~pipeflow.errors.RunLocked` at once if a live process holds it; reclaims it
    if the holder is gone."""
    rel = lock_name(pipeline, digest)
    pid = os.getpid()
    info = {
        "pipeline": pipeline,
        "digest": digest,
        "run_id": run_id,
        "spec": spec,
        "pid": pid,
        "pid_start": _process_start(pid),
        "host": socket.gethostname(),
        "started": time.time(),
    }
    _acquire(store, rel, json.dumps(info, sort_keys=True).encode(), pipeline)
    try:
        yield info
    finally:
        _release(store, rel, run_id)


def read_holder(store: ArtifactStore, rel: str, advice: str) -> tuple[str, dict[str, Any]] | None:
    """The lock file ``rel`` as (text, holder with an int ``pid``), None if it is gone;
    StoreError if it cannot be read as a lock, ending with ``advice`` (what to do about it)."""
    raw = store.read_text(rel)
    if raw is None:
        return None
    try:
        holder = json.loads(raw)
        holder["pid"] = int(holder["pid"])
    except (ValueError, KeyError, TypeError):
        raise StoreError(f"run lock {store.path(rel)} is unreadable: {advice}") from None
    return raw, holder


def _acquire(store: ArtifactStore, rel: str, data: bytes, pipeline: str) -> None:
    for _ in range(50):  # each turn either wins, raises, or sees a contender make progress
        if store.create_exclusive(rel, data):
            return
        found = read_holder(
            store, rel, f"remove it if no run of pipeline '{pipeline}' is in progress"
        )
        if found is None:
            continue  # released between our attempt and our look
        raw, holder = found
        if holder_alive(holder):
            raise RunLocked(_locked_message(store, rel, pipeline, holder), holder)
        _reclaim(store, rel, raw)
    raise StoreError(f"cannot take the run lock {store.path(rel)}: too many contenders")


def _release(store: ArtifactStore, rel: str, run_id: str) -> None:
    """Remove the lock if it is still ours. Never raises: a lock left behind by a failure here
    is stale once this process exits, and the next run reclaims it."""
    with contextlib.suppress(Exception):
        raw = store.read_text(rel)
        if raw is not None and json.loads(raw).get("run_id") == run_id:
            store.delete([store.path(rel)])


def _reclaim(store: ArtifactStore, rel: str, stale: str) -> None:
    """Remove a stale lock. Locally it is first renamed aside, then compared with what was judged
    stale: if a contender reclaimed it in between, what was moved is that contender's live lock,
    and it is put back. Elsewhere (object stores) it is simply removed: advisory, see above."""
    path = store.path(rel)
    if not store.is_local:
        with contextlib.suppress(FileNotFoundError):
            store.fs.rm_file(path)
        return
    aside = os.path.join(store.root, layout.TMP, f"{uuid.uuid4().hex}.stale-lock")
    try:
        os.makedirs(os.path.dirname(aside), exist_ok=True)
        os.rename(path, aside)
    except FileNotFoundError:
        return  # a contender removed it first
    except OSError as err:
        raise StoreError(f"cannot remove stale run lock {path}: {err.strerror or err}") from None
    try:
        with open(aside, encoding="utf-8") as fh:
            moved = fh.read()
        if moved != stale:
            with contextlib.suppress(FileExistsError):
                os.link(aside, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(aside)


def holder_alive(holder: Mapping[str, Any]) -> bool:
    """Whether the process named in a lock may still be running. Another host's process cannot
    be checked, so it counts as running."""
    if holder.get("host") != socket.gethostname():
        return True
    pid = int(holder["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    state, started = _proc_stat(pid)
    if state == "Z":
        return False  # exited, not yet reaped by its parent
    recorded = holder.get("pid_start")
    # the pid was reused by a process started after the holder
    return not (recorded is not None and started is not None and started != recorded)


def _process_start(pid: int) -> int | None:
    return _proc_stat(pid)[1]


def _proc_stat(pid: int) -> tuple[str | None, int | None]:
    """(state, start time in clock ticks since boot) from /proc; (None, None) where unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            text = fh.read()
        fields = text[text.rindex(")") + 2 :].split()
        return fields[0], int(fields[19])
    except (OSError, ValueError, IndexError):
        return None, None


def _locked_message(
    store: ArtifactStore, rel: str, pipeline: str, holder: Mapping[str, Any]
) -> str:
    try:
        since = dt.datetime.fromtimestamp(float(holder["started"])).strftime("%Y-%m-%d %H:%M:%S")
    except (KeyError, TypeError, ValueError, OverflowError):
        since = "an unknown time"
    path = store.path(rel)
    if holder.get("host") == socket.gethostname():
        hint = "wait for it to finish or stop it (a lock left by a process that died is reclaimed automatically)"
    else:
        hint = f"wait for it to finish; if that process is gone, remove {path}"
    return (
        f"pipeline '{pipeline}' is already running with this spec on this store "
        f"(run {holder.get('run_id', '?')}, pid {holder['pid']} on host {holder.get('host', '?')}, "
        f"started {since}; lock {path}): {hint}"
    )
