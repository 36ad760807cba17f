"""Run and stage states, as one documented state machine.

::

    stage:  PENDING ──▶ RUNNING ──▶ DONE
               │           └──────▶ FAILED      (after its retries; names the error)
               ├──────────────────▶ CACHED      (same key as a finished result: reused, not run)
               └──────────────────▶ SKIPPED     (an upstream stage failed or was skipped)

    run:    RUNNING ──▶ DONE        (every stage DONE or CACHED)
               ├──────▶ FAILED      (some stage FAILED; independent branches still finished)
               └──────▶ INTERRUPTED (the process died; found and marked by a later run)

CACHED counts as success: downstream stages consume the reused artifacts exactly as if the stage
had run. The planner decides CACHED for stages whose inputs are already known; a stage whose
upstream re-ran may still turn out CACHED at run time when the upstream produced identical bytes
(content hashing, not timestamps).
"""

from __future__ import annotations

from enum import StrEnum


class StageState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    CACHED = "cached"
    FAILED = "failed"
    SKIPPED = "skipped"

    @property
    def ok(self) -> bool:
        return self in (StageState.DONE, StageState.CACHED)

    @property
    def final(self) -> bool:
        return self not in (StageState.PENDING, StageState.RUNNING)


class RunState(StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
