"""Stage log capture on the executors whose stages run in the client (sync, threads): one
handler installed for the whole graph (``progress.held``), each stage's lines still its own, and
the root logger exactly as it was once the run is over. Real runs into a real SQLite file."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

import pipeflow
from pipeflow.core import progress
from pipeflow.testing import write_spec

SPEC = """
    pipeline: logs
    stages:
      a: {type: python, with: {function: "steps:a"}}
      b: {type: python, with: {function: "steps:b"}}
      c: {type: python, inputs: {x: a, y: b}, with: {function: "steps:c"}}
"""
STEPS = """
    import logging
    import threading

    log = logging.getLogger("steps")

    def a():
        log.info("a says %d", 1)
        return {"out": 1}

    def b():
        log.info("b says %d", 2)
        # a thread the stage starts without copying its context: not the stage's line
        t = threading.Thread(target=lambda: log.info("stray line"))
        t.start()
        t.join()
        return {"out": 2}

    def c(x, y):
        log.debug("too fine to keep")
        log.warning("c got %d", x["out"] + y["out"])
        return {"out": 3}
"""


@pytest.fixture
def root_as_found() -> Iterator[logging.Handler]:
    """The root logger at ERROR with a handler of its own (yielded), restored after the test."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    mine = logging.NullHandler()
    mine.setLevel(logging.NOTSET)
    root.setLevel(logging.ERROR)
    root.addHandler(mine)
    try:
        yield mine
    finally:
        root.removeHandler(mine)
        root.setLevel(level)
        for h in handlers:
            if h not in root.handlers:
                root.addHandler(h)


@pytest.mark.parametrize("executor", ["sync", "threads"])
def test_each_stage_keeps_its_own_lines_when_the_handler_is_held_for_the_whole_graph(
    tmp_path: Path, executor: str, root_as_found: logging.Handler
) -> None:
    spec = write_spec(tmp_path, SPEC, {"steps.py": STEPS})
    report = pipeflow.run(spec, executor=executor)
    assert report.ok, report.failed
    lines = {
        name: [(x.level, x.logger, x.message) for x in o.log] for name, o in report.stages.items()
    }
    assert lines == {
        "a": [("INFO", "steps", "a says 1")],
        "b": [("INFO", "steps", "b says 2")],
        "c": [("WARNING", "steps", "c got 3")],
    }


@pytest.mark.parametrize("executor", ["sync", "threads"])
def test_the_root_logger_is_as_it_was_after_a_run(
    tmp_path: Path, executor: str, root_as_found: logging.Handler
) -> None:
    spec = write_spec(tmp_path, SPEC, {"steps.py": STEPS})
    root = logging.getLogger()
    before = (root.level, [(h, h.level) for h in root.handlers])
    assert pipeflow.run(spec, executor=executor).ok
    assert (root.level, [(h, h.level) for h in root.handlers]) == before
    assert progress._installed == 0


def test_while_held_the_root_passes_info_on_and_its_handlers_keep_the_old_level(
    root_as_found: logging.Handler,
) -> None:
    root, mine = logging.getLogger(), root_as_found
    with progress.held():
        assert root.level == logging.INFO
        assert mine.level == logging.ERROR  # what printed before prints, no more
        with progress.held():  # nested (a run inside a stage): still one handler
            assert root.handlers.count(progress._handler) == 1
    assert root.level == logging.ERROR
    assert mine.level == logging.NOTSET
    assert progress._handler not in root.handlers
