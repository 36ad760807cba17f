"""The metadata contract — runs, stage runs, outputs, lineage, concurrency — run against both
databases: a real SQLite file and a real PostgreSQL server (``postgres`` fixture, tests/servers.py;
each test gets a fresh database). Tests of one backend only say so in their names."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from pipeflow.core.progress import LogLine
from pipeflow.errors import StoreError, UsageError
from pipeflow.store.artifacts import ArtifactRef
from pipeflow.store.database import open_metadata
from pipeflow.store.metadata import SCHEMA_VERSION, MetadataDB, sqlite_path


@pytest.fixture(params=["sqlite", "postgres"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty database of each kind."""
    if request.param == "sqlite":
        return str(tmp_path / "meta" / "pipeflow.db")
    return request.getfixturevalue("postgres").database()


@pytest.fixture
def db(location: str):
    database = open_metadata(location)
    yield database
    database.close()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _start(db: MetadataDB, run_id: str, pipeline: str = "demo", **kw: Any) -> None:
    db.start_run(
        run_id,
        pipeline,
        spec_path="/x/pipeline.yaml",
        spec_digest=_digest(run_id),
        executor="sync",
        params=kw.get("params", {"seed": 1, "cfg": {"a": [1, 2]}}),
        overrides=kw.get("overrides", ["params.seed=1"]),
        stages=kw.get("stages", [("a", "python"), ("b", "python")]),
    )


def _stage(name: str, state: str = "done", **kw: Any) -> dict[str, Any]:
    row = {
        "stage": name,
        "type": "python",
        "state": state,
        "key": _digest(f"key-{name}"),
        "reason": "first run of this stage",
        "started": 1.0,
        "ended": 2.0,
        "attempts": 1,
        "config_digest": _digest("cfg"),
        "config": {"function": "steps:f"},
        "code_digest": _digest("code"),
        "input_digests": {},
        "seq": 0,
    }
    row.update(kw)
    return row


def test_a_new_database_has_the_current_schema_and_passes_its_integrity_check(
    db: MetadataDB,
) -> None:
    version = db.query("SELECT value FROM meta WHERE key = 'schema_version'")[0][0]
    assert int(version) == SCHEMA_VERSION
    assert db.integrity_check() == "ok"


def test_a_new_sqlite_database_uses_wal(tmp_path: Path) -> None:
    db = open_metadata(tmp_path / "meta" / "pipeflow.db")
    assert db.path is not None and db.path.is_file()
    assert db.query("PRAGMA journal_mode")[0][0] == "wal"
    version = db.query("SELECT value FROM meta WHERE key = 'schema_version'")[0][0]
    assert int(version) == SCHEMA_VERSION
    assert db.integrity_check() == "ok"
    db.close()


def test_run_lifecycle_is_recorded(db: MetadataDB) -> None:
    _start(db, "run-1")
    (row,) = db.runs()
    assert (row["id"], row["pipeline"], row["state"]) == ("run-1", "demo", "running")
    assert (row["n_stages"], row["n_done"]) == (2, 0)
    assert db.params("run-1") == {"seed": 1, "cfg": {"a": [1, 2]}}
    assert [s["state"] for s in db.stage_runs("run-1")] == ["pending", "pending"]

    db.finish_run("run-1", "failed", error="failed stages: b")
    run = db.find_run("run-1")
    assert run is not None
    assert run["state"] == "failed" and run["error"] == "failed stages: b"
    assert run["ended"] is not None and run["ended"] >= run["started"]


def test_an_output_is_listed_under_its_own_stage_when_another_stage_made_the_same_bytes(
    db: MetadataDB,
) -> None:
    """A pass-through (validate's ``valid`` is its input) shares its artifact row with the stage
    that first made those bytes: ``outputs`` still names the stage and run asked about, on both
    databases."""
    shared = ArtifactRef(_digest("same-bytes"), "parquet", "table", 30)
    for run in ("run-1", "run-2"):
        _start(db, run)
        db.record_stages(
            run,
            [
                _stage("cleaned", outputs={"clean": shared}, seq=0),
                _stage("checked", outputs={"valid": shared}, seq=1),
            ],
        )
    for run in ("run-1", "run-2"):
        rows = [(o["stage"], o["port"], o["digest"]) for o in db.outputs(run)]
        assert rows == [("checked", "valid", shared.digest), ("cleaned", "clean", shared.digest)]


