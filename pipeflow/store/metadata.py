"""Run metadata: runs, stage runs, artifacts, params, lineage, what stages logged, tags — one
contract, two databases. The schema and its versions are :mod:`pipeflow.store.schema`; the
queries about logged metrics, params, tags and notes are :mod:`pipeflow.store.logged` (mixed in
here); ``runs(where=...)`` filters as :mod:`pipeflow.store.search` says.

:class:`MetadataDB` is the contract every command reads and writes run history through; it is
written once, in SQL both databases speak, over three primitives a backend provides:
``write`` (statements as one transaction, retried as a whole on a transient failure),
``query`` and ``integrity_check``. The backends:

- :class:`~pipeflow.store.sqlite.SQLiteMetadata` (the default: one file, beside the spec or
  in a local store) — WAL, ``BEGIN IMMEDIATE``, a busy database waited for;
- :class:`~pipeflow.store.postgres.PostgresMetadata` (a team's shared history,
  ``postgresql://user@host/db``) — a psycopg 3 connection pool, a dropped connection or a
  serialisation failure or deadlock retried.

:func:`pipeflow.store.database.open_metadata` opens the right one: a ``postgresql://`` /
``postgres://`` URL is PostgreSQL, ``sqlite:///path`` or a bare path is SQLite
(:func:`parse_location`). The same contract test suite (``tests/store/test_metadata.py``) runs
against both.

Policy, for both:

- Writes are idempotent: the same stage result recorded twice (Dask may run a task twice after a
  worker dies) leaves one row, and a transaction retried after its commit was lost in a dropped
  connection changes nothing (``INSERT ... ON CONFLICT``).
- The schema carries a version (table ``meta``); an older database is upgraded on first use, a
  newer one refused with "upgrade pipeflow".
- Only the client process writes here; workers write artifacts and manifests to the store.
- SQL in this module uses ``?`` placeholders and no ``?`` or ``%`` inside literals: the
  PostgreSQL backend rewrites the placeholders.
- ``collected``: objects ``store gc`` deleted, so a recorded output whose object is gone reads
  as collected, not damage. No other row is ever deleted: the history outlives its artifacts.
- ``location`` names the database in messages: the file's path, or the URL without a password
  (credentials come from the environment — ``PGPASSWORD``, ``~/.pgpass`` — never the spec).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeflow.core.jsonenc import dumps_sorted
from pipeflow.errors import StoreError, UsageError
from pipeflow.store.logged import LoggedRecords
from pipeflow.store.schema import SCHEMA_VERSION, TABLES, schema
from pipeflow.store.search import Condition, where_sql

__all__ = [
    "SCHEMA_VERSION",
    "TABLES",
    "LastStageRuns",
    "MetadataDB",
    "absolute",
    "exists",
    "is_postgres",
    "parse_location",
    "redact",
    "same_sql",
    "schema",
    "sqlite_path",
]


_POSTGRES = ("postgresql://", "postgres://")


def is_postgres(location: str | os.PathLike[str]) -> bool:
    return str(location).startswith(_POSTGRES)


def parse_location(location: str | os.PathLike[str], base_dir: Path | None = None) -> str | Path:
    """A PostgreSQL URL (kept as given) or the SQLite file a location names."""
    text = str(location)
    if is_postgres(text):
        return text
    return sqlite_path(text, base_dir or Path.cwd())


def absolute(location: str | os.PathLike[str]) -> str:
    """A location as a command records it: a URL as given, a file path made absolute."""
    text = str(location)
    return text if is_postgres(text) else os.path.abspath(parse_location(text))


def exists(location: str | os.PathLike[str]) -> bool:
    """Whether there is a database to read: a SQLite file must exist; a server database is
    there to ask (connecting says if it is not)."""
    return is_postgres(location) or os.path.exists(location)


def sqlite_path(url: str, base_dir: Path) -> Path:
    """``sqlite:///rel/path`` (relative to ``base_dir``), ``sqlite:////abs/path`` or a bare path."""
    if url.startswith("sqlite:///"):
        url = url[len("sqlite:///") :]
    elif "://" in url:
        raise UsageError(
            f"metadata URL {url!r} is not supported: expected sqlite:///path/to/file.db "
            "or postgresql://user@host/database"
        )
    path = Path(url)
    return path if path.is_absolute() else (base_dir / path)


