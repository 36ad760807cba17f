"""Is this store sound? ``check_store`` (and ``pipeflow store check``) says what is wrong.

A store is sound when everything a reader can reach by name is complete and consistent:

- the metadata database passes its own integrity check (SQLite's ``PRAGMA integrity_check``;
  for PostgreSQL, every table there and every index valid);
- every file under ``objects/`` hashes to its name (reads verify this too, but an object nobody
  reads again would rot unnoticed); files are hashed in chunks, so large ones cost no memory;
- every artifact and output recorded in the metadata names an object present with the recorded size;
- every cache manifest (one file each under ``cache/``, or a line of a batch file under
  ``cache/batches/``) parses and names objects present with the recorded sizes. At run time a
  manifest that does not is only a cache miss, but no crash can produce one (objects are written
  before the manifest naming them), so here it means damage;
- nothing in ``tmp/`` is reachable under a final name: bytes being written live only there, and
  no final name shares a file (an inode) with ``tmp/`` or links into it. Leftovers in ``tmp/``
  are fine: nothing reaches them, and runs remove them after an hour;
- registry version files parse and their model objects are present; alias events and refused
  promotions parse and name versions that exist; run locks (``locks/``) parse.

References are read before objects are listed: an object is always written before anything
names it, so a check running beside a live run never reports a just-written object as missing.
(An exclusive create, used for registry entries and run locks, links a complete file from
``tmp/`` to its name and then unlinks the ``tmp/`` name: a check landing between the two reports
that one file for an instant, harmlessly.) The database is expected to belong to this store: rows
recorded by runs that used another store root are reported as missing objects.
Objects nothing refers to are not problems (they are reusable cache entries). An object the
metadata names that ``pipeflow store gc`` deleted (table ``collected``) is not one either: the
history outlives the artifacts gc collects (:mod:`pipeflow.runner.gc`). Remote stores get
the same checks through fsspec, except the ``tmp/`` one (object stores have no inodes or links).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pipeflow.errors import StoreError
from pipeflow.store import layout
from pipeflow.store.artifacts import ArtifactStore
from pipeflow.store.layout import local_files
from pipeflow.store.metadata import MetadataDB

_HEX64 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20


@dataclass
class StoreCheck:
    """What :func:`scan_store` looked at, and every problem it found."""

    url: str
    problems: list[str] = field(default_factory=list)
    objects: int = 0
    manifests: int = 0
    #: digests ``store gc`` deleted: the metadata may still name them
    collected: set[str] = field(default_factory=set)
    artifacts: int = 0
    registry_files: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class _Ref:
    """An object some record points at: digest, recorded size (None: unknown), and who."""

    digest: str
    size: int | None
    where: str


def check_store(store: ArtifactStore, db: MetadataDB) -> list[str]:
    """Every problem found in ``store`` and its metadata ``db`` (empty: the store is sound)."""
    return scan_store(store, db).problems


def scan_store(store: ArtifactStore, db: MetadataDB) -> StoreCheck:
    report = StoreCheck(store.url)
    local = store.is_local
    refs: list[_Ref] = []
    # references first, objects after (see the module docstring)
    _check_db(db, refs, report)
    _check_manifests(store, refs, report)
    _check_registry(store, refs, report)
    _check_locks(store, report)
    sizes, corrupt = _check_objects(store, report)
    for ref in refs:
        path = store.object_path(ref.digest)
        found = sizes.get(path)
        if found is None:
            if ref.where.startswith("metadata ") and ref.digest in report.collected:
                continue
            report.problems.append(f"{ref.where} names object {ref.digest[:12]}, missing ({path})")
        elif path in corrupt:
            report.problems.append(f"{ref.where} names object {ref.digest[:12]}, corrupt ({path})")
        elif ref.size is not None and found != ref.size:
            report.problems.append(
                f"{ref.where} names object {ref.digest[:12]} of {ref.size} bytes; "
                f"the store holds {found} bytes ({path})"
            )
    if local:
        _check_tmp_unreachable(store, report)
    return report


# -- metadata ---------------------------------------------------------------------------------


def _check_db(db: MetadataDB, refs: list[_Ref], report: StoreCheck) -> None:
    try:
        verdict = [line for line in db.integrity_check().splitlines() if line.strip()]
        if verdict != ["ok"]:
            shown = "; ".join(verdict[:5]) + (f"; ({len(verdict) - 5} more)" if verdict[5:] else "")
            report.problems.append(
                f"metadata database {db.location}: integrity check failed: {shown}"
            )
            return  # its rows cannot be trusted enough to check what they name
        artifacts = db.query("SELECT digest, size, run_id, stage FROM artifacts")
        report.collected = set(db.collected())
        outputs = db.query(
            "SELECT o.run_id, o.stage, o.port, o.digest, a.size FROM outputs o"
            " LEFT JOIN artifacts a ON a.digest = o.digest"
        )
    except StoreError as err:
        report.problems.append(str(err))
        return
    report.artifacts = len(artifacts)
    for row in artifacts:
        where = f"metadata {db.location}: artifact of run {row['run_id']} stage '{row['stage']}'"
        if _HEX64.fullmatch(str(row["digest"])):
            refs.append(_Ref(row["digest"], int(row["size"]), where))
        else:
            report.problems.append(f"{where} has an invalid digest {row['digest']!r}")
    for row in outputs:
        where = (
            f"metadata {db.location}: output {row['stage']}.{row['port']} of run {row['run_id']}"
        )
        if row["size"] is None:
            report.problems.append(f"{where} names artifact {str(row['digest'])[:12]}, unrecorded")
        elif _HEX64.fullmatch(str(row["digest"])):
            refs.append(_Ref(row["digest"], int(row["size"]), where))


# -- cache manifests --------------------------------------------------------------------------


def _check_manifests(store: ArtifactStore, refs: list[_Ref], report: StoreCheck) -> None:
    for fan in store.list_names("cache"):
        if fan == "batches":
            continue
        for name in store.list_names(f"cache/{fan}"):
            rel = f"cache/{fan}/{name}"
            path = store.path(rel)
            key = name.removesuffix(".json")
            if not name.endswith(".json") or not _HEX64.fullmatch(key) or key[:2] != fan:
                report.problems.append(f"{path}: not a manifest name (cache/<ab>/<key>.json)")
                continue
            raw = _read(store, rel)
            if raw is None:
                continue  # removed since the listing
            try:
                manifest = json.loads(raw)
            except ValueError as err:
                report.problems.append(f"{path}: manifest does not parse: {err}")
                continue
            report.manifests += 1
            _manifest_refs(manifest, key, path, refs, report)
    for name in store.list_names("cache/batches"):
        rel = f"cache/batches/{name}"
        path = store.path(rel)
        if not name.endswith(".jsonl"):
            report.problems.append(f"{path}: not a batch file name (*.jsonl)")
            continue
        raw = _read(store, rel)
        if raw is None:
            continue  # merged into a newer batch file since the listing
        for n, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                key, manifest = entry["key"], entry["manifest"]
            except (ValueError, KeyError, TypeError) as err:
                report.problems.append(f"{path}: line {n} does not parse: {err}")
                continue
            report.manifests += 1
            _manifest_refs(manifest, key, f"{path} line {n}", refs, report)


def _manifest_refs(
    manifest: Any, key: Any, where: str, refs: list[_Ref], report: StoreCheck
) -> None:
    if not isinstance(key, str) or not _HEX64.fullmatch(key):
        report.problems.append(f"{where}: invalid cache key {key!r}")
        return
    try:
        outputs = manifest["outputs"]
        items = [(port, str(r["digest"]), int(r.get("size", 0))) for port, r in outputs.items()]
    except (KeyError, TypeError, AttributeError, ValueError):
        report.problems.append(f"{where}: manifest has no valid 'outputs'")
        return
    if manifest.get("key", key) != key:
        report.problems.append(f"{where}: manifest is for key {str(manifest['key'])[:12]}")
    for port, digest, size in items:
        if _HEX64.fullmatch(digest):
            refs.append(_Ref(digest, size, f"manifest {where} (output '{port}')"))
        else:
            report.problems.append(f"{where}: output '{port}' has an invalid digest {digest!r}")


# -- registry and locks -----------------------------------------------------------------------


def _check_registry(store: ArtifactStore, refs: list[_Ref], report: StoreCheck) -> None:
    for model in store.list_names(layout.REGISTRY):
        versions: set[int] = set()
        for name in store.list_names(f"{layout.REGISTRY}/{model}/versions"):
            rel = f"{layout.REGISTRY}/{model}/versions/{name}"
            record = _json_file(store, rel, report)
            if record is None:
                continue
            report.registry_files += 1
            try:
                ref = record["model"]
                digest, size = str(ref["digest"]), int(ref.get("size", 0))
                versions.add(int(record["version"]))
            except (KeyError, TypeError, AttributeError, ValueError):
                report.problems.append(f"{store.path(rel)}: version record has no valid model")
                continue
            if not _HEX64.fullmatch(digest):
                report.problems.append(f"{store.path(rel)}: invalid model digest {digest!r}")
                continue
            refs.append(_Ref(digest, size, f"registry version {store.path(rel)}"))
        for alias in store.list_names(f"registry/{model}/aliases"):
            folder = f"registry/{model}/aliases/{alias}"
            _check_versions_named(
                store, folder, "to_version", "alias event points at", model, versions, report
            )
        folder = f"{layout.REGISTRY}/{model}/{layout.REFUSALS}"
        _check_versions_named(
            store, folder, "version", "refused promotion names", model, versions, report
        )


def _check_versions_named(
    store: ArtifactStore,
    folder: str,
    field: str,
    what: str,
    model: str,
    versions: set[int],
    report: StoreCheck,
) -> None:
    """Each JSON record in ``folder`` (an alias's events, a model's refusals) names in ``field``
    one of ``versions``, those ``model`` has; ``what`` says what the record is doing."""
    for name in store.list_names(folder):
        record = _json_file(store, f"{folder}/{name}", report)
        if record is None:
            continue
        report.registry_files += 1
        target = record.get(field) if isinstance(record, dict) else None
        if not isinstance(target, int) or target not in versions:
            report.problems.append(
                f"{store.path(f'{folder}/{name}')}: {what} version "
                f"{target!r}, which model '{model}' does not have"
            )


def _check_locks(store: ArtifactStore, report: StoreCheck) -> None:
    for name in store.list_names(layout.LOCKS):
        lock = _json_file(store, f"{layout.LOCKS}/{name}", report)
        if lock is not None and not (isinstance(lock, dict) and "pid" in lock and "host" in lock):
            report.problems.append(f"{store.path(f'locks/{name}')}: not a run lock")


def _json_file(store: ArtifactStore, rel: str, report: StoreCheck) -> Any:
    raw = _read(store, rel)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError as err:
        report.problems.append(f"{store.path(rel)}: does not parse: {err}")
        return None


# -- objects and tmp --------------------------------------------------------------------------


def _check_objects(store: ArtifactStore, report: StoreCheck) -> tuple[dict[str, int], set[str]]:
    """Hash every object; returns path -> size of each, and the paths of corrupt ones."""
    sizes: dict[str, int] = {}
    corrupt: set[str] = set()
    for path, size in _walk(store, layout.OBJECTS):
        fan, name = _split(store, path)
        digest = fan + name
        if len(fan) != 2 or not _HEX64.fullmatch(digest):
            report.problems.append(f"{path}: not an object name (objects/<ab>/<62 hex digits>)")
            continue
        try:
            actual = _sha256(store, path)
        except FileNotFoundError:
            continue
        except OSError as err:
            report.problems.append(f"{path}: cannot read: {err.strerror or err}")
            continue
        report.objects += 1
        sizes[path] = size
        if actual != digest:
            corrupt.add(path)
            report.problems.append(
                f"{path}: content hashes to {actual[:12]}, not to its name (corrupt object)"
            )
    return sizes, corrupt


def _check_tmp_unreachable(store: ArtifactStore, report: StoreCheck) -> None:
    tmp = os.path.join(store.root, layout.TMP)
    try:
        entries = list(os.scandir(tmp))
    except OSError:
        return
    in_tmp = {}
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if st.st_nlink > 1:  # only a file with another name can be reachable by it
            in_tmp[(st.st_dev, st.st_ino)] = entry.path
    real_tmp = os.path.realpath(tmp) + os.sep
    for top in sorted(os.listdir(store.root)) if os.path.isdir(store.root) else []:
        if top == layout.TMP:
            continue
        for path, st in local_files(
            os.path.join(store.root, top), follow_symlinks=False, skip=OSError
        ):
            if (st.st_dev, st.st_ino) in in_tmp:
                report.problems.append(
                    f"{path}: is the same file as {in_tmp[(st.st_dev, st.st_ino)]} "
                    "(a write in progress is reachable under a final name)"
                )
            elif os.path.islink(path) and os.path.realpath(path).startswith(real_tmp):
                report.problems.append(f"{path}: links into tmp/ ({os.path.realpath(path)})")


# -- fsspec helpers ---------------------------------------------------------------------------


def _split(store: ArtifactStore, path: str) -> tuple[str, str]:
    mod = os.path if store.is_local else posixpath
    folder, name = mod.split(path)
    return mod.basename(folder), name


def _read(store: ArtifactStore, rel: str) -> bytes | None:
    """The bytes of a file under the root; None if it is gone (removed since the listing)."""
    path = store.path(rel)
    try:
        if store.is_local:
            with open(path, "rb") as fh:
                return fh.read()
        return bytes(store.fs.cat_file(path))
    except (FileNotFoundError, IsADirectoryError):
        return None
    except OSError as err:
        raise StoreError(f"cannot read {path}: {err.strerror or err}") from None


def _walk(store: ArtifactStore, rel: str) -> Iterator[tuple[str, int]]:
    top = store.path(rel)
    if store.is_local:
        for folder, _, files in os.walk(top):
            for name in sorted(files):
                path = os.path.join(folder, name)
                try:
                    yield path, os.lstat(path).st_size
                except FileNotFoundError:
                    continue
        return
    try:
        found = store.fs.find(top, detail=True)
    except FileNotFoundError:
        return
    except OSError as err:
        raise StoreError(f"cannot list {top}: {err.strerror or err}") from None
    for path, info in sorted(found.items()):
        yield path, int(info.get("size") or 0)


def _sha256(store: ArtifactStore, path: str) -> str:
    h = hashlib.sha256()
    opener = open if store.is_local else store.fs.open
    with opener(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()
