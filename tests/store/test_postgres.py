"""A team's run history in a real PostgreSQL server: the commands a user types, the migration from
SQLite, and the failures a shared server brings (dropped connections, many clients at once, a
server that is not there). The contract itself is tests/store/test_metadata.py, run on both."""

from __future__ import annotations

import json
import re
import shutil
import threading
from pathlib import Path

import pytest
from helpers import (
    PIPEFLOW,
    cli_env,
    kill_group,
    one_line_error,
    pipeflow,
    pipeflow_ok,
    start,
    wait_until,
)

from pipeflow.errors import StoreError
from pipeflow.store.database import open_metadata
from pipeflow.store.metadata import redact
from pipeflow.testing import free_port

HELLO = Path(__file__).resolve().parents[2] / "specs" / "hello"


def listed(*args: object, env: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """(run id, state) of each row ``pipeflow runs list`` prints, newest first."""
    out = pipeflow_ok(["runs", "list", *args], env=env).stdout
    return re.findall(r"(\d{8}-\d{6}-[0-9a-f]{6}) .*? (done|failed|running|interrupted) ", out)


@pytest.fixture
def hello(tmp_path: Path) -> Path:
    shutil.copytree(HELLO, tmp_path / "hello", ignore=shutil.ignore_patterns(".pipeflow"))
    return tmp_path / "hello" / "pipeline.yaml"


def test_every_history_command_uses_the_postgresql_named_in_the_environment(
    postgres, hello: Path
) -> None:
    url = postgres.database()
    env = cli_env(PIPEFLOW_STORE__METADATA=url)
    pipeflow_ok(["run", hello], env=env)
    second = pipeflow_ok(["run", hello], env=env)
    assert "cached" in second.stdout
    # nothing recorded beside the spec: the history is the server's
    assert not (hello.parent / ".pipeflow" / "pipeflow.db").exists()
    runs = listed("--spec", hello, env=env)
    assert len(runs) == 2 and {state for _, state in runs} == {"done"}
    shown = json.loads(
        pipeflow_ok(["runs", "show", "latest", "--json", "--spec", hello], env=env).stdout
    )
    assert {s["stage"]: s["state"] for s in shown["stages"]} == {
        "nums": "cached",
        "squares": "cached",
        "summary": "cached",
    }
    out = pipeflow_ok(["runs", "output", "latest", "summary", "--spec", hello], env=env)
    assert out.stdout.strip()
    checked = pipeflow_ok(["store", "check", "--spec", hello], env=env)
    assert "intact" in checked.stdout and "pipeflow@127.0.0.1" in checked.stdout
    # the same history, named with --db instead of the environment
    assert listed("--db", url) == runs


def test_a_sqlite_history_migrates_to_postgresql_checked_and_again_without_doubling(
    postgres, hello: Path
) -> None:
    pipeflow_ok(["run", hello])
    pipeflow_ok(["run", hello, "--set", "params.n=5"])
    local = listed("--spec", hello)
    url = postgres.database()

    moved = pipeflow_ok(["store", "migrate", "--spec", hello, "--to", url])
    assert moved.stdout.splitlines()[-1].startswith("ok: 2 runs from ")
    lines = {line.split()[0]: line for line in moved.stdout.splitlines()[:-1]}
    assert "runs" in lines and " 2 rows: 2 copied, 0 already there" in lines["runs"]
    assert " 6 rows: 6 copied" in lines["stage_runs"]
    # one line per table, its counts in one column however long the table's name
    assert len({line.index(" rows: ") for line in lines.values()}) == 1
    assert listed("--db", url) == local

    again = pipeflow_ok(["store", "migrate", "--spec", hello, "--to", url])
    assert " 2 rows: 0 copied, 2 already there" in again.stdout
    assert listed("--db", url) == local

    # a record that differs on the target is named, not overwritten
    with open_metadata(url) as db:
        db.write([("UPDATE runs SET state = 'failed' WHERE id = ?", (local[0][0],))])
    clash = pipeflow(["store", "migrate", "--spec", hello, "--to", url])
    assert clash.returncode == 1
    assert f"runs {local[0][0]}: the target holds a different record" in clash.stdout
    assert "nothing was overwritten" in clash.stderr


def test_a_server_that_is_not_there_is_one_line_naming_it() -> None:
    url = f"postgresql://pipeflow:secret@127.0.0.1:{free_port()}/team"
    proc = pipeflow(["runs", "list", "--db", url])
    line = one_line_error(proc.stderr)
    assert proc.returncode != 0
    assert f"127.0.0.1:{url.rsplit(':', 1)[1].split('/')[0]}/team" in line
    assert "secret" not in line and "***" in line


def test_a_database_that_does_not_exist_is_said_so(postgres) -> None:
    with pytest.raises(StoreError, match='database "nosuch" does not exist'):
        open_metadata(f"postgresql://pipeflow@127.0.0.1:{postgres.port}/nosuch")


def test_a_dropped_connection_is_retried_and_nothing_is_lost(postgres) -> None:
    url = postgres.database()
    name = url.rsplit("/", 1)[1]
    with open_metadata(url) as db:
        db.write(
            [("INSERT INTO runs (id, pipeline, state, started) VALUES ('r1', 'p', 'done', 1)", ())]
        )
        # the server drops every connection of this database (a restart, a failover, an idle
        # timeout in a proxy)
        killed = postgres.sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            f" WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        )
        assert killed and all(ok for (ok,) in killed)
        db.write(
            [("INSERT INTO runs (id, pipeline, state, started) VALUES ('r2', 'p', 'done', 2)", ())]
        )
        assert [r["id"] for r in db.runs()] == ["r2", "r1"]


def test_many_clients_opening_a_new_database_at_once_create_its_schema_once(postgres) -> None:
    url = postgres.database()
    errors: list[BaseException] = []
    opened = []

    def open_one() -> None:
        try:
            opened.append(open_metadata(url))
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert opened[0].query("SELECT COUNT(*) FROM meta")[0][0] == 1
    for db in opened:
        db.close()


def test_passwords_are_never_shown() -> None:
    assert redact("postgresql://team:s3cret@db.example:5433/runs") == (
        "postgresql://team:***@db.example:5433/runs"
    )
    assert redact("postgresql://team@db.example/runs") == "postgresql://team@db.example/runs"


def test_rows_read_like_sqlite_rows(postgres) -> None:
    with open_metadata(postgres.database()) as db:
        (row,) = db.query("SELECT 1 AS one, 'two' AS two")
        assert (row["one"], row[1], row.keys(), dict(row)) == (
            1,
            "two",
            ["one", "two"],
            {"one": 1, "two": "two"},
        )
        (count,) = db.query("SELECT COUNT(*) FROM runs")[0]
        assert count == 0


def test_the_dashboard_shows_the_runs_of_the_team_database(
    postgres, hello: Path, tmp_path: Path
) -> None:
    import urllib.request

    url = postgres.database()
    env = cli_env(PIPEFLOW_STORE__METADATA=url)
    pipeflow_ok(["run", hello], env=env)
    port = free_port()
    ui = start([PIPEFLOW, "ui", "--spec", hello, "--port", port], tmp_path / "ui.log", env=env)
    try:

        def runs() -> list[dict] | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/runs", timeout=5) as r:  # noqa: S310
                    return json.loads(r.read())["runs"]
            except OSError:
                return None

        found = wait_until(runs, 30, "the dashboard answering", ui, tmp_path / "ui.log")
        assert [r["state"] for r in found] == ["done"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/runs", timeout=5) as r:  # noqa: S310
            assert json.loads(r.read())["db"] == url  # named, without a password
    finally:
        kill_group(ui)
