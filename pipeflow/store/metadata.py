"""Run metadata in SQLite: runs, stage runs, artifacts, params, lineage.

Policy:

- WAL journal, ``synchronous=NORMAL``: readers never block the writer, and a crash loses at most
  the last transactions, never the file's integrity.
- Every write is one ``BEGIN IMMEDIATE`` transaction, so two processes recording runs into the
  same file serialise instead of deadlocking; a busy database is waited for (busy timeout) and
  retried, so "database is locked" does not reach the user while another writer makes progress.
- Writes are idempotent: the same stage result recorded twice (Dask may run a task twice after a
  worker dies) leaves one row (``INSERT ... ON CONFLICT DO UPDATE``).
- Only the client process writes here; workers write artifacts and manifests to the store.
"""

from __future__ import annotations

import json
import os
import random
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from pipeflow.errors import StoreError

SCHEMA_VERSION = 2
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    spec_path TEXT,
    spec_digest TEXT,
    executor TEXT,
    state TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    host TEXT,
    pid INTEGER,
    overrides TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_pipeline ON runs (pipeline, started);
CREATE TABLE IF NOT EXISTS params (
    run_id TEXT NOT NULL REFERENCES runs(id),
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS stage_runs (
    run_id TEXT NOT NULL REFERENCES runs(id),
    stage TEXT NOT NULL,
    type TEXT NOT NULL,
    state TEXT NOT NULL,
    cache_key TEXT,
    reason TEXT,
    cache_hit INTEGER NOT NULL DEFAULT 0,
    started REAL,
    ended REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    traceback TEXT,
    worker TEXT,
    config_digest TEXT,
    config TEXT,
    code_digest TEXT,
    input_digests TEXT,
    seq INTEGER,
    PRIMARY KEY (run_id, stage)
);
CREATE INDEX IF NOT EXISTS stage_runs_by_key ON stage_runs (cache_key);
CREATE INDEX IF NOT EXISTS stage_runs_by_stage ON stage_runs (stage);
CREATE TABLE IF NOT EXISTS artifacts (
    digest TEXT PRIMARY KEY,
    codec TEXT NOT NULL,
    kind TEXT NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    run_id TEXT,
    stage TEXT
);
CREATE TABLE IF NOT EXISTS outputs (
    run_id TEXT NOT NULL,
    stage TEXT NOT NULL,
    port TEXT NOT NULL,
    digest TEXT NOT NULL REFERENCES artifacts(digest),
    PRIMARY KEY (run_id, stage, port)
);
CREATE TABLE IF NOT EXISTS lineage (
    run_id TEXT NOT NULL,
    src_stage TEXT NOT NULL,
    src_port TEXT NOT NULL,
    dst_stage TEXT NOT NULL,
    dst_port TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (run_id, dst_stage, dst_port)
);
CREATE INDEX IF NOT EXISTS lineage_by_digest ON lineage (digest);
"""


def sqlite_path(url: str, base_dir: Path) -> Path:
    """``sqlite:///rel/path`` (relative to ``base_dir``), ``sqlite:////abs/path`` or a bare path."""
    if url.startswith("sqlite:///"):
        url = url[len("sqlite:///") :]
    elif "://" in url:
        from pipeflow.errors import UsageError

        raise UsageError(
            f"metadata URL {url!r} is not supported: expected sqlite:///path/to/file.db"
        )
    path = Path(url)
    return path if path.is_absolute() else (base_dir / path)


class MetadataDB:
    """One SQLite file; safe to share between threads of one process and between processes."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_s: float = 60.0):
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                str(self.path),
                timeout=busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,
            )
        except (OSError, sqlite3.Error) as err:
            raise StoreError(f"cannot open metadata database {self.path}: {err}") from None
        self._lock = threading.RLock()
        self._conn.row_factory = sqlite3.Row
        try:
            self._retry(self._init)
        except BaseException:
            self._conn.close()
            raise

    def _init(self) -> None:
        c = self._conn
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=NORMAL")
        c.execute("PRAGMA foreign_keys=OFF")
        row = c.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name='meta'"
        ).fetchone()
        if row is None:
            # executescript commits any open transaction first, so the script carries its own.
            c.executescript(
                "BEGIN IMMEDIATE;"
                + _SCHEMA
                + f"INSERT OR IGNORE INTO meta VALUES ('schema_version', '{SCHEMA_VERSION}');"
                + "COMMIT;"
            )
            return
        found = c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = int(found[0]) if found else 1
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"metadata database {self.path} has schema version {version}, newer than this "
                f"pipeflow understands ({SCHEMA_VERSION}): upgrade pipeflow"
            )
        if version < SCHEMA_VERSION:
            self._migrate(version)

    def _migrate(self, version: int) -> None:
        """Bring an older database up to ``SCHEMA_VERSION``, one step per version, in one
        transaction (a concurrent opener waits, then finds the work done)."""
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            found = c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = int(found[0]) if found else 1
            if version < 2:  # 2: stage_runs.seq (DAG position) and an index by stage
                cols = {row[1] for row in c.execute("PRAGMA table_info(stage_runs)")}
                if "seq" not in cols:
                    c.execute("ALTER TABLE stage_runs ADD COLUMN seq INTEGER")
                c.execute("CREATE INDEX IF NOT EXISTS stage_runs_by_stage ON stage_runs (stage)")
            c.execute(
                "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- transactions ----------------------------------------------------------------------
    def _retry(self, fn: Callable[[], T]) -> T:
        deadline = time.monotonic() + self.busy_timeout_s
        delay = 0.005
        while True:
            try:
                with self._lock:
                    return fn()
            except sqlite3.OperationalError as err:
                text = str(err)
                if ("locked" not in text and "busy" not in text) or time.monotonic() > deadline:
                    raise StoreError(f"metadata database {self.path}: {text}") from None
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.5)
            except sqlite3.DatabaseError as err:
                raise StoreError(f"metadata database {self.path}: {err}") from None

    def write(self, statements: Iterable[tuple[str, tuple]]) -> None:
        """Run the statements as one transaction (retried as a whole while the DB is busy)."""
        batch = list(statements)

        def tx() -> None:
            c = self._conn
            c.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in batch:
                    c.execute(sql, args)
                c.execute("COMMIT")
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise

        self._retry(tx)

    def query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        return self._retry(lambda: self._conn.execute(sql, args).fetchall())

    # -- runs ------------------------------------------------------------------------------
    def start_run(
        self,
        run_id: str,
        pipeline: str,
        *,
        spec_path: str,
        spec_digest: str,
        executor: str,
        params: dict[str, Any],
        overrides: list[str],
        stages: list[tuple[str, str]],
    ) -> None:
        now = time.time()
        stmts: list[tuple[str, tuple]] = [
            (
                "INSERT INTO runs (id, pipeline, spec_path, spec_digest, executor, state, started, host, pid, overrides)"
                " VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?, ?)",
                (
                    run_id,
                    pipeline,
                    spec_path,
                    spec_digest,
                    executor,
                    now,
                    socket.gethostname(),
                    os.getpid(),
                    json.dumps(overrides),
                ),
            )
        ]
        stmts += [
            ("INSERT INTO params VALUES (?, ?, ?)", (run_id, k, json.dumps(v, default=str)))
            for k, v in params.items()
        ]
        stmts += [
            (
                "INSERT INTO stage_runs (run_id, stage, type, state) VALUES (?, ?, ?, 'pending')",
                (run_id, name, type_),
            )
            for name, type_ in stages
        ]
        self.write(stmts)

    def finish_run(self, run_id: str, state: str, error: str | None = None) -> None:
        self.write(
            [
                (
                    "UPDATE runs SET state = ?, ended = ?, error = ? WHERE id = ?",
                    (state, time.time(), error, run_id),
                )
            ]
        )

    def mark_interrupted(self) -> int:
        """Runs of this host left 'running' by a process that no longer exists become 'interrupted'."""
        host = socket.gethostname()
        stale = [
            r["id"]
            for r in self.query(
                "SELECT id, pid FROM runs WHERE state = 'running' AND host = ?", (host,)
            )
            if r["pid"] and not _pid_alive(int(r["pid"]))
        ]
        if stale:
            self.write(
                [
                    (
                        "UPDATE runs SET state = 'interrupted', error = 'the run process died' WHERE id = ? AND state = 'running'",
                        (rid,),
                    )
                    for rid in stale
                ]
                + [
                    (
                        "UPDATE stage_runs SET state = 'pending' WHERE run_id = ? AND state = 'running'",
                        (rid,),
                    )
                    for rid in stale
                ]
            )
        return len(stale)

    def record_stages(self, run_id: str, results: Iterable[dict[str, Any]]) -> None:
        """Record finished (or cached / skipped) stages: one transaction for the whole batch."""
        stmts: list[tuple[str, tuple]] = []
        for r in results:
            stmts.append(
                (
                    "INSERT INTO stage_runs (run_id, stage, type, state, cache_key, reason, cache_hit, started, ended,"
                    " attempts, error, traceback, worker, config_digest, config, code_digest, input_digests, seq)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (run_id, stage) DO UPDATE SET state=excluded.state, cache_key=excluded.cache_key,"
                    " reason=excluded.reason, cache_hit=excluded.cache_hit, started=excluded.started, ended=excluded.ended,"
                    " attempts=excluded.attempts, error=excluded.error, traceback=excluded.traceback, worker=excluded.worker,"
                    " config_digest=excluded.config_digest, config=excluded.config, code_digest=excluded.code_digest, input_digests=excluded.input_digests, seq=excluded.seq",
                    (
                        run_id,
                        r["stage"],
                        r["type"],
                        r["state"],
                        r.get("key"),
                        r.get("reason"),
                        1 if r["state"] == "cached" else 0,
                        r.get("started"),
                        r.get("ended"),
                        r.get("attempts", 0),
                        r.get("error"),
                        r.get("traceback"),
                        r.get("worker"),
                        r.get("config_digest"),
                        json.dumps(r["config"], sort_keys=True)
                        if r.get("config") is not None
                        else None,
                        r.get("code_digest"),
                        json.dumps(r.get("input_digests") or {}, sort_keys=True),
                        r.get("seq"),
                    ),
                )
            )
            now = time.time()
            for port, ref in (r.get("outputs") or {}).items():
                stmts.append(
                    (
                        "INSERT OR IGNORE INTO artifacts VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (ref.digest, ref.codec, ref.kind, ref.size, now, run_id, r["stage"]),
                    )
                )
                stmts.append(
                    (
                        "INSERT OR REPLACE INTO outputs VALUES (?, ?, ?, ?)",
                        (run_id, r["stage"], port, ref.digest),
                    )
                )
            for dst_port, (src_stage, src_port, digest) in (r.get("lineage") or {}).items():
                stmts.append(
                    (
                        "INSERT OR REPLACE INTO lineage VALUES (?, ?, ?, ?, ?, ?)",
                        (run_id, src_stage, src_port, r["stage"], dst_port, digest),
                    )
                )
        if stmts:
            self.write(stmts)

    # -- reading ---------------------------------------------------------------------------
    def runs(self, limit: int = 20, pipeline: str | None = None) -> list[sqlite3.Row]:
        sql = (
            "SELECT r.*, (SELECT COUNT(*) FROM stage_runs s WHERE s.run_id = r.id) AS n_stages,"
            " (SELECT COUNT(*) FROM stage_runs s WHERE s.run_id = r.id AND s.state = 'done') AS n_done,"
            " (SELECT COUNT(*) FROM stage_runs s WHERE s.run_id = r.id AND s.state = 'cached') AS n_cached,"
            " (SELECT COUNT(*) FROM stage_runs s WHERE s.run_id = r.id AND s.state = 'failed') AS n_failed"
            " FROM runs r"
        )
        args: tuple = ()
        if pipeline:
            sql += " WHERE r.pipeline = ?"
            args = (pipeline,)
        sql += " ORDER BY r.started DESC, r.id DESC LIMIT ?"
        return self.query(sql, (*args, limit))

    def find_run(self, prefix: str) -> sqlite3.Row | None:
        if prefix in ("latest", "last"):
            rows = self.query("SELECT * FROM runs ORDER BY started DESC, id DESC LIMIT 1")
        else:
            # substr, not LIKE: '_' and '%' in what the user typed are not wildcards
            rows = self.query(
                "SELECT * FROM runs WHERE substr(id, 1, ?) = ? ORDER BY id = ? DESC, started DESC LIMIT 2",
                (len(prefix), prefix, prefix),
            )
            if len(rows) > 1 and rows[0]["id"] != prefix:
                raise StoreError(f"run id prefix {prefix!r} is ambiguous; give more characters")
        return rows[0] if rows else None

    def stage_runs(self, run_id: str) -> list[sqlite3.Row]:
        return self.query(
            "SELECT * FROM stage_runs WHERE run_id = ? ORDER BY COALESCE(seq, 1e18), COALESCE(started, 1e18), stage",
            (run_id,),
        )

    def params(self, run_id: str) -> dict[str, Any]:
        return {
            r["name"]: json.loads(r["value"])
            for r in self.query("SELECT name, value FROM params WHERE run_id = ?", (run_id,))
        }

    def outputs(self, run_id: str) -> list[sqlite3.Row]:
        return self.query(
            "SELECT o.stage, o.port, a.* FROM outputs o JOIN artifacts a ON a.digest = o.digest WHERE o.run_id = ? ORDER BY o.stage, o.port",
            (run_id,),
        )

    def lineage(self, run_id: str) -> list[sqlite3.Row]:
        return self.query(
            "SELECT * FROM lineage WHERE run_id = ? ORDER BY dst_stage, dst_port", (run_id,)
        )

    def last_stage_runs(self, pipeline: str) -> LastStageRuns:
        """The most recent record of each stage of ``pipeline`` (to explain re-runs), looked up
        lazily: a plan asks only about stages that must run, so a cached re-run asks nothing."""
        return LastStageRuns(self, pipeline)

    def last_stage_run(self, pipeline: str, stage: str) -> sqlite3.Row | None:
        rows = self.query(
            "SELECT s.* FROM stage_runs s JOIN runs r ON r.id = s.run_id"
            " WHERE s.stage = ? AND r.pipeline = ? AND s.state IN ('done', 'cached', 'failed')"
            " ORDER BY r.started DESC LIMIT 1",
            (stage, pipeline),
        )
        return rows[0] if rows else None

    def dataset_versions(self) -> list[dict[str, Any]]:
        """Dataset versions: the content fingerprints of what ``ingest`` stages read (their
        ``code_digest``), with the source path and when they were first and last used."""
        rows = self.query(
            "SELECT s.code_digest AS version, json_extract(s.config, '$.path') AS source, r.pipeline AS pipeline,"
            " s.stage AS stage, MIN(r.started) AS first_seen, MAX(r.started) AS last_used, COUNT(DISTINCT r.id) AS runs"
            " FROM stage_runs s JOIN runs r ON r.id = s.run_id"
            " WHERE s.type = 'ingest' AND s.code_digest IS NOT NULL AND s.state IN ('done', 'cached')"
            " GROUP BY s.code_digest, source, r.pipeline, s.stage ORDER BY last_used DESC"
        )
        return [dict(r) for r in rows]

    def dataset_uses(self, version: str) -> list[dict[str, Any]]:
        """The runs whose ingest stages read dataset ``version``, newest first."""
        rows = self.query(
            "SELECT r.id AS run_id, r.pipeline AS pipeline, r.state AS state, r.started AS started, s.stage AS stage,"
            " (SELECT o.digest FROM outputs o WHERE o.run_id = s.run_id AND o.stage = s.stage LIMIT 1) AS digest"
            " FROM stage_runs s JOIN runs r ON r.id = s.run_id"
            " WHERE s.type = 'ingest' AND s.code_digest = ? AND s.state IN ('done', 'cached') ORDER BY r.started DESC",
            (version,),
        )
        return [dict(r) for r in rows]

    def integrity_check(self) -> str:
        return str(self.query("PRAGMA integrity_check")[0][0])


class LastStageRuns:
    """``get(stage)`` -> the stage's last record in ``pipeline``, queried on first use."""

    def __init__(self, db: MetadataDB, pipeline: str):
        self.db, self.pipeline = db, pipeline
        self._memo: dict[str, sqlite3.Row | None] = {}

    def get(self, stage: str, default: Any = None) -> Any:
        if stage not in self._memo:
            self._memo[stage] = self.db.last_stage_run(self.pipeline, stage)
        found = self._memo[stage]
        return default if found is None else found


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