def redact(url: str) -> str:
    """``url`` without the password it may carry (for messages and records)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class MetadataDB(LoggedRecords):
    """The run history, whichever database holds it (open one with
    :func:`~pipeflow.store.database.open_metadata`).

    Safe to share between threads of one process, and between processes and machines (as far
    as the database is: a SQLite file on one machine, a PostgreSQL server for a team).
    """

    #: the file (SQLite) or the URL without a password (PostgreSQL), for messages
    location: str
    #: SQLite's file; None for a server database
    path: Path | None = None

    # -- what a backend provides ----------------------------------------------------------------
    def write(self, statements: Iterable[tuple[str, tuple]]) -> None:
        """Run the statements as one transaction (retried as a whole on a transient failure)."""
        raise NotImplementedError

    def query(self, sql: str, args: tuple = ()) -> list[Any]:
        """Rows that read like ``sqlite3.Row``: ``row["name"]``, ``row[0]``, ``row.keys()``."""
        raise NotImplementedError

    def integrity_check(self) -> str:
        """``"ok"``, or what is wrong with the database itself (not with what it records)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def json_text(self, column: str, key: str) -> str:
        """SQL for the text of ``key`` in the JSON object held in ``column``."""
        return f"json_extract({column}, '$.{key}')"

    def __enter__(self) -> MetadataDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"

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
        tags: Mapping[str, str] | None = None,
        note: str | None = None,
        records: Iterable[dict[str, Any]] = (),
    ) -> None:
        """Record a run as started, its ``stages`` (name, type) pending. ``records``: stages
        decided already (reused from the store), recorded as :meth:`record_stages` records
        them, in the same transaction and not first as pending (a fully cached run of a
        thousand stages writes each of its rows once)."""
        records = list(records)
        decided = {r["stage"] for r in records}
        now = time.time()
        stmts: list[tuple[str, tuple]] = [
            (
                "INSERT INTO runs (id, pipeline, spec_path, spec_digest, executor, state, started, host, pid, overrides, note)"
                " VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
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
                    note,
                ),
            )
        ]
        stmts += _rows(
            "INSERT INTO tags VALUES {} ON CONFLICT (run_id, name) DO NOTHING",
            [(run_id, k, v) for k, v in (tags or {}).items()],
        )
        stmts += _rows(
            "INSERT INTO params VALUES {} ON CONFLICT (run_id, name) DO NOTHING",
            [(run_id, k, json.dumps(v, default=str)) for k, v in params.items()],
        )
        stmts += _rows(
            "INSERT INTO stage_runs (run_id, stage, type, state) VALUES {}"
            " ON CONFLICT (run_id, stage) DO NOTHING",
            [(run_id, name, type_, "pending") for name, type_ in stages if name not in decided],
        )
        self.write([*stmts, *self._stage_statements(run_id, records)])

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
        """Record finished (or cached / skipped) stages: one transaction for the whole batch,
        the rows of each table together (one ``executemany`` per table, see :func:`_rows`).

        A result that carries ``metrics`` (:class:`~pipeflow.core.tracking.Metric` s) or
        ``logged_params`` replaces what the stage logged in this run; ``from_run`` names the run
        that logged them when it is another (a stage reused from the store). One that carries
        ``log`` (:class:`~pipeflow.core.progress.LogLine` s) replaces the stage's log lines."""
        stmts = self._stage_statements(run_id, results)
        if stmts:
            self.write(stmts)

    def _stage_statements(
        self, run_id: str, results: Iterable[dict[str, Any]]
    ) -> list[tuple[str, tuple]]:
        """The statements that record ``results`` (see :meth:`record_stages`)."""
        stages: list[tuple] = []
        artifacts: dict[str, tuple] = {}
        outputs: list[tuple] = []
        lineage: list[tuple] = []
        logged: list[tuple] = []  # (run_id, stage): the stages whose log this batch replaces
        metrics: list[tuple] = []
        params: list[tuple] = []
        logs: list[tuple] = []
        log_of: list[tuple] = []  # (run_id, stage): the stages whose log lines this batch replaces
        now = time.time()
        for r in results:
            if "log" in r:
                log_of.append((run_id, r["stage"]))
                logs += [
                    (run_id, r["stage"], x.line, x.time, x.level, x.logger, x.message)
                    for x in r["log"] or ()
                ]
            if "metrics" in r or "logged_params" in r:
                logged.append((run_id, r["stage"]))
                origin = r.get("from_run") or run_id
                metrics += [
                    (run_id, r["stage"], m.name, m.step, m.value, m.time, origin)
                    for m in r.get("metrics") or ()
                ]
                params += [
                    (run_id, r["stage"], k, v, origin)
                    for k, v in (r.get("logged_params") or {}).items()
                ]
            config = r.get("config")
            stages.append(
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
                    dumps_sorted(config) if config is not None else None,
                    r.get("code_digest"),
                    dumps_sorted(r.get("input_digests") or {}),
                    r.get("seq"),
                )
            )
            for port, ref in (r.get("outputs") or {}).items():
                artifacts.setdefault(
                    ref.digest, (ref.digest, ref.codec, ref.kind, ref.size, now, run_id, r["stage"])
                )
                outputs.append((run_id, r["stage"], port, ref.digest))
            for dst_port, (src_stage, src_port, digest) in (r.get("lineage") or {}).items():
                lineage.append((run_id, src_stage, src_port, r["stage"], dst_port, digest))
        stmts = [
            *_rows(_STAGE_UPSERT, stages),
            *_rows(
                "INSERT INTO artifacts VALUES {} ON CONFLICT (digest) DO NOTHING",
                list(artifacts.values()),
            ),
            *_rows(
                "INSERT INTO outputs VALUES {} ON CONFLICT (run_id, stage, port)"
                " DO UPDATE SET digest = excluded.digest",
                outputs,
            ),
            *_rows(
                "INSERT INTO lineage VALUES {} ON CONFLICT (run_id, dst_stage, dst_port)"
                " DO UPDATE SET src_stage = excluded.src_stage,"
                " src_port = excluded.src_port, digest = excluded.digest",
                lineage,
            ),
            # a stage's log is what its latest record says: a stage recorded again (Dask ran
            # it twice) leaves no value of the first time behind
            *[("DELETE FROM metrics WHERE run_id = ? AND stage = ?", key) for key in logged],
            *[("DELETE FROM logged_params WHERE run_id = ? AND stage = ?", key) for key in logged],
            *_rows("INSERT INTO metrics VALUES {}", metrics),
            *_rows("INSERT INTO logged_params VALUES {}", params),
            *[("DELETE FROM stage_logs WHERE run_id = ? AND stage = ?", key) for key in log_of],
            *_rows("INSERT INTO stage_logs VALUES {}", logs),
        ]
        return stmts

    # -- reading ---------------------------------------------------------------------------
    def runs(
        self,
        limit: int = 20,
        pipeline: str | None = None,
        where: Sequence[Condition] = (),
    ) -> list[Any]:
        """The latest ``limit`` runs (of ``pipeline``; meeting the ``where`` conditions, see
        :mod:`pipeflow.store.search`), newest first."""
        sql = (
            "SELECT r.*, (SELECT COUNT(*) FROM stage_runs s WHERE s.run_id = r.id) AS n_stages,"
            " (SELECT COUNT(*) FROM stage_runs s WHERE s.run_id = r.id AND s.state = 'done') AS n_done,"
            " (SELECT COUNT(*) FROM stage_runs s WHERE s.run_id = r.id AND s.state = 'cached') AS n_cached,"
            " (SELECT COUNT(*) FROM stage_runs s WHERE s.run_id = r.id AND s.state = 'failed') AS n_failed"
            " FROM runs r"
        )
        filters: list[str] = []
        args: tuple = ()
        if pipeline:
            filters.append("r.pipeline = ?")
            args = (pipeline,)
        if where:
            condition, more = where_sql(where, "r")
            filters.append(condition)
            args += more
        if filters:
            sql += " WHERE " + " AND ".join(filters)
        sql += " ORDER BY r.started DESC, r.id DESC LIMIT ?"
        return self.query(sql, (*args, limit))

    def find_run(self, prefix: str, pipeline: str | None = None) -> Any | None:
        """The run a unique id prefix names, or ``latest`` / ``last``: the newest run (of
        ``pipeline`` when given: a store shared by several pipelines has one latest per pipeline)."""
        if prefix in ("latest", "last"):
            where, args = ("WHERE pipeline = ? ", (pipeline,)) if pipeline else ("", ())
            rows = self.query(
                f"SELECT * FROM runs {where}ORDER BY started DESC, id DESC LIMIT 1",  # nosec B608 (fixed fragments)
                args,
            )
        else:
            # substr, not LIKE: '_' and '%' in what the user typed are not wildcards
            rows = self.query(
                "SELECT * FROM runs WHERE substr(id, 1, ?) = ? ORDER BY id = ? DESC, started DESC LIMIT 2",
                (len(prefix), prefix, prefix),
            )
            if len(rows) > 1 and rows[0]["id"] != prefix:
                raise StoreError(f"run id prefix {prefix!r} is ambiguous; give more characters")
        return rows[0] if rows else None

    def stage_runs(self, run_id: str) -> list[Any]:
        return self.query(
            "SELECT * FROM stage_runs WHERE run_id = ? ORDER BY COALESCE(seq, 1e18), COALESCE(started, 1e18), stage",
            (run_id,),
        )

    def params(self, run_id: str) -> dict[str, Any]:
        return {
            r["name"]: json.loads(r["value"])
            for r in self.query("SELECT name, value FROM params WHERE run_id = ?", (run_id,))
        }

    def outputs(self, run_id: str) -> list[Any]:
        return self.query(
            # no `a.*`: artifacts has its own stage (the first producer), and which of two
            # same-named columns a row keeps differs between sqlite3 and psycopg
            "SELECT o.stage, o.port, a.digest, a.codec, a.kind, a.size, a.created, a.run_id"
            " FROM outputs o JOIN artifacts a ON a.digest = o.digest WHERE o.run_id = ?"
            " ORDER BY o.stage, o.port",
            (run_id,),
        )

    def lineage(self, run_id: str) -> list[Any]:
        return self.query(
            "SELECT * FROM lineage WHERE run_id = ? ORDER BY dst_stage, dst_port", (run_id,)
        )

    def last_stage_runs(self, pipeline: str) -> LastStageRuns:
        """The most recent record of each stage of ``pipeline`` (to explain re-runs), looked up
        lazily: a plan asks only about stages that must run, so a cached re-run asks nothing."""
        return LastStageRuns(self, pipeline)

    def last_stage_run(self, pipeline: str, stage: str) -> Any | None:
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
            f"SELECT s.code_digest AS version, {self.json_text('s.config', 'path')} AS source, r.pipeline AS pipeline,"  # nosec B608 (a fixed expression)
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

    # -- store gc --------------------------------------------------------------------------
    def record_collected(self, objects: Iterable[tuple[str, int]]) -> None:
        """Remember objects (digest, size) that ``store gc`` is about to delete."""
        rows = [(digest, int(size), time.time()) for digest, size in dict(objects).items()]
        upsert = " ON CONFLICT (digest) DO UPDATE SET size = excluded.size, collected = excluded.collected"
        self.write(_rows("INSERT INTO collected VALUES {}" + upsert, rows))  # nosec B608 (fixed SQL fragments; every value is a parameter)

    def collected(self) -> dict[str, float]:
        """Digest -> when ``store gc`` deleted that object."""
        return {r["digest"]: r["collected"] for r in self.query("SELECT * FROM collected")}


