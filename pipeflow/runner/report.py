"""What one run did: the outcome of each stage, and the report :func:`pipeflow.run` returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeflow.core.states import RunState, StageState
from pipeflow.errors import UsageError
from pipeflow.execute.task import StageResult
from pipeflow.store.artifacts import ArtifactStore


@dataclass(kw_only=True)
class StageOutcome(StageResult):
    """A stage's record in a run's report: its result, its type, and the port a bare stage name
    means (the type's default output)."""

    type: str
    default_port: str | None = None

    @property
    def duration(self) -> float | None:
        """Seconds it ran; 0 for a result reused from the store."""
        if self.state is StageState.CACHED and self.started is None:
            return 0.0
        return super().duration


@dataclass
class RunReport:
    """What happened in one run; ``load(stage)`` reads a stage's output back from the store."""

    run_id: str
    pipeline: str
    state: RunState
    stages: dict[str, StageOutcome]
    store: ArtifactStore
    db_path: str  # the metadata database: a file path, or a URL without its password
    duration: float

    @property
    def ok(self) -> bool:
        return self.state is RunState.DONE

    def count(self, state: StageState) -> int:
        return sum(1 for s in self.stages.values() if s.state is state)

    @property
    def ran(self) -> list[str]:
        return [n for n, s in self.stages.items() if s.state is StageState.DONE]

    @property
    def failed(self) -> list[str]:
        return [n for n, s in self.stages.items() if s.state is StageState.FAILED]

    def load(self, stage: str, port: str | None = None) -> Any:
        outcome = self.stages.get(stage)
        if outcome is None:
            raise UsageError(f"run {self.run_id} has no stage '{stage}'")
        if not outcome.outputs:
            raise UsageError(
                f"stage '{stage}' has no outputs in run {self.run_id} (state: {outcome.state})"
            )
        if port is not None and port not in outcome.outputs:
            raise UsageError(
                f"stage '{stage}' has no output '{port}' (its outputs: {', '.join(outcome.outputs)})"
            )
        if port is None and outcome.default_port in outcome.outputs:
            port = outcome.default_port
        if port is None:
            if len(outcome.outputs) != 1:
                raise UsageError(
                    f"stage '{stage}' has outputs {', '.join(outcome.outputs)}: name one"
                )
            port = next(iter(outcome.outputs))
        return self.store.load(outcome.outputs[port])
