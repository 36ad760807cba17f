"""``pipeflow store gc``: delete the run artifacts nothing needs any more (DVC's ``gc``).

A store only grows: every stage result is an object under ``objects/`` and a cache manifest
under ``cache/``, and nothing is ever rewritten. ``collect`` deletes what is **unreachable**;
everything below is reachable and kept:

1. **every registered version**, archived ones included (archiving is reversible): every object
   its record names (the model, the training and evaluation tables), and the outputs and inputs
   (lineage) of the stage that registered it, in the run that did, from the metadata database.
   The alias history only ever names registered versions, so it is kept by the same rule;
2. the outputs of the **last N runs of each pipeline** (``--keep-last``, default 1), with their
   cache manifests;
3. the **latest finished record of every stage** of every pipeline (done or cached): its outputs
   and its cache manifest, so that re-running the latest spec finds every stage in the cache;
4. anything **younger than ``--older-than``** (default 30 days): objects and manifests written
   since, and the outputs and manifests of runs started since;
5. every object a kept manifest names (a manifest never outlives its objects).

Objects are read from the listing of ``objects/`` (with sizes and modification times, local or
any fsspec store), manifests from ``cache/<ab>/`` and the batch files of ``cache/batches/`` (a
batch file that loses entries is rewritten with the rest, then removed, as the store's own
compaction does). The order makes a crash harmless: the deleted digests are recorded in the
metadata database first (table ``collected``: ``store check`` and ``runs output`` then say
"collected by store gc" rather than "missing"), then manifests go, then objects, so no manifest
ever names a deleted object. The run history itself (runs, stage records, lineage) is never
deleted.

**Never beside a run.** gc refuses while a run is in progress: a live run lock under ``locks/``
(:mod:`pipeflow.runner.lock`), or a run the metadata database records as ``running`` (after
marking this host's dead ones interrupted). Both are checked again just before anything is
deleted. A run starting in the instant between that check and the deletions could find a
manifest whose objects then go: it fails reading them, and its next attempt recomputes. What a
run writes is young, so ``--older-than`` also shields whatever a concurrent run writes.

**One history.** Reachability comes from one metadata database. On a store several machines
share with *their own* SQLite files, another machine's runs are invisible here: run gc where the
team's database is (PostgreSQL, ``docs/howto-team.md``), or keep ``--older-than`` longer than
anyone's gap between runs. Code bundles shipped to a cluster's workers
(:mod:`pipeflow.execute.bundle`) are needed only while their run lasts; they go when old.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pipeflow.errors import StoreError, UsageError
from pipeflow.registry import Registry
from pipeflow.runner.lock import holder_alive, read_holder
from pipeflow.store import layout
from pipeflow.store.artifacts import ArtifactStore
from pipeflow.store.metadata import MetadataDB

__all__ = ["Collection", "collect", "parse_age"]

_HEX64 = re.compile(r"[0-9a-f]{64}")
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` or a number of seconds -> seconds."""
    found = _AGE.match(str(text))
    if not found:
        raise UsageError(
            f"--older-than {text!r}: expected a number and a unit, e.g. 30d, 12h, 90m, 45s, 2w"
        )
    return float(found.group(1)) * _UNITS[found.group(2)]


@dataclass(frozen=True)
class Doomed:
    """An object to delete: digest, size, path, and which run and stage first made it."""

    digest: str
    size: int
    path: str
    origin: str


@dataclass
class Collection:
    """What :func:`collect` deleted (or, with ``dry_run``, would delete) and what it kept."""

    url: str
    dry_run: bool
    objects: list[Doomed] = field(default_factory=list)
    manifests: int = 0
    batch_files: int = 0  # batch files rewritten without their unreachable entries
    kept_objects: int = 0
    kept_bytes: int = 0

    @property
    def bytes(self) -> int:
        return sum(o.size for o in self.objects)


