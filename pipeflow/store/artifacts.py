"""Content-addressed artifacts and cache manifests under any fsspec root.

Layout under the root::

    objects/ab/cdef...      artifact bytes, named by their sha256 (first two hex digits fan out)
    cache/ab/<key>.json     stage-result manifest: cache key -> output artifact refs
    cache/batches/*.jsonl   many manifests in one immutable file (results of short stages)
    tmp/<uuid>              write-in-progress; never read

Why the cache lives here and not in SQLite: a stage on a Dask worker, possibly on another
machine, must be able to check the cache through the only thing it shares with the client, the
store, and a store (s3://...) may be shared by many machines whose metadata databases differ.

Manifests of stages that ran for a while are written one file each as soon as their result
arrives. Creating a file costs about as much as running a no-op stage, so manifests of short
stages are buffered and written together as one batch file every ``flush_after_s`` seconds and
at the end of the run. A crash therefore loses at most the last fraction of a second of *short*
results (they simply run again); everything older, and every long stage, is reusable. Batch
files are immutable once written; when there are many they are merged into one.

Crash safety: every file is written under ``tmp/`` and moved to its final name, so a valid name
never points at half-written bytes; on an object store (``s3://``...) a write is one PUT, which
the store makes visible whole or not at all (:mod:`pipeflow.store.remote` holds what else differs
there: client defaults, probing the bucket, the conditional write, one-line errors). Objects are
verified against their name on every read (a run loads a small artifact it saved or verified
again from memory: :mod:`pipeflow.store.recent`); a manifest whose objects are missing or corrupt
counts as a cache miss, never as a result. Writing the same object twice is harmless.

A local store (a plain path, no storage options) works with ``os`` and imports no fsspec (with
its asyncio, a tenth of a second: more than a cached run of a small pipeline); its ``fs`` is
made on first use.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import posixpath
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pipeflow.core.jsonenc import dumps_sorted
from pipeflow.errors import StoreError
from pipeflow.store import codecs, layout, remote, space
from pipeflow.store.layout import is_hex_digest as _is_hex_digest
from pipeflow.store.recent import Recent


@dataclass(frozen=True)
class ArtifactRef:
    """A stored artifact: content hash, codec, kind and size. Small and picklable."""

    digest: str
    codec: str
    kind: str = "any"
    size: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"digest": self.digest, "codec": self.codec, "kind": self.kind, "size": self.size}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArtifactRef:
        return cls(
            str(data["digest"]),
            str(data["codec"]),
            str(data.get("kind", "any")),
            int(data.get("size", 0)),
        )


@dataclass(frozen=True)
class StoreRef:
    """Picklable description of a store: enough for a worker to open it."""

    root: str
    storage_options: tuple[tuple[str, Any], ...] = ()

    def open(self) -> ArtifactStore:
        """The store, shared by everything in this process that opens the same ref (so stages
        running in threads see the results their client has not flushed yet)."""
        try:
            hash(self)
        except TypeError:  # unhashable storage options: no sharing
            return ArtifactStore(self.root, dict(self.storage_options))
        return _open(self)


@functools.lru_cache(maxsize=32)
def _open(ref: StoreRef) -> ArtifactStore:
    return ArtifactStore(ref.root, dict(ref.storage_options))


class ArtifactStore:
    """Bytes in, digest out; digest in, verified bytes out."""

    def __init__(self, root: str, storage_options: dict[str, Any] | None = None):
        self.url = root
        self.storage_options = dict(storage_options or {})
        self._dirs: set[str] = set()
        # manifests waiting to be written as one batch file, and the index of batch files read
        self._lock = threading.RLock()
        self._pending: dict[str, dict[str, Any]] = {}
        self._timer: threading.Timer | None = None
        self._batch_index: dict[str, dict[str, Any]] = {}
        self._batch_files: set[str] = set()
        self._batch_stamp: Any = None
        self._batch_checked = 0.0
        self.recent = Recent()  # small artifacts kept while a run is in progress
        local = None if self.storage_options else layout.plain_local_path(root)
        if local is not None:  # no fsspec (see the module docstring)
            self.root, self._local = local.rstrip("/") or "/", True
            self._flat = self._conditional = False
            return
        import fsspec

        options = remote.client_options(root, self.storage_options)
        try:
            self.fs, self.root = fsspec.core.url_to_fs(root, **options)
        except (ImportError, ValueError) as err:
            raise StoreError(f"cannot open store {root!r}: {err}") from None
        except OSError as err:  # e.g. ftp:// with nothing listening
            raise StoreError(f"cannot reach store {root!r}: {err.strerror or err}") from None
        self.root = self.root.rstrip("/") or "/"
        protocols = set(remote.protocols(self.fs))
        self._local = "file" in protocols
        #: an object store: no folders, a PUT is atomic (see pipeflow.store.remote)
        self._flat = bool(protocols & remote.FLAT)
        self._conditional = bool(protocols & remote.CONDITIONAL)
        problem = remote.probe(self.fs, self.root, root, self.storage_options)
        if problem is not None:
            raise StoreError(problem)

    @functools.cached_property
    def fs(self) -> Any:  # a local store's, made on first use (see the module docstring)
        from fsspec.implementations.local import LocalFileSystem

        return LocalFileSystem()

    @property
    def ref(self) -> StoreRef:
        return StoreRef(self.url, tuple(sorted(self.storage_options.items())))

    # -- paths ---------------------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        """Whether the store is on the local filesystem (plain ``os`` paths work)."""
        return self._local

    def path(self, rel: str) -> str:
        """The full path of ``rel`` (slash-separated, under the root) on the store's filesystem."""
        return self._join(*rel.split("/"))

    def _join(self, *parts: str) -> str:
        return (
            posixpath.join(self.root, *parts)
            if not self._local
            else os.path.join(self.root, *parts)
        )

    def object_path(self, digest: str) -> str:
        if not _is_hex_digest(digest):
            raise StoreError(f"invalid artifact digest {digest!r}: expected 64 hex characters")
        return self._join(layout.OBJECTS, digest[:2], digest[2:])

    def manifest_path(self, key: str) -> str:
        if not _is_hex_digest(key):
            raise StoreError(f"invalid cache key {key!r}: expected 64 hex characters")
        return self._join(layout.CACHE, key[:2], f"{key}.json")

    # -- low level -----------------------------------------------------------------------
    def _failed(self, err: Exception, doing: str) -> Exception:
        """A failed read or write as one line: a local ``OSError`` by its ``strerror``, a remote
        backend's error worded by :func:`remote.explain` (naming the store and the fix); any
        other error of a local store is a bug and stays what it is."""
        if not self._local:
            return StoreError(remote.explain(err, self.url, self.storage_options, doing))
        if isinstance(err, OSError):
            return StoreError(f"{doing}: {space.explain(err, self.root)}")
        return err

    def _ensure_dir(self, path: str) -> None:
        if path in self._dirs or self._flat:
            return
        try:
            if self._local:
                os.makedirs(path, exist_ok=True)
            else:
                self.fs.makedirs(path, exist_ok=True)
        except OSError as err:
            raise StoreError(
                f"cannot create directory {path}: {space.explain(err, self.root)}"
            ) from None
        self._dirs.add(path)

    def _write_atomic(self, path: str, data: bytes) -> None:
        try:
            self._write_once(path, data)
        except FileNotFoundError:
            # A directory we created earlier in this process was removed (e.g. the store was
            # deleted between two runs in one notebook): forget what we knew and try once more.
            self._dirs.clear()
            self._write_once(path, data)

    def _write_once(self, path: str, data: bytes) -> None:
        if self._flat:  # one PUT: visible whole or not at all
            try:
                self.fs.pipe_file(path, data)
            except Exception as err:  # fsspec backends raise their own types
                raise self._failed(err, f"cannot write {path}") from None
            return
        tmp_dir = self._join(layout.TMP)
        self._ensure_dir(tmp_dir)
        self._ensure_dir(posixpath.dirname(path) if not self._local else os.path.dirname(path))
        tmp = self._join(layout.TMP, uuid.uuid4().hex)
        try:
            if self._local:
                with open(tmp, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, path)
            else:
                self.fs.pipe_file(tmp, data)
                self.fs.mv(tmp, path)
        except FileNotFoundError:
            _silently_remove(self, tmp)
            raise
        except OSError as err:
            _silently_remove(self, tmp)
            raise StoreError(f"cannot write {path}: {space.explain(err, self.root)}") from None
        except Exception as err:  # fsspec backends raise their own types
            _silently_remove(self, tmp)
            raise StoreError(f"cannot write {path}: {type(err).__name__}: {err}") from None

    def create_exclusive(self, relpath: str, data: bytes) -> bool:
        """Write ``relpath`` (under the root) only if nothing is there yet, atomically: the whole
        file appears or nothing. Returns False when the name was taken (a concurrent writer won).

        Local stores use a hard link from a temporary file, which the filesystem makes atomic and
        exclusive. S3 uses its conditional write (a PUT with ``If-None-Match: *``, see
        :mod:`pipeflow.store.remote`), just as exclusive. Other filesystems (``gs://``,
        ``az://``, ``memory://``...) have no portable exclusive create: there a check-then-write
        leaves a small race window between the check and the write.
        """
        path = self._join(*relpath.split("/"))
        if self._conditional:
            try:
                return remote.create_exclusive(self.fs, path, data)
            except Exception as err:  # botocore and s3fs raise their own types
                raise self._failed(err, f"cannot write {path}") from None
        if not self._local:
            if self._exists(path):
                return False
            self._write_atomic(path, data)
            return True
        try:
            return self._create_exclusive_local(path, data)
        except FileNotFoundError:
            # a folder we created earlier in this process was removed (the store was deleted
            # between two runs in one notebook): forget what we knew and try once more
            self._dirs.clear()
            return self._create_exclusive_local(path, data)

    def _create_exclusive_local(self, path: str, data: bytes) -> bool:
        folder = os.path.dirname(path)
        self._ensure_dir(folder)
        self._ensure_dir(self._join(layout.TMP))
        tmp = self._join(layout.TMP, uuid.uuid4().hex)
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            return True
        except FileNotFoundError:
            raise
        except OSError as err:
            raise StoreError(f"cannot write {path}: {space.explain(err, self.root)}") from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def list_names(self, relfolder: str) -> list[str]:
        """File names directly under ``relfolder`` (empty if it does not exist), sorted."""
        folder = self._join(*relfolder.split("/"))
        try:
            if self._local:
                return sorted(os.listdir(folder))
            return sorted(
                posixpath.basename(p.rstrip("/")) for p in self.fs.ls(folder, detail=False)
            )
        except (FileNotFoundError, NotADirectoryError):
            return []
        except Exception as err:  # remote backends raise their own types too
            raise self._failed(err, f"cannot list {folder}") from None

    def read_text(self, relpath: str) -> str | None:
        raw = self._read(self._join(*relpath.split("/")))
        return None if raw is None else raw.decode("utf-8")

    def _read(self, path: str) -> bytes | None:
        try:
            if self._local:
                # unbuffered: the whole file in one readall, without the buffer's own system
                # calls (a terminal check, a seek, a stat) on every read of a small artifact
                with open(path, "rb", buffering=0) as fh:
                    return fh.readall()
            return self.fs.cat_file(path)
        except FileNotFoundError:
            return None
        except Exception as err:  # remote backends raise their own types too
            raise self._failed(err, f"cannot read {path}") from None

    def _exists(self, path: str) -> bool:
        try:
            return os.path.exists(path) if self._local else self.fs.exists(path)
        except Exception as err:  # remote backends raise their own types too
            raise self._failed(err, f"cannot reach {path}") from None

    def clean_tmp(self, older_than_s: float = 3600.0) -> int:
        """Remove files left in ``tmp/`` by writers that died (older than ``older_than_s``, so a
        write in progress elsewhere is never touched). Returns how many were removed."""
        if not self._local:
            return 0  # object stores write in one PUT (nothing is left); others are not swept
        folder = self._join(layout.TMP)
        cutoff = time.time() - older_than_s
        removed = 0
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return 0
        for entry in entries:
            with contextlib.suppress(OSError):
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
        return removed

    def walk(self, relfolder: str) -> Iterator[tuple[str, int, float]]:
        """(path, size, modification time) of every file under ``relfolder`` (nothing if it does
        not exist). A remote entry without a time reads as now: whoever judges age by it keeps
        it (``store gc``)."""
        base = self.path(relfolder)
        if self._local:
            for path, st in layout.local_files(base):
                yield path, st.st_size, st.st_mtime
            return
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return
        except Exception as err:  # remote backends raise their own types
            raise self._failed(err, f"cannot list {base}") from None
        for path, info in found.items():
            if info.get("type", "file") == "file":
                yield path, int(info.get("size") or 0), remote.modified(info)

    def delete(self, paths: list[str]) -> None:
        """Delete files by full path (:meth:`path`); one already gone is not an error. Only
        ``pipeflow store gc`` deletes results (:mod:`pipeflow.runner.gc`); locks go this way too."""
        if self._local:
            for path in paths:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    continue
                except OSError as err:
                    raise StoreError(f"cannot delete {path}: {err.strerror or err}") from None
            return
        for start in range(0, len(paths), 1000):  # S3 deletes up to 1000 keys per request
            try:
                self.fs.rm(paths[start : start + 1000])
            except FileNotFoundError:
                continue
            except Exception as err:  # remote backends raise their own types
                raise self._failed(err, f"cannot delete from {self.url}") from None  # nosec B608 (an error message, not SQL)

    # -- objects -------------------------------------------------------------------------
    def put(self, data: bytes, *, overwrite: bool = False) -> str:
        """Store bytes under their hash. An object already there is kept unless its size is
        wrong (a damaged copy is replaced) or ``overwrite`` is set (``--force`` rewrites what
        it recomputes, repairing a same-size corruption too)."""
        digest = hashlib.sha256(data).hexdigest()
        path = self.object_path(digest)
        if overwrite or self._size(path) != len(data):
            self._write_atomic(path, data)
        return digest

    def _size(self, path: str) -> int | None:
        try:
            return os.stat(path).st_size if self._local else int(self.fs.size(path))
        except FileNotFoundError:
            return None
        except Exception as err:  # remote backends raise their own types too
            raise self._failed(err, f"cannot reach {path}") from None

    def get(self, digest: str) -> bytes:
        path = self.object_path(digest)
        data = self._read(path)
        if data is None:
            raise StoreError(f"artifact {digest[:12]} is missing from the store ({path})")
        if hashlib.sha256(data).hexdigest() != digest:
            raise StoreError(
                f"artifact {digest[:12]} is corrupt: its content does not match its hash ({path})"
            )
        return data

    def has(self, digest: str) -> bool:
        return self._exists(self.object_path(digest))

    def save(self, obj: Any, kind: str = "any", *, overwrite: bool = False) -> ArtifactRef:
        codec, data = codecs.encode(obj)
        digest = self.put(data, overwrite=overwrite)
        self.recent.keep(digest, data)  # read back from memory during a run (store.recent)
        return ArtifactRef(digest, codec, kind, len(data))

    def load(self, ref: ArtifactRef) -> Any:
        return codecs.decode(ref.codec, self.recent.fetch(ref.digest, self.get))

    # -- manifests -----------------------------------------------------------------------
    #: a stage that ran at least this long gets its manifest written at once
    durable_after_s: float = 0.05
    #: buffered manifests are written within this many seconds
    flush_after_s: float = 0.25
    #: merge batch files when there are more than this many
    max_batch_files: int = 64

    def write_manifest(self, key: str, manifest: dict[str, Any]) -> None:
        """Write one manifest now, as its own file."""
        self._write_atomic(self.manifest_path(key), dumps_sorted(manifest).encode())

    def record_manifest(
        self, key: str, manifest: dict[str, Any], *, duration: float | None = None
    ) -> None:
        """Record a stage result: at once if the stage was long (or its duration unknown),
        otherwise buffered into the next batch file (see the module docstring)."""
        if duration is None or duration >= self.durable_after_s:
            self.write_manifest(key, manifest)
            return
        with self._lock:
            self._pending[key] = manifest
            if self._timer is None:
                self._timer = threading.Timer(self.flush_after_s, self._flush_quietly)
                self._timer.daemon = True
                self._timer.start()

    def write_batch(self, entries: dict[str, dict[str, Any]]) -> str:
        """Write ``entries`` (key -> manifest) as a new batch file now; its name."""
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.jsonl"
        self._write_atomic(self._join(layout.CACHE_BATCHES, name), _batch_bytes(entries))
        return name

    def flush(self) -> None:
        """Write buffered manifests now (one batch file). Safe to call from any thread."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if not self._pending:
                return
            entries, self._pending = self._pending, {}
            try:
                name = self.write_batch(entries)
            except BaseException:
                self._pending = {**entries, **self._pending}
                raise
            self._batch_index.update(entries)
            self._batch_files.add(name)
            if len(self._batch_files) > self.max_batch_files:
                self._compact()

    def _flush_quietly(self) -> None:
        # the end-of-run flush reports a failure; a timer thread has no one to tell
        with contextlib.suppress(Exception):
            self.flush()

    def _compact(self) -> None:
        """Merge every known batch file into one, then remove the merged files. A concurrent
        reader that listed a removed file finds its entries in the merged one."""
        self._refresh_batches(force=True)
        merged = set(self._batch_files)
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.jsonl"
        self._write_atomic(self._join(layout.CACHE_BATCHES, name), _batch_bytes(self._batch_index))
        for old in merged:
            _silently_remove(self, self._join(layout.CACHE_BATCHES, old))
        self._batch_files = {name}

    def _refresh_batches(self, *, force: bool = False) -> None:
        """Read batch files written since the last look (they never change once written)."""
        folder = self._join(layout.CACHE_BATCHES)
        stamp: Any = None
        try:
            if self._local:
                if not self._batch_files and not os.access(folder, os.F_OK):
                    self._batch_stamp = None  # none yet, none known (and no error raised)
                    return
                stamp = os.stat(folder).st_mtime_ns
            else:
                now = time.monotonic()
                if not force and now - self._batch_checked < 1.0:
                    return
                self._batch_checked = now
                stamp = None
            if stamp is not None and stamp == self._batch_stamp and not force:
                return
            names = (
                os.listdir(folder)
                if self._local
                else [posixpath.basename(p) for p in self.fs.ls(folder, detail=False)]
            )
        except (FileNotFoundError, NotADirectoryError):
            names = []
        except Exception as err:  # remote backends raise their own types too
            raise self._failed(err, f"cannot list {folder}") from None
        if self._batch_files - set(names):
            # files gone: merged into a new one (read below), or the store was emptied under
            # this process. Forget what they said, or a stage would be "cached" by a manifest
            # that no longer exists whose objects happen to be there again.
            self._batch_index = {}
            self._batch_files = set()
        for name in names:
            if name.endswith(".jsonl") and name not in self._batch_files:
                raw = self._read(self._join(layout.CACHE_BATCHES, name))
                if raw is None:
                    continue  # merged away since the listing: its entries are in the new file
                self._batch_index.update(_parse_batch(raw))
                self._batch_files.add(name)
        self._batch_files &= set(names)
        self._batch_stamp = stamp

    def _find_manifest(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            # look at the folder first (one stat on a local disk; at most once a second on an
            # object store): an entry of a batch file that is gone must not answer
            self._refresh_batches()
            found = self._pending.get(key) or self._batch_index.get(key)
        if found is not None:
            return dict(found)
        path = self.manifest_path(key)
        if self._local and not os.access(path, os.F_OK):  # a miss without an exception raised
            return None
        raw = self._read(path)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return None  # unreadable manifest: a cache miss, the stage simply runs again

    def read_manifest(self, key: str, *, verify: bool = True) -> dict[str, Any] | None:
        """The manifest for ``key`` if it and every object it names are present, else None."""
        if not _is_hex_digest(key):
            raise StoreError(f"invalid cache key {key!r}: expected 64 hex characters")
        manifest = self._find_manifest(key)
        if manifest is None:
            return None
        try:
            outputs = {port: ArtifactRef.from_dict(r) for port, r in manifest["outputs"].items()}
        except (KeyError, TypeError, AttributeError, ValueError):
            return None
        # each object must be there with its recorded size: a missing or truncated one is a
        # miss, so the stage runs again and rewrites it (full hashes are checked on every read)
        if verify and not all(
            self._size(self.object_path(r.digest)) == r.size for r in outputs.values()
        ):
            return None
        manifest["outputs"] = outputs
        return manifest


def _batch_bytes(entries: dict[str, dict[str, Any]]) -> bytes:
    lines = [dumps_sorted({"key": k, "manifest": m}) for k, m in entries.items()]
    return ("\n".join(lines) + "\n").encode()


def _parse_batch(raw: bytes) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for line in raw.splitlines():
        try:
            entry = json.loads(line)
            key, manifest = entry["key"], entry["manifest"]
        except (ValueError, KeyError, TypeError):
            continue  # a damaged line costs one cache miss, nothing more
        if _is_hex_digest(key) and isinstance(manifest, dict):
            out[key] = manifest
    return out


def _silently_remove(store: ArtifactStore, path: str) -> None:
    with contextlib.suppress(Exception):
        os.unlink(path) if store._local else store.fs.rm_file(path)
