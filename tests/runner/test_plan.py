"""The planner decides before anything runs which stages are reused and says why the others run.

History is made by real runs (``pipeflow.runner.session.run`` on the sync executor); plans are then made
against the same store and metadata database.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeflow.core.compiler import compile_pipeline
from pipeflow.runner.plan import Plan, make_plan
from pipeflow.runner.session import run
from pipeflow.spec import load
from pipeflow.testing import write_spec
from pipeflow.workspace import open_store

SPEC = """\
pipeline: plan-demo
params: {n: 3}
stages:
  a: {type: python, with: {function: "steps:const", kwargs: {v: "${params.n}"}}}
  b: {type: python, inputs: {x: a}, with: {function: "steps:double"}}
  c: {type: python, inputs: {y: b}, with: {function: "steps:inc"}}
  side: {type: python, with: {function: "steps:const", kwargs: {v: side}}}
"""
STEPS = """\
def const(v):
    return v

def double(x):
    return x * 2

def inc(y):
    return y + 1
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_spec(tmp_path, SPEC, {"steps.py": STEPS})


def _plan(spec: Path, overrides=(), **kwargs) -> Plan:
    loaded = load(spec, overrides)
    pipeline = compile_pipeline(loaded)
    store, db = open_store(loaded)
    try:
        return make_plan(pipeline, store, db.last_stage_runs(pipeline.name), **kwargs)
    finally:
        db.close()


def _reasons(plan: Plan) -> dict[str, str]:
    return {name: sp.reason for name, sp in plan.stages.items()}


def _run(spec: Path, **kwargs):
    report = run(spec, executor="sync", **kwargs)
    return report


def test_first_run_and_upstream_reasons(project: Path) -> None:
    plan = _plan(project)
    assert plan.to_run == ["a", "b", "c", "side"]
    assert plan.cached == []
    assert _reasons(plan) == {
        "a": "first run of this stage",
        "b": "upstream stage 'a' will run",
        "c": "upstream stage 'b' will run",
        "side": "first run of this stage",
    }
    assert plan.stages["a"].key is not None
    assert plan.stages["b"].key is None  # unknown until a has run


def test_unchanged_stages_are_cached_with_the_run_that_made_them(project: Path) -> None:
    first = _run(project)
    assert first.ok
    plan = _plan(project)
    assert plan.to_run == []
    for name, sp in plan.stages.items():
        assert sp.action == "cached", name
        assert sp.cached_from == first.run_id
        assert sp.reason == f"unchanged: same type, config, code and inputs as run {first.run_id}"
        assert set(sp.outputs) == {"out"}
    assert plan.stages["b"].inputs["x"] == plan.stages["a"].outputs["out"]


def test_config_change_names_the_field_and_both_values(project: Path) -> None:
    _run(project)
    plan = _plan(project, ["params.n=5"])
    assert _reasons(plan)["a"] == "config changed: with.kwargs.v 3 -> 5"
    assert plan.stages["b"].reason == "upstream stage 'a' will run"
    assert plan.stages["side"].action == "cached"


def test_run_report_carries_the_plan_reason(project: Path) -> None:
    _run(project)
    report = _run(project, overrides=["params.n=4"])
    assert report.stages["a"].reason == "config changed: with.kwargs.v 3 -> 4"
    assert str(report.stages["side"].state) == "cached"
    assert report.load("c") == 9


def test_editing_the_python_module_is_a_code_change(project: Path) -> None:
    _run(project)
    steps = project.parent / "steps.py"
    steps.write_text(STEPS.replace("return y + 1", "return y + 100  # edited"))
    st = steps.stat()
    os.utime(steps, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    plan = _plan(project)
    # every stage calls into steps.py, so every root stage's code changed
    assert plan.stages["a"].reason == "code changed"
    assert plan.stages["side"].reason == "code changed"
    assert plan.stages["b"].reason == "upstream stage 'a' will run"
    report = _run(project)
    assert report.load("c") == 106


def test_editing_an_unrelated_file_changes_nothing(project: Path) -> None:
    _run(project)
    (project.parent / "notes.py").write_text("x = 1\n")
    assert _plan(project).to_run == []


def test_new_upstream_output_is_an_input_change(project: Path) -> None:
    _run(project)
    _run(project, overrides=["params.n=5"], only=["a"])  # b's last record still has n=3's input
    plan = _plan(project, ["params.n=5"])
    assert plan.stages["a"].action == "cached"
    assert plan.stages["b"].reason == "inputs changed: x"
    assert plan.stages["c"].reason == "upstream stage 'b' will run"


def test_force_reruns_everything_or_just_the_named_stages(project: Path) -> None:
    _run(project)
    forced = _plan(project, force=True)
    assert forced.to_run == ["a", "b", "c", "side"]
    assert all(sp.reason == "forced (--force)" and sp.forced for sp in forced.stages.values())

    some = _plan(project, force={"b"})
    assert some.stages["a"].action == "cached"
    assert some.stages["b"].reason == "forced (--force)"
    assert some.stages["c"].reason == "upstream stage 'b' will run"
    assert some.stages["side"].action == "cached"


def test_cache_false_always_runs(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        SPEC.replace(
            'with: {function: "steps:double"}', 'cache: false, with: {function: "steps:double"}'
        ),
        {"steps.py": STEPS},
    )
    _run(spec)
    plan = _plan(spec)
    assert plan.stages["a"].action == "cached"
    assert plan.stages["b"].reason == "cache disabled for this stage (cache: false)"
    assert plan.stages["c"].reason == "upstream stage 'b' will run"


def test_a_failed_stage_is_planned_again_and_says_so(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        SPEC,
        {"steps.py": STEPS.replace("return x * 2", "raise ValueError('bad on purpose')")},
    )
    report = _run(spec)
    assert not report.ok and report.failed == ["b"]
    assert str(report.stages["c"].state) == "skipped"
    plan = _plan(spec)
    assert plan.stages["a"].action == "cached"
    assert plan.stages["b"].reason == "previous attempt failed"


def test_include_limits_the_plan_to_the_chosen_stages(project: Path) -> None:
    plan = _plan(project, include={"a", "side"})
    assert set(plan.stages) == {"a", "side"}


def test_same_config_gives_the_same_key_and_a_new_config_a_new_one(project: Path) -> None:
    k1 = _plan(project).stages["a"].key
    k2 = _plan(project).stages["a"].key
    k3 = _plan(project, ["params.n=8"]).stages["a"].key
    assert k1 == k2 and k1 != k3
    assert (
        _plan(project).stages["a"].config_digest
        != _plan(project, ["params.n=8"]).stages["a"].config_digest
    )