def test_stage_runs_outputs_and_lineage(db: MetadataDB) -> None:
    _start(db, "run-1")
    out_a = ArtifactRef(_digest("a-out"), "json", "table", 10)
    out_b = ArtifactRef(_digest("b-out"), "npy", "any", 20)
    db.record_stages(
        "run-1",
        [
            _stage("a", outputs={"out": out_a}, seq=0),
            _stage(
                "b",
                outputs={"out": out_b},
                input_digests={"x": out_a.digest},
                lineage={"x": ("a", "out", out_a.digest)},
                seq=1,
            ),
        ],
    )
    db.finish_run("run-1", "done")
    stages = db.stage_runs("run-1")
    assert [s["stage"] for s in stages] == ["a", "b"]
    assert all(s["state"] == "done" and s["cache_hit"] == 0 for s in stages)
    assert stages[1]["input_digests"] == f'{{"x": "{out_a.digest}"}}'
    outputs = {
        (o["stage"], o["port"]): (o["digest"], o["codec"], o["kind"], o["size"])
        for o in db.outputs("run-1")
    }
    assert outputs == {
        ("a", "out"): (out_a.digest, "json", "table", 10),
        ("b", "out"): (out_b.digest, "npy", "any", 20),
    }
    (edge,) = db.lineage("run-1")
    assert (edge["src_stage"], edge["src_port"], edge["dst_stage"], edge["dst_port"]) == (
        "a",
        "out",
        "b",
        "x",
    )
    assert edge["digest"] == out_a.digest
    summary = db.runs()[0]
    assert (summary["n_stages"], summary["n_done"], summary["n_failed"]) == (2, 2, 0)


def test_stages_recorded_as_the_run_starts_read_as_those_recorded_after_it(
    db: MetadataDB,
) -> None:
    """A run records its reused stages in the transaction that starts it (``records``), the
    others pending: what is read back is what starting and then recording gave."""
    out_a = ArtifactRef(_digest("a-out"), "json", "table", 10)
    reused = [
        _stage("a", "cached", outputs={"out": out_a}, from_run="run-0", seq=0),
        _stage("b", "cached", lineage={"x": ("a", "out", out_a.digest)}, seq=1),
    ]
    stages = [("a", "python"), ("b", "python"), ("c", "python")]
    _start(db, "run-1", stages=stages)
    db.record_stages("run-1", reused)
    db.start_run(
        "run-2",
        "demo",
        spec_path="/x/pipeline.yaml",
        spec_digest=_digest("run-2"),
        executor="sync",
        params={"seed": 1, "cfg": {"a": [1, 2]}},
        overrides=["params.seed=1"],
        stages=stages,
        records=reused,
    )

    def read(run_id: str) -> tuple[list, list, list]:
        rows = [{k: v for k, v in dict(s).items() if k != "run_id"} for s in db.stage_runs(run_id)]
        outs = [{k: v for k, v in dict(o).items() if k != "run_id"} for o in db.outputs(run_id)]
        edges = [{k: v for k, v in dict(e).items() if k != "run_id"} for e in db.lineage(run_id)]
        return rows, outs, edges

    assert read("run-2") == read("run-1")
    states = {s["stage"]: s["state"] for s in db.stage_runs("run-2")}
    assert states == {"a": "cached", "b": "cached", "c": "pending"}


def test_recording_the_same_stage_twice_leaves_one_row(db: MetadataDB) -> None:
    _start(db, "run-1")
    db.record_stages("run-1", [_stage("a", "running")])
    db.record_stages("run-1", [_stage("a", "done", attempts=2)])
    db.record_stages("run-1", [_stage("a", "done", attempts=2)])
    rows = [s for s in db.stage_runs("run-1") if s["stage"] == "a"]
    assert len(rows) == 1 and rows[0]["state"] == "done" and rows[0]["attempts"] == 2


