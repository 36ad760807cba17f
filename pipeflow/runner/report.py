"""What one run did: the outcome of each stage, and the report :func:`pipeflow.run` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeflow.core.states import RunState, StageState
from pipeflow.errors import UsageError
from pipeflow.store.artifacts import ArtifactRef, ArtifactStore


@dataclass
class StageOutcome:
    name: str
    type: str
    state: StageState = StageState.PENDING
    reason: str = ""
    key: str | None = None
    duration: float | None = None
    attempts: int = 0
    error: str | None = None
    traceback: str | None = None
    worker: str | None = None
    outputs: dict[str, ArtifactRef] = field(default_factory=dict)
    #: the output a bare stage name means (the type's default port)
    default_port: str | None = None


@dataclass
class RunReport:
    """What happened in one run; ``load(stage)`` reads a stage's output back from the store."""

    run_id: str
    pipeline: str
    state: RunState
    stages: dict[str, StageOutcome]
    store: ArtifactStore
    db_path: Path
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
