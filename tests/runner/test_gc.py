"""``pipeflow store gc`` on a real project: three runs register three versions, gc deletes what
nothing needs, and then every registered version still loads and predicts, the latest spec
re-runs entirely from the cache, and ``store check`` finds the store sound. On a local store with
SQLite, and on S3 (moto's server) with PostgreSQL."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import cli_env, one_line_error, pipeflow, pipeflow_ok, sample_rows, tumours_project

from pipeflow.registry import Registry
from pipeflow.workspace import open_workspace

#: three runs of the tumours project: seeds and C differ, so splits and models differ
RUNS = [["--set", "params.seed=3"], ["--set", "params.seed=4", "--set", "params.C=0.3"]]
LATEST = ["--set", "params.seed=5", "--set", "params.C=0.5"]


def _project(where: Path, root: str | None = None, metadata: str | None = None) -> Path:
    tumours_project(where)
    spec = where / "pipeline.yaml"
    if root is not None:
        spec.write_text(spec.read_text() + f'\nstore: {{root: "{root}", metadata: "{metadata}"}}\n')
    return spec


def _run(spec: Path, args: list[str], env: dict[str, str]) -> None:
    out = pipeflow(["run", spec, "--quiet", *args], env=env, cwd=spec.parent, timeout=300)
    # a version the champion gate refuses fails the run; it is registered all the same
    assert out.returncode in (0, 1), out.stdout + out.stderr
    assert "registered" in out.stdout + out.stderr or out.returncode == 0


def _objects(spec: Path) -> set[str]:
    store = open_workspace(str(spec)).store
    return {path for path, _, _ in store.walk("objects")}


@pytest.fixture(params=["local-sqlite", pytest.param("s3-postgres", marks=pytest.mark.slow)])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    if request.param == "local-sqlite":
        return _project(tmp_path / "tumours"), cli_env()
    s3, postgres = request.getfixturevalue("s3"), request.getfixturevalue("postgres")
    env = cli_env(**s3.env)
    os.environ.update(s3.env)  # this process opens the same store to check it
    spec = _project(tmp_path / "tumours", f"{s3.bucket()}/tumours", postgres.database())
    return spec, env


@pytest.mark.timeout(900)  # four runs of a real project, then gc, loads and a cached run
def test_gc_keeps_every_version_loadable_and_the_latest_spec_cached(
    where: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, env = where
    for args in RUNS:
        _run(spec, args, env)
    _run(spec, LATEST, env)
    monkeypatch.chdir(spec.parent)
    before = _objects(spec)

    young = pipeflow_ok(["store", "gc", "--spec", spec], env=env)  # default: older than 30 days
    assert young.stdout.startswith("deleted 0 object(s)"), young.stdout
    dry = pipeflow_ok(["store", "gc", "--spec", spec, "--older-than", "0s", "--dry-run"], env=env)
    *listed, would = dry.stdout.strip().splitlines()
    db = open_workspace(str(spec)).metadata()
    runs = [r["id"] for r in db.runs(limit=10)]  # newest first
    db.close()
    latest = runs[0]
    # what only the earlier runs made and no version names (their evaluations' other outputs)
    assert listed and all(ln.startswith("would delete ") and " run " in ln for ln in listed)
    assert not any(latest in ln for ln in listed)
    assert would.startswith(f"would delete {len(listed)} object(s), ")
    assert _objects(spec) == before  # a dry run deletes nothing

    done = pipeflow_ok(["store", "gc", "--spec", spec, "--older-than", "0s"], env=env)
    summary = done.stdout.strip().splitlines()[-1]
    count = len(listed)
    assert summary.startswith(f"deleted {count} object(s), "), summary
    assert summary.split(",")[1] == would.split(",")[1]  # the same bytes
    assert len(_objects(spec)) == len(before) - count

    # every registered version loads and predicts
    registry = Registry(open_workspace(str(spec)).store)
    versions = registry.versions("tumours")
    assert [v["version"] for v in versions] == [1, 2, 3]
    rows = pd.DataFrame(sample_rows(spec.parent, 5))
    for record in versions:
        model, _ = registry.load_model("tumours", record["version"])
        assert set(model.predict(rows)) <= {"benign", "malignant"}

    # the latest spec runs again entirely from the cache
    again = pipeflow(["run", spec, *LATEST], env=env, cwd=spec.parent, timeout=300)
    assert again.returncode in (0, 1), again.stdout + again.stderr
    shown = json.loads(
        pipeflow_ok(["runs", "show", "latest", "--json", "--spec", spec], env=env).stdout
    )
    assert {s["stage"]: s["state"] for s in shown["stages"]} == dict.fromkeys(
        ["raw", "split", "model", "scores", "promote"], "cached"
    )

    # the history outlives what gc collected, and says so
    checked = pipeflow(["store", "check", "--spec", spec], env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    doomed = next(ln for ln in listed if f"run {runs[-1]} stage scores" in ln)
    port = next(
        o["port"]
        for o in json.loads(
            pipeflow_ok(["runs", "show", runs[-1], "--json", "--spec", spec], env=env).stdout
        )["outputs"]
        if o["stage"] == "scores" and o["digest"].startswith(doomed.split()[2])
    )
    gone = pipeflow(["runs", "output", runs[-1], f"scores.{port}", "--spec", spec], env=env)
    assert gone.returncode == 1
    assert "was deleted by pipeflow store gc" in one_line_error(gone.stderr)


def test_gc_refuses_while_a_run_is_in_progress(tmp_path: Path) -> None:
    spec = _project(tmp_path / "tumours")
    pipeflow_ok(["run", spec, "--quiet"], cwd=spec.parent, timeout=300)
    store = open_workspace(str(spec)).store
    lock = {
        "pipeline": "tumours",
        "run_id": "r-live",
        "pid": os.getpid(),  # this test process: alive
        "host": socket.gethostname(),
        "started": time.time(),
    }
    assert store.create_exclusive("locks/tumours-000000000000.lock", json.dumps(lock).encode())
    before = _objects(spec)
    refused = pipeflow(["store", "gc", "--spec", spec, "--older-than", "0"], cwd=spec.parent)
    assert refused.returncode == 1
    message = one_line_error(refused.stderr)
    assert "run r-live of pipeline 'tumours' holds" in message and "a run is in progress" in message
    store.delete([store.path("locks/tumours-000000000000.lock")])

    db = open_workspace(str(spec)).metadata()
    db.start_run(
        "r-recorded",
        "tumours",
        spec_path=str(spec),
        spec_digest="0" * 64,
        executor="sync",
        params={},
        overrides=[],
        stages=[],
    )  # recorded by this (live) process
    db.close()
    refused = pipeflow(["store", "gc", "--spec", spec, "--older-than", "0"], cwd=spec.parent)
    assert refused.returncode == 1
    assert "run r-recorded of pipeline 'tumours' is recorded as running" in one_line_error(
        refused.stderr
    )
    assert _objects(spec) == before


def test_older_than_and_keep_last_are_checked() -> None:
    bad = pipeflow(["store", "gc", "--older-than", "a month"])
    assert bad.returncode == 2
    assert "expected a number and a unit, e.g. 30d" in one_line_error(bad.stderr)
