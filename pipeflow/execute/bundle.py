"""Code shipped through the store: a worker that shares nothing with the client but the store
still runs the spec's own Python code, and never a stale copy of it.

A ``python`` stage names ``module:function`` beside the spec, and other stages may name classes
there too (a custom estimator); on the client and on local workers that code is imported from the
spec's folder. A Dask worker on another machine cannot see that folder, and one that sees a folder
at the same path (a shared disk, an old checkout) may see other code. So:

- **What is shipped**: the spec folder's importable code, exactly what ``import x`` from that
  folder can find as a regular module or package: the ``*.py`` files directly in it, and the
  ``*.py`` files of every package below it (a folder with an ``__init__.py``, recursively, its
  subpackages too). Never anything else: no data files, no ``.pipeflow/`` (hidden folders are
  skipped), no ``__pycache__``, no resources of packages, no namespace packages (a folder without
  ``__init__.py``: add one). The packages a stage imports from the environment (pandas, your
  company's library) are not shipped: every worker has them installed, as it has pipeflow.
- **How**: one uncompressed tar of those files, names sorted, every header fixed (mode 0644, mtime
  0, owner 0, no user or group name), so the same code gives the same bytes, hence the same
  digest, on every machine and Python version. It is put in the store as an ordinary
  content-addressed object (:meth:`ArtifactStore.put`: written once, ``objects/<ab>/...``), and
  each stage task carries its digest (:attr:`StageTask.code`). Edited code is another digest.
- **When** (the client): only when the executor's workers may not share the client's files, i.e.
  :attr:`DaskExecutor.ships_code` (``distributed`` at an ``address``, from a cluster factory or
  a given ``client``). ``sync``, ``threads``, ``processes`` and the LocalCluster pipeflow starts
  run on the client's machine: no bundle is built, and a task's ``code`` is None, so the local
  path does no work at all for this. The bundle is built once per run, after planning, and only
  if some stage is to run; a spec folder with no Python code ships nothing.
- **Where a worker imports from** (:func:`code_folder`): a task with a bundle digest is checked
  once per worker process, folder and digest. If the worker sees the spec's folder and packing it
  gives the same digest, it imports from that folder (so ``__file__`` and paths beside it work
  on a shared disk, as on the client); otherwise (no such folder, unreadable, or other code in it)
  it fetches the bundle from the store (hash-checked, as every store read is), unpacks it once
  into a local cache folder named by its digest (``$PIPEFLOW_CODE_CACHE``, else
  ``~/.cache/pipeflow/code``, else the temporary folder), and imports from there. Unpacking is
  atomic: into a temporary folder beside it, then one ``rename``; a process that loses the race
  to another keeps the winner's folder. Extraction takes regular files with relative names only.
  Comparing digests rather than trusting a folder that merely exists is what keeps a worker from
  running stale code: its copy is used only if it is byte for byte what the client shipped.

The cache key of a stage does not include the bundle digest: a ``python`` stage's fingerprint
already hashes its module's source, and results must be the same (and reusable) whichever
executor ran them. Data beside the spec is not shipped: a stage on such a worker reads its data
through the store or a URL (``ingest`` from ``s3://``), not from a path beside the spec.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

from pipeflow.errors import StoreError

#: where a worker unpacks bundles (one folder per digest); see :func:`cache_root`
CACHE_ENV = "PIPEFLOW_CODE_CACHE"

_SKIP = {"__pycache__", "node_modules", "site-packages"}


def _is_package(folder: Path) -> bool:
    return (
        folder.name.isidentifier()
        and folder.name not in _SKIP
        and (folder / "__init__.py").is_file()
    )


def code_files(base_dir: Path) -> list[tuple[str, Path]]:
    """The importable code of ``base_dir``: ``(name in the archive, file)``, sorted by name."""
    found: list[tuple[str, Path]] = []

    def walk(folder: Path, prefix: str) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            if entry.is_file() and entry.name.endswith(".py"):
                found.append((prefix + entry.name, path))
            elif entry.is_dir() and _is_package(path):
                walk(path, f"{prefix}{entry.name}/")

    walk(base_dir, "")
    found.sort(key=lambda item: item[0])
    return found


def pack(base_dir: Path) -> bytes | None:
    """The deterministic archive of ``base_dir``'s code; None when there is none."""
    files = code_files(base_dir)
    if not files:
        return None
    buf = io.BytesIO()
    import tarfile  # only where code is shipped: a local run never packs

    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, path in files:
            data = path.read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def ship(store: Any, base_dir: Path) -> str | None:
    """Put ``base_dir``'s code in ``store`` (once: the same bytes are not written again); its
    digest, or None when the folder holds no Python code."""
    try:
        data = pack(base_dir)
    except OSError as err:
        raise StoreError(
            f"cannot pack the Python code beside the spec in {base_dir} for the workers: "
            f"{err.strerror or err}"
        ) from None
    return None if data is None else store.put(data)


