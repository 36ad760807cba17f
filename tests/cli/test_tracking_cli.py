"""Experiment tracking end to end, as a user types it: real ``pipeflow run`` processes whose python
stage logs metrics by step and params, runs tagged and noted, then found again with
``runs list --where / --tag`` — on a SQLite file and on a real PostgreSQL server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import cli_env, one_line_error, pipeflow, pipeflow_ok

import pipeflow as api
from pipeflow.store.database import open_metadata
from pipeflow.testing import write_spec

SPEC = """
    pipeline: trk
    params: {lr: 0.1}
    stages:
      fit:
        type: python
        with: {function: "steps:fit", kwargs: {lr: "${params.lr}"}}
      report:
        type: python
        inputs: {model: fit}
        with: {function: "steps:report"}
"""
STEPS = """
    import os

    def fit(lr, ctx):
        for step in range(5):
            ctx.log_metric("loss", round(1.0 / (step + 1) + lr, 6), step=step)
        ctx.log_metric("accuracy", 0.5 + lr)
        ctx.log_param("optimizer", "adam")
        ctx.log_param("pid", os.getpid())
        return {"lr": lr}

    def report(model, ctx):
        ctx.log_metric("report_rows", 3)
        return {"lr": model["lr"]}
"""


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Three runs: lr 0.1 (tagged, noted), lr 0.45 on the processes executor, and lr 0.1 again
    (its fit reused from the first run)."""
    env = None
    if request.param == "postgres":
        env = cli_env(PIPEFLOW_STORE__METADATA=request.getfixturevalue("postgres").database())
    spec = write_spec(tmp_path_factory.mktemp(f"trk-{request.param}"), SPEC, {"steps.py": STEPS})
    pipeflow_ok(["run", spec, "--tag", "team=fraud", "--note", "baseline"], env=env)
    pipeflow_ok(
        ["run", spec, "--set", "params.lr=0.45", "--tag", "team=fraud", "--executor", "processes"],
        env=env,
        timeout=180,
    )
    pipeflow_ok(["run", spec, "--tag", "team=risk"], env=env)
    listed = _list(spec, env)
    ids = [r["id"] for r in reversed(listed)]  # oldest first
    return {"spec": spec, "env": env, "ids": ids, "kind": request.param}


def _list(spec: Path, env: Any, *args: str) -> list[dict[str, Any]]:
    out = pipeflow_ok(["runs", "list", "--spec", spec, "--json", *args], env=env).stdout
    return json.loads(out)


def _found(runs: dict, *args: str) -> set[int]:
    """Which of the three runs (0, 1, 2, oldest first) ``runs list ARGS`` lists."""
    return {runs["ids"].index(r["id"]) for r in _list(runs["spec"], runs["env"], *args)}


def _show(runs: dict, run: str) -> dict[str, Any]:
    out = pipeflow_ok(["runs", "show", run, "--json", "--spec", runs["spec"]], env=runs["env"])
    return json.loads(out.stdout)


def test_runs_are_found_by_their_logged_metrics(runs: dict) -> None:
    assert _found(runs, "--where", "metrics.accuracy > 0.9") == {1}
    assert _found(runs, "--where", "metrics.accuracy < 0.9") == {0, 2}
    assert _found(runs, "--where", "metrics.loss <= 0.31") == {0, 2}  # the last step's value
    assert _found(runs, "--where", "metrics.report_rows = 3 and metrics.loss > 0.5") == {1}
    listed = _list(runs["spec"], runs["env"], "--where", "metrics.accuracy > 0.9")
    assert listed[0]["metrics"] == {
        "fit": {"accuracy": 0.95, "loss": pytest.approx(0.65)},
        "report": {"report_rows": 3.0},
    }


def test_runs_are_found_by_spec_params_logged_params_and_tags(runs: dict) -> None:
    assert _found(runs, "--where", "params.lr = 0.45") == {1}  # the spec's, after --set
    assert _found(runs, "--where", "params.lr != '0.45'") == {0, 2}
    assert _found(runs, "--where", "params.optimizer = 'adam'") == {0, 1, 2}  # logged
    assert _found(runs, "--tag", "team=fraud") == {0, 1}
    assert _found(runs, "--tag", "team") == {0, 1, 2}
    assert _found(runs, "--tag", "team=risk", "--where", "metrics.accuracy < 0.9") == {2}
    assert _found(runs, "--where", "tags.team = 'fraud' and metrics.accuracy > 0.9") == {1}