def test_cached_stages_count_as_cache_hits(db: MetadataDB) -> None:
    _start(db, "run-1")
    db.record_stages("run-1", [_stage("a", "cached"), _stage("b", "failed", error="boom")])
    rows = {s["stage"]: s for s in db.stage_runs("run-1")}
    assert rows["a"]["cache_hit"] == 1 and rows["b"]["cache_hit"] == 0
    assert rows["b"]["error"] == "boom"
    summary = db.runs()[0]
    assert (summary["n_cached"], summary["n_failed"]) == (1, 1)


def test_find_run_latest_exact_and_prefix(db: MetadataDB) -> None:
    assert db.find_run("latest") is None
    for i, run_id in enumerate(
        ["20240101-000000-aaaaaa", "20240102-000000-bbbbbb", "20240102-000000-bbcccc"]
    ):
        _start(db, run_id)
        db.write([("UPDATE runs SET started = ? WHERE id = ?", (1000.0 + i, run_id))])
    assert db.find_run("latest")["id"] == "20240102-000000-bbcccc"  # type: ignore[index]
    assert db.find_run("last")["id"] == "20240102-000000-bbcccc"  # type: ignore[index]
    assert db.find_run("20240101")["id"] == "20240101-000000-aaaaaa"  # type: ignore[index]
    assert db.find_run("20240102-000000-bbb")["id"] == "20240102-000000-bbbbbb"  # type: ignore[index]
    assert db.find_run("nope") is None
    with pytest.raises(StoreError, match="ambiguous"):
        db.find_run("20240102")


def test_find_run_treats_like_wildcards_literally(db: MetadataDB) -> None:
    _start(db, "abc-1")
    assert db.find_run("a_c") is None
    assert db.find_run("a%") is None
    assert db.find_run("abc")["id"] == "abc-1"  # type: ignore[index]


def test_an_exact_id_wins_over_longer_ids_it_prefixes(db: MetadataDB) -> None:
    _start(db, "run")
    _start(db, "run-2")
    assert db.find_run("run")["id"] == "run"  # type: ignore[index]


def test_runs_are_listed_newest_first_and_filtered_by_pipeline(db: MetadataDB) -> None:
    for i, (run_id, pipe) in enumerate([("r1", "p"), ("r2", "q"), ("r3", "p")]):
        _start(db, run_id, pipeline=pipe)
        db.write([("UPDATE runs SET started = ? WHERE id = ?", (100.0 + i, run_id))])
    assert [r["id"] for r in db.runs()] == ["r3", "r2", "r1"]
    assert [r["id"] for r in db.runs(pipeline="p")] == ["r3", "r1"]
    assert [r["id"] for r in db.runs(limit=1)] == ["r3"]


def test_last_stage_run_is_the_latest_finished_record_of_that_pipeline(db: MetadataDB) -> None:
    for i, (run_id, pipe, state) in enumerate(
        [("r1", "p", "done"), ("r2", "p", "failed"), ("r3", "q", "done"), ("r4", "p", "running")]
    ):
        _start(db, run_id, pipeline=pipe, stages=[])
        db.write([("UPDATE runs SET started = ? WHERE id = ?", (100.0 + i, run_id))])
        db.record_stages(run_id, [_stage("a", state)])
    last = db.last_stage_run("p", "a")
    assert last is not None and last["run_id"] == "r2" and last["state"] == "failed"
    lazy = db.last_stage_runs("p")
    assert lazy.get("a")["run_id"] == "r2"
    assert lazy.get("zz", "none") == "none"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    return proc.pid