def digest_of(base_dir: Path) -> str | None:
    """The digest :func:`ship` would give ``base_dir`` (None: no code, or it cannot be read)."""
    try:
        data = pack(base_dir)
    except OSError:
        return None
    return None if data is None else hashlib.sha256(data).hexdigest()


def cache_root() -> Path:
    """Where this process unpacks bundles: ``$PIPEFLOW_CODE_CACHE``, else
    ``~/.cache/pipeflow/code`` (``$XDG_CACHE_HOME`` respected), else the temporary folder (a
    worker whose home is read-only or missing)."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured)
    xdg = os.environ.get("XDG_CACHE_HOME")
    home = Path(xdg) if xdg else Path.home() / ".cache"
    candidate = home / "pipeflow" / "code"
    try:
        candidate.mkdir(parents=True, exist_ok=True)
        if os.access(candidate, os.W_OK):
            return candidate
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / f"pipeflow-code-{os.getuid()}"


def unpacked(store: Any, digest: str, root: Path | None = None) -> Path:
    """The folder holding bundle ``digest``, fetched from ``store`` and unpacked if this machine
    does not have it yet (atomically: a temporary folder, then one rename)."""
    root = root or cache_root()
    final = root / digest
    if final.is_dir():
        return final
    data = store.get(digest)  # hash-checked: these are the bytes the client packed
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-{uuid.uuid4().hex[:8]}-", dir=root))
    except OSError as err:
        raise StoreError(
            f"cannot unpack the spec's code into {root} (set ${CACHE_ENV} to a writable "
            f"folder): {err.strerror or err}"
        ) from None
    try:
        _extract(data, tmp, digest)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # not a lost race: a real failure
                raise
    except OSError as err:
        raise StoreError(
            f"cannot unpack the spec's code into {final}: {err.strerror or err}"
        ) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _extract(data: bytes, into: Path, digest: str) -> None:
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        members = tar.getmembers()
        for m in members:
            parts = Path(m.name).parts
            if not m.isfile() or Path(m.name).is_absolute() or ".." in parts:
                raise StoreError(
                    f"code bundle {digest[:12]} holds {m.name!r}: not a plain file beside the spec"
                )
        tar.extractall(into, members=members, filter="data")


_memo: dict[tuple[str, str], Path] = {}
_memo_lock = threading.Lock()


def code_folder(store: Any, digest: str, base_dir: str) -> Path:
    """Where a worker imports the spec's code from for bundle ``digest``: ``base_dir`` itself if
    this worker sees the same code there, else the unpacked bundle. Decided once per process for
    each (folder, digest)."""
    key = (base_dir, digest)
    found = _memo.get(key)
    if found is not None and found.is_dir():
        return found
    with _memo_lock:  # one fetch per worker, however many threads run stages
        found = _memo.get(key)
        if found is None or not found.is_dir():
            here = Path(base_dir)
            if base_dir and os.access(here, os.R_OK | os.X_OK) and digest_of(here) == digest:
                found = here
            else:
                try:
                    found = unpacked(store, digest)
                except Exception as err:  # fsspec backends raise their own types
                    why = (
                        str(err) if isinstance(err, StoreError) else f"{type(err).__name__}: {err}"
                    )
                    raise StoreError(
                        f"cannot get the spec's code (bundle {digest[:12]}) from the store "
                        f"{store.url}: {why}"
                    ) from None
            _memo[key] = found
    return found


__all__ = [
    "CACHE_ENV",
    "cache_root",
    "code_files",
    "code_folder",
    "digest_of",
    "pack",
    "ship",
    "unpacked",
]
