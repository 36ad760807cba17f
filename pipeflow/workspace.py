"""Which store a command means, and everything of that one store in one object.

The single rule, used by the CLI, the dashboard, ``serve``, ``watch`` and the Python API:

- **the store**: the spec's (``store.root``, default ``.pipeflow`` beside the spec, with its
  ``storage_options``) when a spec is given; else ``store=`` (``--store URL``), else
  ``$PIPEFLOW_STORE``, else ``$PIPEFLOW_STORE__ROOT`` (the variable a team sets for specs, so
  one setting serves every command), else ``.pipeflow`` in the working directory. A local store that is not
  there is a usage error naming where its path came from; it is checked when the store is first
  used, so a command that needs only the database (``runs --db PATH``) never asks for it.
- **the metadata database**: ``db=`` (``--db PATH|URL``), else the spec's (``store.metadata``,
  default ``.pipeflow/pipeflow.db`` beside the spec), else ``$PIPEFLOW_DB``, else
  ``$PIPEFLOW_STORE__METADATA``, else
  ``pipeflow.db`` inside a local store (:mod:`pipeflow.store.layout`). A remote store opened
  without a spec has no default database. A ``postgresql://`` URL anywhere in that chain is a
  team's PostgreSQL history (:mod:`pipeflow.store.postgres`); anything else names a SQLite
  file. (A spec's ``store`` section can itself be set from the environment:
  ``$PIPEFLOW_STORE__ROOT``, ``$PIPEFLOW_STORE__METADATA``, see :mod:`pipeflow.spec.load`.)

A :class:`Workspace` hands out the parts of that store: the artifact store, the metadata
database, the model registry, the journals (serving audit, ``watch`` events) and the monitoring
folder, each found through :mod:`pipeflow.store.layout`. Nothing is opened before it is asked
for, so opening a workspace is cheap and never creates files.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from pipeflow.errors import StoreError, UsageError
from pipeflow.store import layout

if TYPE_CHECKING:  # pragma: no cover
    from pipeflow.registry import Registry
    from pipeflow.spec.load import LoadedSpec
    from pipeflow.store.artifacts import ArtifactStore
    from pipeflow.store.metadata import MetadataDB

__all__ = ["Workspace", "open_store", "open_workspace"]


def open_store(loaded: LoadedSpec) -> tuple[ArtifactStore, MetadataDB]:
    """The artifact store and metadata DB a spec uses (defaults beside the spec file)."""
    from pipeflow.store.database import open_metadata

    return _spec_store(loaded), open_metadata(_spec_db(loaded))


def _spec_store(loaded: LoadedSpec) -> ArtifactStore:
    from pipeflow.store.artifacts import StoreRef

    spec = loaded.spec.store
    base = loaded.base_dir
    root = spec.root or str(base / layout.DEFAULT_ROOT)
    if "://" not in root and not os.path.isabs(root):
        root = str(base / root)
    try:
        return StoreRef(root, tuple(sorted(spec.storage_options.items()))).open()
    except OSError as err:  # a backend that connects on open (ftp://, sftp://) and cannot
        raise StoreError(f"cannot reach store {root!r}: {err.strerror or err}") from None


def _spec_db(loaded: LoadedSpec) -> str:
    """The spec's database: a PostgreSQL URL, or its SQLite file as an absolute path."""
    from pipeflow.store.metadata import is_postgres, sqlite_path

    url = loaded.spec.store.metadata or str(
        loaded.base_dir / layout.DEFAULT_ROOT / layout.METADATA_FILE
    )
    return url if is_postgres(url) else os.path.abspath(sqlite_path(url, loaded.base_dir))


