"""Every sub-path of a store, named in one table.

A store is one root (a local folder or any fsspec URL) shared by everything that works on one
project: the runner, the registry, the server, monitoring, ``watch`` and the dashboard. Each of
them finds its part of the store through the names and functions here, never by spelling a
folder itself, so the layout can be read (and changed) in one place::

    <root>/
      objects/ab/cdef...            artifact bytes by sha256          store.artifacts
      cache/ab/<key>.json           stage-result manifests            store.artifacts
      cache/batches/*.jsonl         manifests of short stages         store.artifacts
      tmp/<uuid>                    writes in progress, never read    store.artifacts
      registry/<model>/versions/    model versions (N.json)           registry
      registry/<model>/aliases/     alias moves                       registry
      locks/<pipeline>-<d12>.lock   the run lock of a pipeline        runner.session
      leases/<pipeline>/<gen>.json  the lease of ``pipeflow watch``   runner.lease
      audit/                        serving journal: predictions,     store.journal
                                    feedback, batches, events
      monitoring/<model>/reports/   monitoring reports                monitoring.history
      monitoring/alerts*.jsonl      the alert journal                 monitoring.history
      monitoring/alerts/state.json  alert de-duplication state        monitoring.alerts
      watch/                        ``pipeflow watch`` events         runner.watch
      pipeflow.db                   metadata (SQLite) of a local      store.metadata
                                    store opened without a spec

The journals (audit, monitoring, watch) are append-only files on a local disk; for a remote
store they have no default folder (the functions return None) and a folder is given explicitly
(``--audit-dir``). This module is pure: names and path arithmetic, no I/O.
"""

from __future__ import annotations

import os
from pathlib import Path

OBJECTS = "objects"
CACHE = "cache"
CACHE_BATCHES = "cache/batches"
TMP = "tmp"
REGISTRY = "registry"
LOCKS = "locks"
LEASES = "leases"
AUDIT = "audit"
MONITORING = "monitoring"
WATCH = "watch"
METADATA_FILE = "pipeflow.db"
#: the default store of a project: this folder beside the spec, or in the working directory
DEFAULT_ROOT = ".pipeflow"


def is_local(url: str | os.PathLike[str]) -> bool:
    """A plain path or ``file://`` URL, as opposed to an object store (``s3://``, ...)."""
    text = str(url)
    return "://" not in text or text.startswith("file://")


def local_root(url: str | os.PathLike[str]) -> Path | None:
    """The folder of a local store; None for a remote one."""
    return Path(str(url).removeprefix("file://")) if is_local(url) else None


def lock_path(pipeline: str, digest: str) -> str:
    """The run lock of a pipeline whose spec digest is ``digest``, relative to the root."""
    return f"{LOCKS}/{pipeline}-{digest[:12]}.lock"


def lease_dir(name: str) -> str:
    """The generations of the watch lease of pipeline ``name``, relative to the root."""
    return f"{LEASES}/{name}"


def audit_dir(url: str | os.PathLike[str]) -> Path | None:
    """``<store>/audit`` for a local store; None for a remote one (give --audit-dir)."""
    root = local_root(url)
    return None if root is None else root / AUDIT


def watch_dir(audit: Path) -> Path:
    """``watch`` events live beside the audit journal they are read with."""
    return audit.parent / WATCH


def monitoring_dir(url: str | os.PathLike[str]) -> Path:
    """``<store>/monitoring``: monitoring reports, the alert journal and alert state."""
    return Path(str(url).removeprefix("file://")) / MONITORING


def metadata_file(url: str | os.PathLike[str]) -> Path | None:
    """``<store>/pipeflow.db`` for a local store; None for a remote one."""
    root = local_root(url)
    return None if root is None else root / METADATA_FILE
