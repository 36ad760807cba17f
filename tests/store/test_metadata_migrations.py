"""Metadata databases written by an older pipeflow are upgraded in place; newer ones are refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pipeflow.errors import StoreError
from pipeflow.store.database import open_metadata
from pipeflow.store.metadata import SCHEMA_VERSION


def _make_v1(path: Path) -> None:
    open_metadata(path).close()
    with sqlite3.connect(path) as conn:  # what version 1 looked like: no seq, no index by stage
        conn.execute("DROP INDEX stage_runs_by_stage")
        conn.execute("ALTER TABLE stage_runs DROP COLUMN seq")
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
        conn.execute(
            "INSERT INTO runs (id, pipeline, state, started) VALUES ('r1', 'p', 'done', 1.0)"
        )
        conn.execute(
            "INSERT INTO stage_runs (run_id, stage, type, state) VALUES ('r1', 'b', 'python', 'done')"
        )
    conn.close()


def test_version_1_database_is_upgraded_and_keeps_its_records(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _make_v1(path)
    db = open_metadata(path)
    try:
        assert [r["stage"] for r in db.stage_runs("r1")] == ["b"]  # the query uses the new column
        db.record_stages("r1", [{"stage": "a", "type": "python", "state": "done", "seq": 0}])
        assert [r["stage"] for r in db.stage_runs("r1")] == ["a", "b"]
        assert db.query("SELECT value FROM meta WHERE key = 'schema_version'")[0][0] == str(
            SCHEMA_VERSION
        )
        assert db.integrity_check() == "ok"
    finally:
        db.close()


def test_database_from_a_newer_pipeflow_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    open_metadata(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    with pytest.raises(StoreError, match="schema version 99, newer than this pipeflow understands"):
        open_metadata(path)


def test_version_2_database_gains_the_collected_table(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    open_metadata(path).close()
    with sqlite3.connect(path) as conn:  # version 2 had no record of what store gc deleted
        conn.execute("DROP TABLE collected")
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    conn.close()
    db = open_metadata(path)
    try:
        db.record_collected([("ab" * 32, 10)])
        assert list(db.collected()) == ["ab" * 32]
    finally:
        db.close()