class Workspace:
    """One store and what lives in it; see the module docstring for which store and database."""

    def __init__(
        self,
        *,
        loaded: LoadedSpec | None = None,
        store_url: str | None = None,
        store_source: str = "",
        db_path: str | None = None,
        creates_db: bool = False,
        audit_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.loaded = loaded
        self._store_url = store_url
        self._store_source = store_source
        self.db_path = db_path
        #: the database is the spec's own, created on first use (a named one must exist)
        self._creates_db = creates_db
        self._audit_dir = Path(os.path.abspath(audit_dir)) if audit_dir else None

    # -- the store ----------------------------------------------------------------------------

    @cached_property
    def store(self) -> ArtifactStore:
        """The artifact store (a local one must exist)."""
        return self._open_url() if self.loaded is None else _spec_store(self.loaded)

    def _open_url(self) -> ArtifactStore:
        from pipeflow.store.artifacts import ArtifactStore

        url = str(self._store_url)
        if layout.is_local(url) and not os.path.isdir(url):
            source = f" (from {self._store_source})" if self._store_source else ""
            raise UsageError(f"no pipeflow store at {url}{source}: pass --spec SPEC or --store URL")
        return ArtifactStore(url)

    @property
    def url(self) -> str:
        return self.store.url

    # -- the metadata database ----------------------------------------------------------------

    def open_db(self) -> MetadataDB | None:
        """The metadata database, or None where there is none yet (no run recorded)."""
        from pipeflow.store.database import open_metadata
        from pipeflow.store.metadata import exists

        if self.db_path and exists(self.db_path):
            return open_metadata(self.db_path)
        return None

    def metadata(self) -> MetadataDB:
        """The metadata database, which must exist (a spec's is created on first use)."""
        from pipeflow.store.database import open_metadata

        if self._creates_db and self.db_path:
            return open_metadata(self.db_path)
        db = self.open_db()
        if db is None:
            where = self.db_path or f"store {self._store_url} (a remote store has no default)"
            raise UsageError(f"no pipeflow metadata at {where}: pass --spec SPEC or --db PATH")
        return db

    # -- what lives in the store --------------------------------------------------------------

    @cached_property
    def registry(self) -> Registry:
        from pipeflow.registry import Registry

        return Registry(self.store)

    @property
    def audit_dir(self) -> Path:
        """The serving journal's local folder: the one given, else ``<store>/audit`` of a local
        store, or this machine's spool of a remote one (shipped: :mod:`pipeflow.store.shipping`)."""
        return self._audit_dir or layout.audit_dir(self.url)

    @property
    def monitoring_dir(self) -> Path:
        return layout.monitoring_dir(self.url)


def open_workspace(
    spec: str | os.PathLike[str] | LoadedSpec | None = None,
    store: str | None = None,
    db: str | os.PathLike[str] | None = None,
    *,
    overrides: list[str] | None = None,
    audit_dir: str | os.PathLike[str] | None = None,
) -> Workspace:
    """The workspace of a spec (a path or a loaded spec), or of a store URL (see the module
    docstring for the rule). Nothing is opened until asked for."""
    from pipeflow.store.metadata import absolute

    given_db = absolute(db) if db else None
    if spec is not None:
        from pipeflow.spec.load import LoadedSpec, load

        loaded = spec if isinstance(spec, LoadedSpec) else load(spec, overrides or [])
        spec_db = _spec_db(loaded)
        return Workspace(
            loaded=loaded,
            db_path=given_db or spec_db,
            creates_db=given_db in (None, spec_db),
            audit_dir=audit_dir,
        )
    env_name, env_store = _first_env("PIPEFLOW_STORE", "PIPEFLOW_STORE__ROOT")
    url = store or env_store or layout.DEFAULT_ROOT
    source = "--store" if store else f"${env_name}" if env_store else ""
    if layout.is_local(url):
        url = os.path.abspath(url.removeprefix("file://"))
    path = given_db or _first_env("PIPEFLOW_DB", "PIPEFLOW_STORE__METADATA")[1]
    if path is None:
        default = layout.metadata_file(url)
        path = str(default) if default is not None else None
    return Workspace(
        store_url=url,
        store_source=source,
        db_path=absolute(path) if path else None,
        audit_dir=audit_dir,
    )


def _first_env(*names: str) -> tuple[str, str | None]:
    """The first of these environment variables that is set (non-empty): (name, value)."""
    for name in names:
        if value := os.environ.get(name):
            return name, value
    return names[0], None