_STAGE_UPSERT = (
    "INSERT INTO stage_runs (run_id, stage, type, state, cache_key, reason, cache_hit, started,"
    " ended, attempts, error, traceback, worker, config_digest, config, code_digest,"
    " input_digests, seq) VALUES {}"
    " ON CONFLICT (run_id, stage) DO UPDATE SET state=excluded.state, cache_key=excluded.cache_key,"
    " reason=excluded.reason, cache_hit=excluded.cache_hit, started=excluded.started,"
    " ended=excluded.ended, attempts=excluded.attempts, error=excluded.error,"
    " traceback=excluded.traceback, worker=excluded.worker, config_digest=excluded.config_digest,"
    " config=excluded.config, code_digest=excluded.code_digest,"
    " input_digests=excluded.input_digests, seq=excluded.seq"
)


def same_sql(batch: list[tuple[str, tuple]]) -> list[tuple[str, list[tuple]]]:
    """Consecutive statements with the same SQL, together, in order: what a backend sends with
    one ``executemany``."""
    out: list[tuple[str, list[tuple]]] = []
    for sql, args in batch:
        if out and out[-1][0] == sql:
            out[-1][1].append(args)
        else:
            out.append((sql, [args]))
    return out


def _rows(template: str, rows: list[tuple]) -> list[tuple[str, tuple]]:
    """One statement per row, all with the same SQL (``template`` with its ``{}`` the row's
    VALUES), so a backend can send them as one batch: sqlite3's and psycopg's ``executemany``
    parse the statement once (no key twice in one batch: an upsert may touch a row once)."""
    if not rows:
        return []
    sql = template.format("(" + ", ".join("?" for _ in rows[0]) + ")")
    return [(sql, row) for row in rows]


