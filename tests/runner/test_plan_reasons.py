"""Unit tests for the planner: every stage gets the right action and a reason a person can act on."""

from __future__ import annotations

from pathlib import Path

import pytest

import pipeflow
from pipeflow.runner.plan import Plan
from pipeflow.testing import write_spec

STEPS = """
def const(value):
    return value

def add(a, b):
    return a + b
"""

SPEC = """\
pipeline: plan-demo
params:
  v: 1
stages:
  one: {type: python, with: {function: "steps:const", kwargs: {value: "${params.v}"}}}
  two: {type: python, with: {function: "steps:const", kwargs: {value: 2}}}
  sum: {type: python, inputs: {a: one, b: two}, with: {function: "steps:add"}}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_spec(tmp_path, SPEC, {"steps.py": STEPS})


def _plan(spec: Path, overrides: dict | None = None, **kwargs: object) -> Plan:
    loaded = pipeflow.load(spec, overrides or {})
    pipeline = pipeflow.compile(loaded)
    store, db = pipeflow.open_store(loaded)
    try:
        return pipeflow.plan(pipeline, store, db.last_stage_runs(pipeline.name), **kwargs)  # type: ignore[arg-type]
    finally:
        db.close()


def _run(spec: Path, overrides: dict | None = None) -> pipeflow.RunReport:
    report = pipeflow.run(spec, overrides=overrides or {}, executor="sync")
    assert report.ok, {n: s.error for n, s in report.stages.items()}
    return report


def _reasons(plan: Plan) -> dict[str, str]:
    return {n: s.reason for n, s in plan.stages.items()}


def test_first_run_reason_for_every_stage(project: Path) -> None:
    plan = _plan(project)
    assert set(plan.to_run) == {"one", "two", "sum"}
    assert all(s.action == "run" for s in plan.stages.values())
    reasons = _reasons(plan)
    assert reasons["one"] == "first run of this stage"
    assert reasons["two"] == "first run of this stage"
    assert "upstream stage" in reasons["sum"] and "will run" in reasons["sum"]


def test_after_a_run_everything_is_cached(project: Path) -> None:
    report = _run(project)
    plan = _plan(project)
    assert plan.to_run == []
    assert set(plan.cached) == {"one", "two", "sum"}
    for stage in plan.stages.values():
        assert stage.cached_from == report.run_id
        assert stage.reason.startswith("unchanged")
        assert stage.key is not None and stage.outputs


def test_config_change_names_the_changed_field(project: Path) -> None:
    _run(project)
    plan = _plan(project, {"params.v": 5})
    reasons = _reasons(plan)
    assert reasons["one"].startswith("config changed: ")
    assert "with.kwargs.value" in reasons["one"]
    assert "1 -> 5" in reasons["one"]
    assert plan.stages["two"].action == "cached"
    assert reasons["sum"] == "upstream stage 'one' will run"


def test_code_change_is_detected_after_editing_the_module(project: Path) -> None:
    _run(project)
    steps = project.parent / "steps.py"
    steps.write_text(steps.read_text() + "\n# edited\n")
    plan = _plan(project)
    reasons = _reasons(plan)
    assert reasons["one"] == "code changed"
    assert reasons["two"] == "code changed"
    assert "will run" in reasons["sum"]


def test_force_reruns_everything(project: Path) -> None:
    _run(project)
    plan = _plan(project, force=True)
    assert set(plan.to_run) == {"one", "two", "sum"}
    for stage in plan.stages.values():
        assert stage.forced
        assert stage.reason.startswith("forced")


def test_force_a_set_reruns_those_and_their_dependents(project: Path) -> None:
    _run(project)
    plan = _plan(project, force={"two"})
    reasons = _reasons(plan)
    assert plan.stages["one"].action == "cached"
    assert reasons["two"].startswith("forced")
    assert reasons["sum"] == "upstream stage 'two' will run"


def test_cache_false_always_runs(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        SPEC.replace("kwargs: {value: 2}}}", "kwargs: {value: 2}}, cache: false}"),
        {"steps.py": STEPS},
    )
    _run(spec)
    plan = _plan(spec)
    reasons = _reasons(plan)
    assert reasons["two"].startswith("cache disabled")
    assert plan.stages["one"].action == "cached"
    assert reasons["sum"] == "upstream stage 'two' will run"


def test_include_limits_the_plan(project: Path) -> None:
    plan = _plan(project, include={"one"})
    assert list(plan.stages) == ["one"]


def test_plan_never_runs_user_code(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, SPEC, {"steps.py": "raise RuntimeError('imported!')\n" + STEPS})
    plan = _plan(spec)
    assert set(plan.to_run) == {"one", "two", "sum"}


def test_run_report_records_the_plan_reasons(project: Path) -> None:
    first = _run(project)
    assert first.stages["one"].reason == "first run of this stage"
    second = _run(project, {"params.v": 9})
    assert second.stages["one"].reason.startswith("config changed")
    assert str(second.stages["two"].state) == "cached"
    assert second.load("sum") == 11


def test_a_stage_an_interrupted_run_left_unfinished_says_so(project: Path) -> None:
    """The last run was killed while 'two' ran: the next plan says that, not "first run"."""
    import shutil

    from pipeflow.store.database import open_metadata

    report = _run(project)
    shutil.rmtree(project.parent / ".pipeflow" / "cache")  # nothing reusable: every stage runs
    with open_metadata(report.db_path) as db:
        db.write(
            [
                ("UPDATE runs SET state = 'interrupted' WHERE id = ?", (report.run_id,)),
                (
                    "UPDATE stage_runs SET state = 'pending' WHERE run_id = ? AND stage = 'two'",
                    (report.run_id,),
                ),
            ]
        )
    reasons = _reasons(_plan(project))
    assert reasons["two"] == (
        f"not finished last time: run {report.run_id} was interrupted before it finished"
    )
    assert reasons["one"] == "no stored result for this key"  # it did finish in that run