def collect(
    store: ArtifactStore,
    db: MetadataDB,
    *,
    keep_last: int = 1,
    older_than_s: float = 30 * 86400,
    dry_run: bool = False,
    now: float | None = None,
) -> Collection:
    """Delete what is unreachable (see the module docstring); with ``dry_run``, only say what."""
    if keep_last < 0:
        raise UsageError(f"--keep-last {keep_last}: expected 0 or more")
    if older_than_s < 0:
        raise UsageError("--older-than: expected a duration of 0 or more")
    cutoff = (time.time() if now is None else now) - older_than_s
    refuse_while_running(store, db)
    keys, digests = _reachable(store, db, keep_last, cutoff)
    out = Collection(store.url, dry_run)
    # manifests: which go (and the objects kept ones name stay)
    manifest_files: list[str] = []
    for rel, key, mtime in _manifest_files(store):
        if key in keys or mtime >= cutoff:
            digests |= _named_objects(store, rel)
        else:
            manifest_files.append(rel)
    batches: list[tuple[str, dict[str, Any]]] = []  # (file, kept entries) of changed files
    for rel, entries, mtime in _batch_files(store):
        kept = {
            k: m
            for k, m in entries.items()
            if k in keys or mtime >= cutoff or _finished(m) >= cutoff
        }
        for manifest in kept.values():
            digests |= _outputs(manifest)
        if len(kept) < len(entries):
            batches.append((rel, kept))
            out.manifests += len(entries) - len(kept)
    out.manifests += len(manifest_files)
    out.batch_files = len(batches)
    origins = _origins(db)
    for digest, path, size, mtime in _objects(store):
        if digest in digests or mtime >= cutoff:
            out.kept_objects += 1
            out.kept_bytes += size
        else:
            out.objects.append(Doomed(digest, size, path, origins.get(digest, "")))
    if dry_run:
        return out
    refuse_while_running(store, db)  # again: the listing above took a while
    db.record_collected((o.digest, o.size) for o in out.objects)
    for rel, kept in batches:
        if kept:
            store.write_batch(kept)
        store.delete([store.path(rel)])
    store.delete([store.path(rel) for rel in manifest_files])
    store.delete([o.path for o in out.objects])
    return out


# -- refusing while a run is in progress ------------------------------------------------------


def refuse_while_running(store: ArtifactStore, db: MetadataDB) -> None:
    """StoreError naming the run when a run lock is held or a run is recorded as running."""
    for name in store.list_names(layout.LOCKS):
        found = read_holder(
            store,
            f"{layout.LOCKS}/{name}",
            "store gc deletes nothing while a run may be in progress (remove the lock if no run "
            "is)",
        )
        if found is None:
            continue  # released since the listing
        _, holder = found
        if holder_alive(holder):
            raise StoreError(
                f"a run is in progress: run {holder.get('run_id', '?')} of pipeline "
                f"'{holder.get('pipeline', '?')}' holds {store.path(f'{layout.LOCKS}/{name}')} "
                f"(pid {holder['pid']} on host {holder.get('host', '?')}); store gc deletes "
                "nothing while a run is in progress: try again when it has finished"
            )
    db.mark_interrupted()
    running = db.query(
        "SELECT id, pipeline, host, pid FROM runs WHERE state = 'running' ORDER BY started"
    )
    if running:
        r = running[0]
        raise StoreError(
            f"run {r['id']} of pipeline '{r['pipeline']}' is recorded as running in "
            f"{db.location} (pid {r['pid']} on host {r['host']}); store gc deletes nothing while "
            "a run is in progress: try again when it has finished"
        )


# -- what is reachable ------------------------------------------------------------------------


