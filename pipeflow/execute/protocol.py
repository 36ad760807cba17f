"""The executor contract: what the runner asks of whatever runs a plan's stages.

:func:`pipeflow.runner.session.run` hands an executor the stage tasks of a plan, already in
topological order, and an event handler; the executor runs each with
:func:`pipeflow.execute.task.run_stage` (which never raises for a stage problem) wherever it likes,
reports through the handler when a stage starts and, once per stage, its final result, from the
calling thread only (so the recorder needs no locks), and returns every stage's result.
:class:`~pipeflow.execute.dask_executor.DaskExecutor` is the built-in one;
``pipeflow.testing.ExecutorContract`` checks any other. This module holds no implementation, so
declaring an executor imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pipeflow.core.states import StageState
    from pipeflow.execute.task import StageResult, StageTask

#: ``on_event(stage, state, result)``: RUNNING with no result when a stage starts, then its final
#: state with its result (DONE, CACHED, FAILED or SKIPPED), exactly once per stage
EventHandler = Callable[[str, "StageState", "StageResult | None"], None]


class Executor(Protocol):
    """Runs stage tasks (already in topological order) and reports each result as it lands.

    ``name`` is recorded as the run's executor (``pipeflow runs show``). An executor may also
    have a ``kind`` (a :data:`pipeflow.execute.cluster.KINDS` name): the runner reads it, when
    there is one, to refuse a store in this process's memory to ``processes`` and
    ``distributed``, whose workers cannot see it. One whose ``ships_code`` is true runs stages
    where the spec's folder may not be visible: the runner then puts the folder's Python code
    in the store and each task carries its digest (:mod:`pipeflow.execute.bundle`). One whose
    ``reports_progress`` is true also takes ``on_progress`` (a keyword of ``execute``): a
    thread-safe callable given each live :class:`~pipeflow.core.progress.Update` of a running
    stage, from any thread (:mod:`pipeflow.execute.channel`); the runner passes it only then.
    """

    @property
    def name(self) -> str: ...

    def execute(
        self, tasks: Sequence[StageTask], on_event: EventHandler
    ) -> dict[str, StageResult]: ...


__all__ = ["EventHandler", "Executor"]
