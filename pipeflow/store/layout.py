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
      registry/<model>/fleet/       fleet events (N.json): what one   registry
                                    server replica decided for all
      registry/<model>/archive/     archive and restore events        registry
      registry/<model>/refusals/    refused promotions (N.json): the  registry
                                    version, the alias, every gate
      locks/<pipeline>-<d12>.lock   the run lock of a pipeline        runner.session
      leases/<pipeline>/<gen>.json  the lease of ``pipeflow watch``   runner.lease
      audit/                        serving journal: predictions,     store.journal
                                    feedback, batches, events
      monitoring/<model>/reports/   monitoring reports                monitoring.history
      monitoring/alerts*.jsonl      the alert journal                 monitoring.history
      monitoring/alerts/state.json  alert de-duplication state        monitoring.alerts
      watch/                        ``pipeflow watch`` events         runner.watch
      journal/<journal>/<kind>/     journal segments shipped from     store.shipping
        <host>-<pid>-<token>.jsonl  the writers' local spools (a
                                    remote store only)
      pipeflow.db                   metadata (SQLite) of a local      store.sqlite
                                    store opened without a spec

The journals (``audit``, ``monitoring``, ``watch``) are append-only files on a local disk
(:mod:`pipeflow.store.journal`). A local store keeps them in place, in the folders above. A
remote store's writers append to a local **spool** instead, ``$PIPEFLOW_SPOOL/<digest>/<journal>``
(default ``~/.cache/pipeflow/spool``; ``<digest>`` names the store URL, so two stores never share
a spool and a restarted writer finds what its predecessor left), and ship closed segments to
``journal/`` in the store (:mod:`pipeflow.store.shipping`). This module is pure: names and path
arithmetic (and the environment variable that moves the spool), no I/O.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

OBJECTS = "objects"
CACHE = "cache"
CACHE_BATCHES = "cache/batches"
TMP = "tmp"
REGISTRY = "registry"
#: ``registry/<model>/fleet``: events every ``pipeflow serve`` replica applies
FLEET = "fleet"
#: ``registry/<model>/refusals``: promotions the gates refused, with every gate's verdict
REFUSALS = "refusals"
LOCKS = "locks"
LEASES = "leases"
AUDIT = "audit"
MONITORING = "monitoring"
WATCH = "watch"
JOURNAL = "journal"
#: the journals: what their local folders are called, in a local store or a spool
JOURNALS = (AUDIT, MONITORING, WATCH)
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


HEX64 = re.compile(r"[0-9a-f]{64}")


def is_hex_digest(text: str) -> bool:
    """Whether ``text`` is a sha256 in hex: the name of every object and cache key."""
    return isinstance(text, str) and HEX64.fullmatch(text) is not None


def local_files(
    base: str, *, follow_symlinks: bool = True, skip: type[OSError] = FileNotFoundError
) -> Iterator[tuple[str, os.stat_result]]:
    """(path, stat) of every file under the local folder ``base``; a file whose stat raises
    ``skip`` (gone since it was listed) is passed over."""
    for dirpath, _, names in os.walk(base):
        for name in names:
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path, follow_symlinks=follow_symlinks)
            except skip:
                continue
            yield path, st


def plain_local_path(url: str) -> str | None:
    """The absolute path fsspec's local filesystem makes of a plain path (relative to the working
    directory, ``~`` expanded, not normalised), or None for anything else (a URL, a chained or
    ``file:`` one, or not a POSIX system): fsspec decides those."""
    if os.sep != "/" or not url or ":" in url:
        return None
    if url.startswith("/"):
        return url
    if url.startswith("~"):
        return os.path.expanduser(url)
    path = url[2:] if url.startswith("./") else "" if url == "." else url
    return f"{os.getcwd()}/{path}"


def lock_path(pipeline: str, digest: str) -> str:
    """The run lock of a pipeline whose spec digest is ``digest``, relative to the root."""
    return f"{LOCKS}/{pipeline}-{digest[:12]}.lock"


def lease_dir(name: str) -> str:
    """The generations of the watch lease of pipeline ``name``, relative to the root."""
    return f"{LEASES}/{name}"


def spool_dir(url: str | os.PathLike[str]) -> Path:
    """The local spool of a remote store on this machine: ``$PIPEFLOW_SPOOL/<digest>`` (default
    ``~/.cache/pipeflow/spool``), where ``<digest>`` is 16 hex digits of the store URL's SHA-256."""
    base = os.environ.get("PIPEFLOW_SPOOL") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "pipeflow", "spool"
    )
    digest = hashlib.sha256(str(url).rstrip("/").encode()).hexdigest()[:16]
    return Path(os.path.abspath(base)) / digest


def journal_dir(url: str | os.PathLike[str], journal: str) -> Path:
    """Where a writer on this machine appends ``journal`` (one of :data:`JOURNALS`): in a local
    store, ``<store>/<journal>``; for a remote store, ``<spool>/<journal>``."""
    root = local_root(url)
    return (spool_dir(url) if root is None else root) / journal


def shipped_dir(journal: str, kind: str) -> str:
    """The shipped segments of one kind of a journal, relative to the root."""
    return f"{JOURNAL}/{journal}/{kind}"


def audit_dir(url: str | os.PathLike[str]) -> Path:
    """``<store>/audit`` for a local store; the spool's ``audit`` for a remote one."""
    return journal_dir(url, AUDIT)


def watch_dir(audit: Path) -> Path:
    """``watch`` events live beside the audit journal they are read with."""
    return audit.parent / WATCH


def monitoring_dir(url: str | os.PathLike[str]) -> Path:
    """``<store>/monitoring`` of a local store (reports, the alert journal and alert state); the
    spool's ``monitoring`` of a remote one (the alert journal only: reports and alert state are
    whole files written to the store itself, :mod:`pipeflow.monitoring.history`)."""
    return journal_dir(url, MONITORING)


def metadata_file(url: str | os.PathLike[str]) -> Path | None:
    """``<store>/pipeflow.db`` for a local store; None for a remote one."""
    root = local_root(url)
    return None if root is None else root / METADATA_FILE
