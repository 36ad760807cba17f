"""A run builds its spec, graph and plan with no cyclic garbage collection (they are long-lived;
collections there find nothing), but stage code, which may make reference cycles, always runs
with the collector as the caller had it, and a run leaves it so, whether it ends well, with
failed stages, or stopped by a bad spec (:mod:`pipeflow.core.gcpause`)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeflow.core import gcpause
from pipeflow.errors import SpecError
from pipeflow.runner.session import run
from pipeflow.testing import write_spec

SPEC = """\
pipeline: gc-demo
stages:
  a: {type: python, with: {function: "gcsteps:collecting"}}
  b: {type: python, inputs: {x: a}, with: {function: "gcsteps:collecting"}}
"""
STEPS = """\
import gc

def collecting(**inputs):
    return {"enabled": gc.isenabled()}
"""


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    (gc.enable if was else gc.disable)()


@pytest.mark.parametrize("executor", ["sync", "threads"])
def test_stage_code_runs_with_the_collector_on_and_a_run_leaves_it_on(
    tmp_path: Path, executor: str
) -> None:
    spec = write_spec(tmp_path, SPEC, {"gcsteps.py": STEPS})
    seen = []
    report = run(spec, executor=executor, on_plan=lambda plan: seen.append(gc.isenabled()))
    assert report.ok
    assert report.load("a") == {"enabled": True}
    assert report.load("b") == {"enabled": True}
    assert seen == [False]  # the plan was made under the pause
    assert gc.isenabled()
    again = run(spec, executor=executor)  # fully reused: nothing runs, the collector is back on
    assert again.ran == [] and gc.isenabled()


def test_a_run_stopped_by_a_bad_spec_leaves_the_collector_on(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "pipeline: p\nstages: {a: {type: nope}}\n", {})
    with pytest.raises(SpecError):
        run(spec)
    assert gc.isenabled()


def test_a_pause_restores_the_collector_as_it_was() -> None:
    with gcpause.paused() as pause:
        assert not gc.isenabled()
        pause.resume()
        assert gc.isenabled()
        pause.resume()  # once only
    assert gc.isenabled()
    gc.disable()
    with gcpause.paused(freeze=True):
        pass
    assert not gc.isenabled()  # off before: off after
    gc.unfreeze()


def test_a_run_gives_back_what_it_froze_unless_kept_frozen_for_an_exit(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, SPEC, {"gcsteps.py": STEPS})
    gc.unfreeze()
    assert run(spec).ok and gc.get_freeze_count() == 0
    with gcpause.kept_frozen():  # what pipeflow run does: its process exits after the run
        report = run(spec)
    assert report.ok and report.ran == [] and gc.isenabled()
    assert gc.get_freeze_count() > 0
    assert run(spec).ok and gc.get_freeze_count() == 0  # outside the block: given back again


def test_pipeflow_run_keeps_what_its_run_froze(tmp_path: Path) -> None:
    from pipeflow.cli import main

    spec = write_spec(tmp_path, SPEC, {"gcsteps.py": STEPS})
    gc.unfreeze()
    assert main(["run", str(spec), "--quiet"]) == 0
    assert gc.get_freeze_count() > 0 and gc.isenabled()
    gc.unfreeze()
