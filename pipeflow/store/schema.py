"""The metadata database's schema, in both databases' SQL, and what each version added.

:func:`schema` is the DDL of a new database (every ``CREATE ... IF NOT EXISTS``). A database of
an older version is brought up to :data:`SCHEMA_VERSION` by its backend, one step per version:
the tables and indexes the version added (:func:`added_tables`) and the columns it added to
existing tables (:data:`ADDED_COLUMNS`, added only where missing). Version 2 added
``stage_runs.seq`` (SQLite's own step; PostgreSQL databases started at 2); version 3 the objects
``pipeflow store gc`` deleted (``collected``); version 4 what stages log and people note:
``metrics``, ``logged_params``, ``tags`` and ``runs.note``; version 5 the log lines of stages
(``stage_logs``, :mod:`pipeflow.core.progress`).
:data:`TABLES` lists every table with its primary key (what ``pipeflow store migrate`` copies).
"""

from __future__ import annotations

SCHEMA_VERSION = 5

#: every table, with its primary key (what ``pipeflow store migrate`` copies and compares)
TABLES: dict[str, tuple[str, ...]] = {
    "runs": ("id",),
    "params": ("run_id", "name"),
    "stage_runs": ("run_id", "stage"),
    "artifacts": ("digest",),
    "outputs": ("run_id", "stage", "port"),
    "lineage": ("run_id", "dst_stage", "dst_port"),
    "collected": ("digest",),
    "metrics": ("run_id", "stage", "name", "step"),
    "logged_params": ("run_id", "stage", "name"),
    "tags": ("run_id", "name"),
    "stage_logs": ("run_id", "stage", "line"),
}

# The tables in both databases, in each one's types: ``{real}`` an 8-byte float (SQLite's REAL;
# PostgreSQL's REAL is 4 bytes, so DOUBLE PRECISION there), ``{bigint}`` a 64-bit integer. No
# foreign keys: records arrive in batches, not in key order.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    spec_path TEXT,
    spec_digest TEXT,
    executor TEXT,
    state TEXT NOT NULL,
    started {real} NOT NULL,
    ended {real},
    host TEXT,
    pid {bigint},
    overrides TEXT,
    error TEXT,
    note TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_pipeline ON runs (pipeline, started);
CREATE INDEX IF NOT EXISTS runs_by_started ON runs (started);
CREATE TABLE IF NOT EXISTS params (
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS stage_runs (
    run_id TEXT NOT NULL,
    stage TEXT NOT NULL,
    type TEXT NOT NULL,
    state TEXT NOT NULL,
    cache_key TEXT,
    reason TEXT,
    cache_hit INTEGER NOT NULL DEFAULT 0,
    started {real},
    ended {real},
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
    size {bigint} NOT NULL,
    created {real} NOT NULL,
    run_id TEXT,
    stage TEXT
);
CREATE TABLE IF NOT EXISTS outputs (
    run_id TEXT NOT NULL,
    stage TEXT NOT NULL,
    port TEXT NOT NULL,
    digest TEXT NOT NULL,
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

# Version 3: objects deleted by ``pipeflow store gc`` (pipeflow.runner.gc)
_COLLECTED = """
CREATE TABLE IF NOT EXISTS collected (
    digest TEXT PRIMARY KEY,
    size {bigint} NOT NULL,
    collected {real} NOT NULL
);
"""

# Version 4: what stages log and what people note (pipeflow.core.tracking). A metric's value in a
# run is the one at its highest step; ``from_run`` is the run that logged it (another run's id
# for a stage reused from the store).
_TRACKING = """
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL,
    stage TEXT NOT NULL,
    name TEXT NOT NULL,
    step {bigint} NOT NULL,
    value {real} NOT NULL,
    logged {real},
    from_run TEXT,
    PRIMARY KEY (run_id, stage, name, step)
);
CREATE INDEX IF NOT EXISTS metrics_by_name ON metrics (name);
CREATE TABLE IF NOT EXISTS logged_params (
    run_id TEXT NOT NULL,
    stage TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    from_run TEXT,
    PRIMARY KEY (run_id, stage, name)
);
CREATE TABLE IF NOT EXISTS tags (
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (run_id, name)
);
CREATE INDEX IF NOT EXISTS tags_by_name ON tags (name, value);
"""

# Version 5: the log lines of stages (pipeflow.core.progress): ``line`` numbers a stage's records
# from 1 in the order logged, so a first kept line above 1 says how many earlier were dropped.
_LOGS = """
CREATE TABLE IF NOT EXISTS stage_logs (
    run_id TEXT NOT NULL,
    stage TEXT NOT NULL,
    line INTEGER NOT NULL,
    logged {real},
    level TEXT NOT NULL,
    logger TEXT,
    message TEXT NOT NULL,
    PRIMARY KEY (run_id, stage, line)
);
"""

#: version -> the tables and indexes it added (``CREATE ... IF NOT EXISTS``, both databases)
_ADDED_TABLES: dict[int, str] = {3: _COLLECTED, 4: _TRACKING, 5: _LOGS}
#: version -> the columns it added to existing tables: (table, column, type)
ADDED_COLUMNS: dict[int, list[tuple[str, str, str]]] = {4: [("runs", "note", "TEXT")]}


def schema(*, real: str, bigint: str) -> str:
    """The DDL of every table and index (``CREATE ... IF NOT EXISTS``) in a database's types."""
    return (_SCHEMA + "".join(_ADDED_TABLES.values())).format(real=real, bigint=bigint)


def added_tables(version: int, *, real: str, bigint: str) -> list[str]:
    """The statements creating what ``version`` added (a backend's migration step runs them,
    then adds the columns of :data:`ADDED_COLUMNS` the database lacks)."""
    ddl = _ADDED_TABLES.get(version, "").format(real=real, bigint=bigint)
    return [s.strip() for s in ddl.split(";") if s.strip()]