def test_mark_interrupted_only_touches_runs_of_dead_processes(db: MetadataDB) -> None:
    _start(db, "dead-run")
    _start(db, "live-run")
    _start(db, "done-run")
    db.record_stages("dead-run", [_stage("a", "running"), _stage("b", "done")])
    db.finish_run("done-run", "done")
    dead = _dead_pid()
    db.write([("UPDATE runs SET pid = ? WHERE id IN ('dead-run', 'done-run')", (dead,))])

    assert db.mark_interrupted() == 1
    assert db.find_run("dead-run")["state"] == "interrupted"  # type: ignore[index]
    assert db.find_run("dead-run")["error"] == "the run process died"  # type: ignore[index]
    assert db.find_run("live-run")["state"] == "running"  # type: ignore[index]
    assert db.find_run("done-run")["state"] == "done"  # type: ignore[index]
    states = {s["stage"]: s["state"] for s in db.stage_runs("dead-run")}
    assert states == {"a": "pending", "b": "done"}
    assert db.mark_interrupted() == 0


def test_three_writers_on_two_connections_lose_nothing(location: str) -> None:
    shared = open_metadata(location)
    other = open_metadata(location)  # a second connection, as a second process would have
    errors: list[BaseException] = []
    n_runs, n_stages = 25, 4

    def writer(db: MetadataDB, prefix: str) -> None:
        try:
            for i in range(n_runs):
                run_id = f"{prefix}-{i}"
                _start(db, run_id, stages=[(f"s{j}", "python") for j in range(n_stages)])
                db.record_stages(run_id, [_stage(f"s{j}", seq=j) for j in range(n_stages)])
                db.finish_run(run_id, "done")
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [
        threading.Thread(target=writer, args=(shared, "t1")),
        threading.Thread(target=writer, args=(shared, "t2")),
        threading.Thread(target=writer, args=(other, "t3")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    runs = shared.runs(limit=1000)
    assert len(runs) == 3 * n_runs
    assert all(r["state"] == "done" and r["n_done"] == n_stages for r in runs)
    assert shared.query("SELECT COUNT(*) FROM stage_runs")[0][0] == 3 * n_runs * n_stages
    assert shared.integrity_check() == "ok"
    shared.close()
    other.close()


def test_reopening_keeps_everything(location: str) -> None:
    first = open_metadata(location)
    _start(first, "r1")
    first.finish_run("r1", "done")
    first.close()
    again = open_metadata(location)
    assert again.find_run("r1")["state"] == "done"  # type: ignore[index]
    again.close()


def test_a_newer_schema_is_refused(location: str) -> None:
    with open_metadata(location) as db:
        db.write(
            [
                (
                    "UPDATE meta SET value = ? WHERE key = 'schema_version'",
                    (str(SCHEMA_VERSION + 1),),
                )
            ]
        )
    with pytest.raises(StoreError, match="newer than this pipeflow understands"):
        open_metadata(location)


def test_objects_collected_by_gc_are_remembered_once_each(db: MetadataDB) -> None:
    db.record_collected([(_digest("a"), 10), (_digest("b"), 20)])
    db.record_collected([(_digest("a"), 10)])  # collected again after it was made again
    assert set(db.collected()) == {_digest("a"), _digest("b")}
    assert db.query("SELECT size FROM collected WHERE digest = ?", (_digest("b"),))[0][0] == 20


def test_a_version_2_database_is_upgraded_with_the_collected_table(location: str) -> None:
    with open_metadata(location) as db:
        db.write(
            [
                ("DROP TABLE collected", ()),
                ("UPDATE meta SET value = '2' WHERE key = 'schema_version'", ()),
            ]
        )
    with open_metadata(location) as db:
        db.record_collected([(_digest("a"), 1)])
        assert list(db.collected()) == [_digest("a")]
        version = db.query("SELECT value FROM meta WHERE key = 'schema_version'")[0][0]
        assert int(version) == SCHEMA_VERSION
        assert db.integrity_check() == "ok"


def test_dataset_versions_are_the_fingerprints_ingest_stages_read(db: MetadataDB) -> None:
    out = ArtifactRef(_digest("rows"), "parquet", "table", 10)
    for i, run_id in enumerate(["r1", "r2"]):
        _start(db, run_id, stages=[("load", "ingest")])
        db.write([("UPDATE runs SET started = ? WHERE id = ?", (100.0 + i, run_id))])
        ingest = _stage("load", "done" if i == 0 else "cached", outputs={"out": out})
        ingest.update(type="ingest", config={"path": "data/claims.csv"}, code_digest="v1")
        db.record_stages(run_id, [ingest])
    (version,) = db.dataset_versions()
    assert (version["version"], version["source"], version["stage"]) == (
        "v1",
        "data/claims.csv",
        "load",
    )
    assert (version["first_seen"], version["last_used"], version["runs"]) == (100.0, 101.0, 2)
    uses = db.dataset_uses("v1")
    assert [(u["run_id"], u["digest"]) for u in uses] == [("r2", out.digest), ("r1", out.digest)]


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=str(path)):
        open_metadata(path)


def test_sqlite_path_forms(tmp_path: Path) -> None:
    assert sqlite_path("sqlite:///rel/p.db", tmp_path) == tmp_path / "rel" / "p.db"
    assert sqlite_path("sqlite:////abs/p.db", tmp_path) == Path("/abs/p.db")
    assert sqlite_path("bare.db", tmp_path) == tmp_path / "bare.db"
    with pytest.raises(UsageError, match="is not supported"):  # bad input: exit 2
        sqlite_path("mysql://host/db", tmp_path)


# -- what stages logged, tags and notes (schema 3) ----------------------------------------------


def _logged(name: str, values: list[float], **kw: Any) -> dict[str, Any]:
    """A stage record carrying a metric history (one value per step) and a logged param."""
    from pipeflow.core.tracking import Metric

    row = _stage(name, **kw)
    row["metrics"] = [Metric("loss", i, v, 1000.0 + i) for i, v in enumerate(values)] + [
        Metric("accuracy", 0, 1 - values[-1], 1000.0)
    ]
    row["logged_params"] = {"optimizer": "adam"}
    return row


def _ids(db: MetadataDB, where: str) -> set[str]:
    from pipeflow.store.search import parse_where

    return {r["id"] for r in db.runs(where=parse_where(where))}


def test_logged_metrics_params_and_their_origin_are_recorded(db: MetadataDB) -> None:
    _start(db, "run-1", stages=[("fit", "python")])
    db.record_stages("run-1", [_logged("fit", [0.9, 0.5, 0.2])])
    _start(db, "run-2", stages=[("fit", "python")])  # the stage reused from run-1
    db.record_stages("run-2", [_logged("fit", [0.9, 0.5, 0.2], state="cached", from_run="run-1")])
    rows = db.metrics("run-2", "loss")
    assert [(m["step"], m["value"], m["from_run"]) for m in rows] == [
        (0, 0.9, "run-1"),
        (1, 0.5, "run-1"),
        (2, 0.2, "run-1"),
    ]
    assert {m["from_run"] for m in db.metrics("run-1")} == {"run-1"}
    latest = {(m["run_id"], m["name"]): m["value"] for m in db.latest_metrics(["run-1", "run-2"])}
    assert latest == {
        ("run-1", "accuracy"): 0.8,
        ("run-1", "loss"): 0.2,
        ("run-2", "accuracy"): 0.8,
        ("run-2", "loss"): 0.2,
    }
    (param,) = db.logged_params("run-1")
    assert (param["stage"], param["name"], param["value"]) == ("fit", "optimizer", "adam")
    assert db.metric_names() == ["accuracy", "loss"]
    across = db.metric_across_runs("loss")
    assert [(p["run_id"], p["step"], p["value"]) for p in across] == [
        ("run-1", 2, 0.2),
        ("run-2", 2, 0.2),
    ]


def test_recording_a_stage_again_replaces_what_it_logged(db: MetadataDB) -> None:
    _start(db, "run-1", stages=[("fit", "python")])
    db.record_stages("run-1", [_logged("fit", [0.9, 0.5, 0.2])])
    db.record_stages("run-1", [_logged("fit", [0.7])])  # Dask ran it again: two steps fewer
    assert [(m["step"], m["value"]) for m in db.metrics("run-1", "loss")] == [(0, 0.7)]
    db.record_stages("run-1", [_stage("fit", state="running")])  # no log: the log stays
    assert len(db.metrics("run-1")) == 2


def test_runs_are_found_by_metric_param_and_tag(db: MetadataDB) -> None:
    for run_id, loss, opt, team in (
        ("r1", [0.9, 0.05], "adam", "fraud"),  # accuracy 0.95
        ("r2", [0.3], "sgd", "fraud"),  # accuracy 0.7
        ("r3", [0.2, 0.6], "adam", None),  # loss went up: its value is 0.6, not 0.2
    ):
        _start(
            db,
            run_id,
            params={"lr": 0.1, "name": "base"},
            stages=[("fit", "python")],
        )
        row = _logged("fit", loss)
        row["logged_params"] = {"optimizer": opt}
        db.record_stages(run_id, [row])
        if team:
            db.set_tags(run_id, {"team": team})
    assert _ids(db, "metrics.accuracy > 0.9") == {"r1"}
    assert _ids(db, "metrics.accuracy >= 0.4") == {"r1", "r2", "r3"}
    assert _ids(db, "metrics.loss < 0.5") == {"r1", "r2"}  # the last step counts
    assert _ids(db, "metrics.loss = 0.6") == {"r3"}
    assert _ids(db, "metrics.nope > 0") == set()
    assert _ids(db, "params.optimizer = 'adam'") == {"r1", "r3"}
    assert _ids(db, "params.optimizer != 'adam'") == {"r2"}
    assert _ids(db, "params.lr = '0.1' and params.name = 'base'") == {"r1", "r2", "r3"}
    assert _ids(db, "params.lr = 0.1 and params.name != 'base'") == set()
    assert _ids(db, "params.missing != 'x'") == set()  # != needs the param
    assert _ids(db, "tags.team = 'fraud'") == {"r1", "r2"}
    assert _ids(db, "tags.team != 'fraud'") == set()
    assert _ids(db, "tags.team") == {"r1", "r2"}
    assert _ids(db, "tags.team = 'fraud' and metrics.accuracy > 0.9") == {"r1"}
    # a value that looks like SQL is only ever a parameter
    assert _ids(db, """tags.team = "x' OR '1'='1" """) == set()
    assert [r["id"] for r in db.runs(limit=1, where=[])] == ["r3"]


def test_tags_and_notes_are_set_changed_and_removed(db: MetadataDB) -> None:
    db.start_run(
        "r1",
        "demo",
        spec_path="/x/pipeline.yaml",
        spec_digest=_digest("r1"),
        executor="sync",
        params={},
        overrides=[],
        stages=[],
        tags={"team": "fraud", "stage": "dev"},
        note="first try",
    )
    assert db.tags("r1") == {"team": "fraud", "stage": "dev"}
    assert db.find_run("r1")["note"] == "first try"  # type: ignore[index]
    db.set_tags("r1", {"stage": "prod", "owner": "ana"})
    db.delete_tags("r1", ["team"])
    db.set_note("r1", "shipped")
    assert db.tags("r1") == {"stage": "prod", "owner": "ana"}
    assert db.tags_of(["r1", "nope"]) == {"r1": {"stage": "prod", "owner": "ana"}}
    assert db.find_run("r1")["note"] == "shipped"  # type: ignore[index]
    db.set_note("r1", None)
    assert db.find_run("r1")["note"] is None  # type: ignore[index]


def _as_version_2(db: MetadataDB) -> None:
    """Turn a new database into what pipeflow wrote at schema version 2: no objects collected by
    gc, no tables of what stages logged, no tags, no runs.note (SQLite drops a column since
    3.35)."""
    db.write(
        [
            ("DROP TABLE collected", ()),
            ("DROP TABLE metrics", ()),
            ("DROP TABLE logged_params", ()),
            ("DROP TABLE tags", ()),
            ("DROP TABLE stage_logs", ()),
            ("ALTER TABLE runs DROP COLUMN note", ()),
            ("UPDATE meta SET value = '2' WHERE key = 'schema_version'", ()),
        ]
    )


def test_a_version_2_database_is_upgraded_keeping_its_runs(location: str) -> None:
    with open_metadata(location) as old:
        _start(old, "r-old", stages=[("fit", "python")])
        old.record_stages("r-old", [_stage("fit")])
        old.finish_run("r-old", "done")
        _as_version_2(old)
        assert "note" not in old.query("SELECT * FROM runs")[0].keys()  # noqa: SIM118 (a Row: `in` tests values)
    with open_metadata(location) as db:
        version = db.query("SELECT value FROM meta WHERE key = 'schema_version'")[0][0]
        assert int(version) == SCHEMA_VERSION == 5
        assert db.integrity_check() == "ok"
        run = db.find_run("r-old")
        assert run is not None and run["state"] == "done" and run["note"] is None
        assert [s["stage"] for s in db.stage_runs("r-old")] == ["fit"]
        assert db.metrics("r-old") == [] and db.tags("r-old") == {}
        db.set_tags("r-old", {"team": "fraud"})
        db.set_note("r-old", "from before the upgrade")
        _start(db, "r-new", stages=[("fit", "python")])
        db.record_stages("r-new", [_logged("fit", [0.4, 0.1])])
        assert _ids(db, "metrics.loss < 0.2") == {"r-new"}
        assert _ids(db, "tags.team = 'fraud'") == {"r-old"}
    with open_metadata(location) as again:  # opening an upgraded database changes nothing
        assert again.find_run("r-old")["note"] == "from before the upgrade"  # type: ignore[index]


def _lines(*messages: str, first: int = 1) -> list[LogLine]:
    return [
        LogLine(first + i, 100.0 + i, "INFO", "steps", message)
        for i, message in enumerate(messages)
    ]


def test_stage_log_lines_are_recorded_replaced_and_read_in_order(db: MetadataDB) -> None:
    _start(db, "run-1", stages=[("b", "python"), ("a", "python")])
    db.record_stages(
        "run-1",
        [
            _stage("b", seq=0, log=_lines("b one", "b two")),
            _stage("a", seq=1, log=_lines("kept", "last", first=7)),  # lines 1-6 dropped
        ],
    )
    rows = db.stage_logs("run-1")
    assert [(r["stage"], r["line"], r["message"]) for r in rows] == [
        ("b", 1, "b one"),
        ("b", 2, "b two"),
        ("a", 7, "kept"),
        ("a", 8, "last"),
    ]
    assert (rows[0]["level"], rows[0]["logger"], rows[0]["logged"]) == ("INFO", "steps", 100.0)
    db.record_stages("run-1", [_stage("b", seq=0, state="running")])  # no log: the lines stay
    db.record_stages("run-1", [_stage("a", seq=1, log=_lines("again"))])  # Dask ran it again
    assert [r["message"] for r in db.stage_logs("run-1", "a")] == ["again"]
    assert len(db.stage_logs("run-1", "b")) == 2 and db.stage_logs("run-1", "nope") == []


def test_a_version_4_database_gains_the_stage_logs_table(location: str) -> None:
    with open_metadata(location) as old:
        _start(old, "r-old", stages=[("fit", "python")])
        old.record_stages("r-old", [_logged("fit", [0.3])])
        old.write(
            [
                ("DROP TABLE stage_logs", ()),
                ("UPDATE meta SET value = '4' WHERE key = 'schema_version'", ()),
            ]
        )
    with open_metadata(location) as db:
        version = db.query("SELECT value FROM meta WHERE key = 'schema_version'")[0][0]
        assert int(version) == SCHEMA_VERSION == 5
        assert db.integrity_check() == "ok"
        assert db.stage_logs("r-old") == [] and len(db.metrics("r-old", "loss")) == 1
        db.record_stages("r-old", [_stage("fit", log=_lines("after the upgrade"))])
        assert [r["message"] for r in db.stage_logs("r-old")] == ["after the upgrade"]