def _reachable(
    store: ArtifactStore, db: MetadataDB, keep_last: int, cutoff: float
) -> tuple[set[str], set[str]]:
    """(cache keys, object digests) that must stay."""
    keys: set[str] = set()
    digests: set[str] = set()
    outputs: dict[tuple[str, str], set[str]] = {}
    for row in db.query("SELECT run_id, stage, digest FROM outputs"):
        outputs.setdefault((row["run_id"], row["stage"]), set()).add(row["digest"])
    # 1. registered versions: what the record names, and the registering stage's lineage
    registry = Registry(store)
    for model in registry.models():
        for record in registry.versions(model):
            digests |= set(_hex_strings(record))
            run = record.get("run") if isinstance(record.get("run"), dict) else {}
            run_id, stage = run.get("run_id"), run.get("stage")
            if run_id and stage:
                digests |= outputs.get((run_id, stage), set())
                digests |= {
                    r["digest"]
                    for r in db.query(
                        "SELECT digest FROM lineage WHERE run_id = ? AND dst_stage = ?",
                        (run_id, stage),
                    )
                }
    # 2. the last N runs of each pipeline, and 4. runs started since the cutoff
    kept_runs: set[str] = set()
    per_pipeline: dict[str, int] = {}
    for row in db.query("SELECT id, pipeline, started FROM runs ORDER BY started DESC, id DESC"):
        seen = per_pipeline.get(row["pipeline"], 0)
        if seen < keep_last or float(row["started"]) >= cutoff:
            kept_runs.add(row["id"])
        per_pipeline[row["pipeline"]] = seen + 1
    # 3. the latest finished record of every stage of every pipeline
    latest: set[tuple[str, str]] = set()
    for row in db.query(
        "SELECT s.run_id, s.stage, s.cache_key, s.state, r.pipeline FROM stage_runs s"
        " JOIN runs r ON r.id = s.run_id ORDER BY r.started DESC, r.id DESC"
    ):
        finished = row["state"] in ("done", "cached")
        mark = (row["pipeline"], row["stage"])
        if row["run_id"] in kept_runs or (finished and mark not in latest):
            if finished:
                latest.add(mark)
            if row["cache_key"]:
                keys.add(row["cache_key"])
            digests |= outputs.get((row["run_id"], row["stage"]), set())
    return keys, digests


def _hex_strings(value: Any) -> Iterator[str]:
    """Every 64-hex-digit string in a JSON value (the digests a version record names)."""
    if isinstance(value, str):
        if _HEX64.fullmatch(value):
            yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _hex_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _hex_strings(item)


# -- reading the store ------------------------------------------------------------------------


def _objects(store: ArtifactStore) -> Iterator[tuple[str, str, int, float]]:
    """(digest, path, size, mtime) of every object."""
    for path, size, mtime in store.walk(layout.OBJECTS):
        fan, name = _tail(path)
        digest = fan + name
        if _HEX64.fullmatch(digest) and len(fan) == 2:
            yield digest, path, size, mtime


def _tail(path: str) -> tuple[str, str]:
    head, name = posixpath.split(path.replace(os.sep, "/"))
    return posixpath.basename(head), name


def _manifest_files(store: ArtifactStore) -> Iterator[tuple[str, str, float]]:
    """(relative path, key, mtime) of every one-file manifest."""
    for path, _, mtime in store.walk(layout.CACHE):
        fan, name = _tail(path)
        key = name.removesuffix(".json")
        if name.endswith(".json") and _HEX64.fullmatch(key) and key[:2] == fan:
            yield f"{layout.CACHE}/{fan}/{name}", key, mtime


def _batch_files(store: ArtifactStore) -> Iterator[tuple[str, dict[str, Any], float]]:
    """(relative path, entries, mtime) of every batch file of manifests."""
    for path, _, mtime in store.walk(layout.CACHE_BATCHES):
        name = _tail(path)[1]
        if not name.endswith(".jsonl"):
            continue
        rel = f"{layout.CACHE_BATCHES}/{name}"
        raw = store.read_text(rel)
        if raw is None:
            continue
        entries: dict[str, Any] = {}
        for line in raw.splitlines():
            try:
                entry = json.loads(line)
                entries[entry["key"]] = entry["manifest"]
            except (ValueError, KeyError, TypeError):
                continue  # a damaged line: dropped with the file if nothing else keeps it
        yield rel, entries, mtime


def _named_objects(store: ArtifactStore, rel: str) -> set[str]:
    raw = store.read_text(rel)
    try:
        return _outputs(json.loads(raw)) if raw is not None else set()
    except ValueError:
        return set()


def _outputs(manifest: Any) -> set[str]:
    try:
        return {str(r["digest"]) for r in manifest["outputs"].values()}
    except (KeyError, TypeError, AttributeError):
        return set()


def _finished(manifest: Any) -> float:
    try:
        return float(manifest.get("finished") or 0)
    except (AttributeError, TypeError, ValueError):
        return 0.0


def _origins(db: MetadataDB) -> dict[str, str]:
    """Digest -> "run R stage S" of the run and stage that first recorded it."""
    return {
        r["digest"]: f"run {r['run_id']} stage {r['stage']}"
        for r in db.query("SELECT digest, run_id, stage FROM artifacts")
    }
