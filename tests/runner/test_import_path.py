"""A run in this process puts the spec's folder on ``sys.path`` for its stage code, and only for
the run: afterwards ``sys.path`` is as it was, so a later run, test or spawned process (which
``multiprocessing`` gives the parent's ``sys.path``) cannot import the old folder's modules (a
spec's ``helpers.py`` once shadowed tests/helpers.py in every later test's Dask workers)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pipeflow.core.importpath import during_a_run
from pipeflow.errors import UsageError
from pipeflow.runner.session import run
from pipeflow.testing import write_spec

SPEC = """\
pipeline: path-demo
stages:
  a: {type: python, with: {function: "steps:where"}}
"""
#: imports a sibling module only when called: the folder must be on sys.path during the run
STEPS = """\
import sys

def where():
    import pathdemo_helpers

    return {"helper": pathdemo_helpers.NAME, "first": sys.path[0]}
"""
HELPERS = "NAME = 'beside the spec'\n"


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    sys.modules.pop("pathdemo_helpers", None)
    return write_spec(tmp_path, SPEC, {"steps.py": STEPS, "pathdemo_helpers.py": HELPERS})


def test_the_spec_folder_is_on_sys_path_during_a_run_and_off_it_afterwards(spec: Path) -> None:
    before = list(sys.path)
    report = run(spec, executor="sync")
    assert str(report.state) == "done"
    assert report.load("a") == {"helper": "beside the spec", "first": str(spec.parent)}
    assert sys.path == before


def test_a_folder_already_on_sys_path_stays_there(
    spec: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(spec.parent))
    before = list(sys.path)
    assert str(run(spec, executor="sync").state) == "done"
    assert sys.path == before


def test_the_folder_stays_while_another_run_in_this_process_is_still_going(spec: Path) -> None:
    before = list(sys.path)
    with during_a_run():  # a run on another thread, not finished yet
        assert str(run(spec, executor="sync").state) == "done"
        assert sys.path[0] == str(spec.parent)
    assert sys.path == before


def test_a_run_stopped_by_an_error_takes_the_folder_off_too(tmp_path: Path) -> None:
    """The cluster factory's module is imported from beside the spec; its missing attribute
    stops the run before anything starts."""
    text = 'pipeline: p\nexecutor: {kind: distributed, cluster: "myclusters:nope"}\n' + SPEC[20:]
    spec = write_spec(tmp_path, text, {"myclusters.py": "X = 1\n", "steps.py": STEPS})
    before = list(sys.path)
    with pytest.raises(UsageError, match="has no attribute 'nope'"):
        run(spec)
    assert sys.path == before
    sys.modules.pop("myclusters", None)
