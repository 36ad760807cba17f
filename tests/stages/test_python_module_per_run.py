"""A python stage's module beside the spec is checked for edits once per run: every stage of a
run calls the code its key hashed when the run was planned, and the next run sees the edit."""

from __future__ import annotations

import os
from pathlib import Path

import pipeflow
from pipeflow.stages.python import _load_function


def _write(path: Path, value: int, stamp: int) -> None:
    path.write_text(f"def f():\n    return {value}\n")
    os.utime(path, ns=(stamp, stamp))  # a new mtime even on a coarse clock


def test_an_edit_is_seen_by_the_next_run_not_by_the_rest_of_this_one(tmp_path: Path) -> None:
    module = tmp_path / "edited_mod.py"
    _write(module, 1, 1_000_000_000)
    assert _load_function("edited_mod:f", tmp_path, "run-1")() == 1
    _write(module, 2, 2_000_000_000)
    assert _load_function("edited_mod:f", tmp_path, "run-1")() == 1  # the same run
    assert _load_function("edited_mod:f", tmp_path, "run-2")() == 2
    assert _load_function("edited_mod:f", tmp_path)() == 2  # no run: checked every call
    _write(module, 3, 3_000_000_000)
    assert _load_function("edited_mod:f", tmp_path)() == 3


def test_runs_in_one_process_call_the_code_each_was_planned_with(tmp_path: Path) -> None:
    module = tmp_path / "steps_per_run.py"
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(
        "pipeline: edits\nstages:\n"
        "  a: {type: python, with: {function: 'steps_per_run:f'}}\n"
        "  b: {type: python, with: {function: 'steps_per_run:f', kwargs: {}}, inputs: {x: a}}\n"
    )
    module.write_text("def f(**kw):\n    return 1\n")
    os.utime(module, ns=(1_000_000_000, 1_000_000_000))
    first = pipeflow.run(spec, executor="sync")
    assert first.ok and first.load("b") == 1
    module.write_text("def f(**kw):\n    return 22\n")
    os.utime(module, ns=(2_000_000_000, 2_000_000_000))
    second = pipeflow.run(spec, executor="threads")
    assert second.ok and second.ran == ["a", "b"] and second.load("b") == 22
