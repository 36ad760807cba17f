"""``open_workspace``: the one rule for which store (and which metadata database) a command means,
and the store layout it hands out.

The layout test pins the paths a real run and a real registry write, so that a store written by
an earlier release keeps opening: a change to :mod:`pipeflow.store.layout` fails here first.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import pipeflow
from pipeflow.errors import UsageError
from pipeflow.store import layout
from pipeflow.testing import write_spec
from pipeflow.workspace import open_workspace

SPEC = """
    pipeline: ws
    stages:
      numbers: {type: python, with: {function: "steps:numbers"}}
"""
STEPS = """
    def numbers():
        return [1, 2, 3]
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_spec(tmp_path / "project", SPEC, {"steps.py": STEPS})


def test_a_spec_names_the_store_and_database_beside_it(project: Path) -> None:
    ws = open_workspace(project)
    assert ws.db_path == str(project.parent / ".pipeflow" / "pipeflow.db")
    assert not (project.parent / ".pipeflow").exists()  # opening creates nothing
    report = pipeflow.run(project)
    assert report.ok
    assert Path(ws.url) == project.parent / ".pipeflow"
    db = ws.metadata()
    try:
        assert [r["id"] for r in db.runs()] == [report.run_id]
    finally:
        db.close()
    assert ws.audit_dir == project.parent / ".pipeflow" / "audit"
    assert ws.registry.models() == []


def test_without_a_spec_store_then_env_then_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (
        "PIPEFLOW_STORE",
        "PIPEFLOW_DB",
        "PIPEFLOW_STORE__ROOT",
        "PIPEFLOW_STORE__METADATA",
    ):
        monkeypatch.delenv(name, raising=False)
    given, env, cwd = (tmp_path / n for n in ("given", "env", "cwd"))
    for folder in (given, env, cwd / ".pipeflow"):
        folder.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    assert Path(open_workspace().url) == cwd / ".pipeflow"
    monkeypatch.setenv("PIPEFLOW_STORE", str(env))
    assert Path(open_workspace().url) == env
    assert open_workspace().db_path == str(env / "pipeflow.db")
    ws = open_workspace(store=str(given), db=str(tmp_path / "other.db"))
    assert Path(ws.url) == given and ws.db_path == str(tmp_path / "other.db")
    monkeypatch.setenv("PIPEFLOW_DB", str(tmp_path / "env.db"))
    assert open_workspace(store=str(given)).db_path == str(tmp_path / "env.db")


def test_without_a_spec_the_teams_store_variables_are_the_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A machine set up for a team store ($PIPEFLOW_STORE__ROOT/__METADATA, read by specs) needs
    no second pair of variables for `models`, `lineage` or `runs` without --spec."""
    for name in ("PIPEFLOW_STORE", "PIPEFLOW_DB"):
        monkeypatch.delenv(name, raising=False)
    team, mine = tmp_path / "team", tmp_path / "mine"
    team.mkdir(), mine.mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PIPEFLOW_STORE__ROOT", str(team))
    monkeypatch.setenv("PIPEFLOW_STORE__METADATA", str(tmp_path / "team.db"))
    ws = open_workspace()
    assert Path(ws.url) == team and ws.db_path == str(tmp_path / "team.db")
    monkeypatch.setenv("PIPEFLOW_STORE", str(mine))  # the older, store-only variables win
    monkeypatch.setenv("PIPEFLOW_DB", str(tmp_path / "mine.db"))
    ws = open_workspace()
    assert Path(ws.url) == mine and ws.db_path == str(tmp_path / "mine.db")
    monkeypatch.setenv("PIPEFLOW_STORE__ROOT", str(tmp_path / "gone"))
    monkeypatch.delenv("PIPEFLOW_STORE")
    with pytest.raises(UsageError, match=r"from \$PIPEFLOW_STORE__ROOT"):
        _ = open_workspace().store


def test_a_missing_local_store_names_where_its_path_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPEFLOW_STORE", str(tmp_path / "gone"))
    ws = open_workspace()  # nothing is checked before the store is used
    with pytest.raises(UsageError, match=r"no pipeflow store at .*gone \(from \$PIPEFLOW_STORE\)"):
        ws.store  # noqa: B018 (the property opens the store)
    with pytest.raises(UsageError, match=r"typo \(from --store\)"):
        open_workspace(store=str(tmp_path / "typo")).store  # noqa: B018


def test_metadata_that_is_not_there_is_a_usage_error_not_an_empty_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PIPEFLOW_DB", raising=False)
    (tmp_path / "store").mkdir()
    ws = open_workspace(store=str(tmp_path / "store"))
    assert ws.open_db() is None
    with pytest.raises(UsageError, match="no pipeflow metadata at .*pipeflow.db"):
        ws.metadata()
    monkeypatch.setenv("PIPEFLOW_SPOOL", str(tmp_path / "spool"))
    remote = open_workspace(store="memory://ws-remote")
    assert remote.db_path is None
    # a remote store's journal is appended in this machine's spool, one folder per store URL
    assert remote.audit_dir == layout.spool_dir("memory://ws-remote") / "audit"
    assert remote.audit_dir.parent.parent == tmp_path / "spool"
    with pytest.raises(UsageError, match="remote store has no default"):
        remote.metadata()


def test_the_store_layout_is_what_earlier_releases_wrote(project: Path) -> None:
    assert pipeflow.run(project).ok
    root = project.parent / ".pipeflow"
    top = {p.name for p in root.iterdir()}
    assert {"objects", "cache", "pipeflow.db"} <= top, top
    assert all(len(p.name) == 2 for p in (root / "objects").iterdir())
    assert layout.REGISTRY == "registry" and layout.TMP == "tmp"
    assert layout.lock_path("ws", "0123456789abcdef") == "locks/ws-0123456789ab.lock"
    assert layout.audit_dir(str(root)) == root / "audit"
    assert layout.monitoring_dir(str(root)) == root / "monitoring"
    assert layout.watch_dir(root / "audit") == root / "watch"
    # a remote store's journals: appended in a local spool, shipped to <store>/journal/
    assert layout.audit_dir("s3://bucket/team").name == "audit"
    assert layout.audit_dir("s3://bucket/team") != layout.audit_dir("s3://bucket/other")
    assert layout.shipped_dir("audit", "predictions") == "journal/audit/predictions"


def test_cache_keys_are_those_earlier_releases_wrote() -> None:
    """A store keeps its cache across releases only if the key of the same stage is the same
    bytes: this value was computed by the release before the house restructure."""
    from pipeflow.core.hashing import stage_key

    key = stage_key("python", "1", "a" * 64, "b" * 64, {"x": "c" * 64})
    assert key == "85ca874241348ad155990700328434d48857e59e923af493cdbf33109da8d9c5"