def test_a_reused_stage_carries_the_metrics_of_the_run_that_made_it(runs: dict) -> None:
    first, _, third = runs["ids"]
    shown = _show(runs, third)
    states = {s["stage"]: s["state"] for s in shown["stages"]}
    assert states == {"fit": "cached", "report": "cached"}
    loss = [(m["step"], m["value"], m["from_run"]) for m in shown["metrics"] if m["name"] == "loss"]
    assert loss == [
        (0, pytest.approx(1.1), first),
        (1, pytest.approx(0.6), first),
        (2, pytest.approx(1 / 3 + 0.1), first),
        (3, pytest.approx(0.35), first),
        (4, pytest.approx(0.3), first),
    ]
    text = pipeflow_ok(["runs", "show", third, "--spec", runs["spec"]], env=runs["env"]).stdout
    assert f"run {first} (cached)" in text


def test_metrics_travel_back_from_a_worker_process(runs: dict) -> None:
    second = runs["ids"][1]
    shown = _show(runs, second)
    assert shown["run"]["executor"] == "processes"
    logged = {p["name"]: p["value"] for p in shown["logged_params"] if p["stage"] == "fit"}
    assert logged["optimizer"] == "adam"
    assert int(logged["pid"]) != shown["run"]["pid"]  # logged in a worker, recorded by the client
    assert {m["from_run"] for m in shown["metrics"]} == {second}


def test_tags_and_notes_are_set_on_a_recorded_run(runs: dict) -> None:
    first, _, third = runs["ids"]
    assert _show(runs, first)["run"]["note"] == "baseline"
    assert _show(runs, first)["tags"] == {"team": "fraud"}
    spec, env = runs["spec"], runs["env"]
    pipeflow_ok(["runs", "tag", third, "reviewed=yes", "owner=ana", "--spec", spec], env=env)
    pipeflow_ok(["runs", "tag", third, "--delete", "owner", "--spec", spec], env=env)
    pipeflow_ok(["runs", "note", third, "fit reused from the baseline", "--spec", spec], env=env)
    shown = _show(runs, third)
    assert shown["tags"] == {"team": "risk", "reviewed": "yes"}
    assert shown["run"]["note"] == "fit reused from the baseline"
    assert _found(runs, "--tag", "reviewed=yes") == {2}
    missing = pipeflow(["runs", "tag", third, "--delete", "nope", "--spec", spec], env=env)
    assert missing.returncode == 2 and "has no tag 'nope'" in one_line_error(missing.stderr)


def test_a_bad_where_is_one_error_pointing_at_the_column(runs: dict) -> None:
    done = pipeflow(
        ["runs", "list", "--spec", runs["spec"], "--where", "metrics.accuracy >> 0.9"],
        env=runs["env"],
    )
    assert done.returncode == 2 and done.stdout == ""
    first, shown, caret = done.stderr.splitlines()
    assert first == ("error: --where: metrics.accuracy compares with a number, got '>' (column 19)")
    assert shown.strip() == "metrics.accuracy >> 0.9"
    assert caret.index("^") - shown.index("m") == 18
    bad_tag = pipeflow(["run", runs["spec"], "--tag", "no equals"], env=runs["env"])
    assert bad_tag.returncode == 2 and "expected KEY=VALUE" in bad_tag.stderr


def test_only_the_last_attempt_is_kept_and_a_failed_stage_keeps_its_log(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        """
        pipeline: retry
        stages:
          flaky:
            type: python
            retries: 1
            with: {function: "steps:flaky"}
          diverges:
            type: python
            with: {function: "steps:diverges"}
        """,
        {
            "steps.py": """
            def flaky(ctx):
                for step in range(3 if ctx.attempt == 1 else 2):
                    ctx.log_metric(f"attempt{ctx.attempt}", step)
                if ctx.attempt == 1:
                    raise RuntimeError("first attempt fails")
                return {"ok": True}

            def diverges(ctx):
                ctx.log_metric("loss", 0.5)
                ctx.log_metric("loss", 7.0)
                raise ValueError("loss diverged")
            """
        },
    )
    report = api.run(spec)
    assert report.stages["flaky"].state == "done" and report.stages["diverges"].state == "failed"
    with open_metadata(report.db_path) as db:
        flaky = [(m["name"], m["step"]) for m in db.metrics(report.run_id) if m["stage"] == "flaky"]
        assert flaky == [("attempt2", 0), ("attempt2", 1)]
        diverged = [m["value"] for m in db.metrics(report.run_id, "loss")]
        assert diverged == [0.5, 7.0]