class LastStageRuns:
    """``get(stage)`` -> the stage's last finished record in ``pipeline``, looked up on first use.

    The first question reads the records of the pipeline's latest run in one query (by primary
    key): a stage recorded there has its latest record there. Only the stages that run did not
    finish are asked about one by one, and a pipeline with no run yet asks nothing more — on a
    server database each query is a round trip, and a first run of 1000 stages would otherwise
    make 1000 of them.
    """

    def __init__(self, db: MetadataDB, pipeline: str):
        self.db, self.pipeline = db, pipeline
        self._memo: dict[str, Any] | None = None
        self._no_history = False
        self._cut_short: dict[str, str] = {}

    def _load(self) -> dict[str, Any]:
        latest = self.db.query(
            "SELECT id, state FROM runs WHERE pipeline = ? ORDER BY started DESC, id DESC LIMIT 1",
            (self.pipeline,),
        )
        if not latest:
            self._no_history = True
            return {}
        run_id, run_state = latest[0]["id"], latest[0]["state"]
        rows = self.db.query("SELECT * FROM stage_runs WHERE run_id = ?", (run_id,))
        finished = {}
        for row in rows:
            if row["state"] in ("done", "cached", "failed"):
                finished[row["stage"]] = row
            elif run_state == "interrupted":
                self._cut_short[row["stage"]] = f"run {run_id} was {run_state} before it finished"
        return finished

    def cut_short(self, stage: str) -> str | None:
        """Why the pipeline's latest run left ``stage`` unfinished (it was interrupted, or it
        failed elsewhere first), or None."""
        if self._memo is None:
            self._memo = self._load()
        return self._cut_short.get(stage)

    def get(self, stage: str, default: Any = None) -> Any:
        if self._memo is None:
            self._memo = self._load()
        if stage not in self._memo:
            self._memo[stage] = (
                None if self._no_history else self.db.last_stage_run(self.pipeline, stage)
            )
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
