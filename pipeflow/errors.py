"""Every error pipeflow raises on purpose, drawn once.

::

    PipeflowError                 base; the CLI prints str(err) and exits with err.exit_code
    ├── SpecError                 exit 2: the spec file (YAML, grammar, values, interpolation)
    │   └── GraphError            exit 2: wiring (missing stage/port, kind mismatch, cycle, type)
    ├── UsageError                exit 2: bad command-line arguments or API arguments
    │   ├── NonFiniteInput        exit 2: an inf (or a number beyond float range) where a model
    │   │                         reads a feature
    │   └── ExplainUnavailable    exit 2: explanations asked of a model that cannot give them
    │                             (no method fits and no training profile for the fallback)
    ├── StageError                exit 1: a stage failed while running (names the stage)
    │   └── StageTimeout          exit 1: a stage ran past its ``timeout_s``
    ├── RunLocked                 exit 1: the same resolved spec is already running on this store
    ├── StoreError                exit 1: artifact store or metadata database problem (names the path)
    │   ├── RegistryError         exit 1: model registry (unknown model/version/alias, refused model)
    │   │   ├── InvalidName       exit 2: a model or alias name that is not allowed (bad input)
    │   │   └── ArchivedVersion   exit 1: an archived version asked to serve, score or hold an alias
    │   └── UnsupportedOutput     exit 1: a value no safe codec can store (also a TypeError)
    ├── GateFailed                exit 1: a promotion gate failed (names the gate and both numbers)
    ├── ServingError              a request the model server refuses or cannot answer (HTTP only)
    │   ├── BadRequest            4xx: the status, an error type and the request fields at fault
    │   └── AuditUnavailable      503: the audit log cannot be written, so nothing is answered
    ├── UnknownStageType          exit 2: no stage type of that name is installed (names those that are)
    └── PluginLoadError           exit 2: an entry point's code could not be loaded
        ├── StageTypeLoadError    exit 2: a stage type (``pipeflow.stages``)
        └── SinkTypeError         exit 2: an alert sink type (``pipeflow.sinks``), or one declared
                                  without what it needs

A ``SpecError`` carries a :class:`Location` (file, line, column) plus the stage and field it is
about, so the message always says *where* and *what was expected*. Several problems found in one
pass are collected into one ``SpecError`` whose ``problems`` list holds each of them, so the user
fixes a spec in one round trip instead of one error per run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Location:
    """A position in a source file; line and column are 1-based (what editors show)."""

    file: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        if self.line is None:
            return self.file
        if self.column is None:
            return f"{self.file}:{self.line}"
        return f"{self.file}:{self.line}:{self.column}"


class PipeflowError(Exception):
    """Base of every error pipeflow raises deliberately."""

    exit_code = 1


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec: where, which stage and field, and what was expected."""

    message: str
    location: Location | None = None
    stage: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location else ""
        about = []
        if self.stage:
            about.append(f"stage '{self.stage}'")
        if self.field:
            about.append(f"field '{self.field}'")
        prefix = f"{', '.join(about)}: " if about else ""
        return f"{where}{prefix}{self.message}"


class SpecError(PipeflowError):
    """The spec cannot be loaded or validated. Holds one or more :class:`Problem`."""

    exit_code = 2

    def __init__(self, problems: list[Problem] | Problem | str, location: Location | None = None):
        if isinstance(problems, str):
            problems = [Problem(problems, location)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    @property
    def location(self) -> Location | None:
        return self.problems[0].location if self.problems else None


class GraphError(SpecError):
    """The stages do not fit together: a missing stage or port, a kind mismatch, a cycle."""


class UsageError(PipeflowError):
    """Bad arguments from the command line or the Python API."""

    exit_code = 2


class NonFiniteInput(UsageError):
    """A numeric feature holds ``inf``, ``-inf`` or a number too large for a float (``1e400``
    reads as inf): no model can score it, so the input is refused, naming the column and the
    value (and, from a batch job, the line). Built from (column, value) so it pickles across
    Dask workers."""

    def __init__(self, column: str, value: object, where: str = "", source: str = ""):
        super().__init__(column, value, where, source)
        self.column, self.value, self.where, self.source = column, value, where, source

    def __str__(self) -> str:
        at = f" {self.where}" if self.where else ""
        of = f"input {self.source}: " if self.source else ""
        return (
            f"{of}column '{self.column}' holds {self.value}{at}, where the model needs a finite "
            "number (inf, -inf and numbers beyond ±1.8e308 cannot be scored)"
        )


class ExplainUnavailable(UsageError):
    """Explanations were asked of a model version that cannot give them: no exact method fits
    its estimator and its record holds no training profile to draw the model-agnostic
    fallback's background rows from (:mod:`pipeflow.governance.explain`)."""


class StageError(PipeflowError):
    """A stage raised, timed out or returned something pipeflow cannot store."""

    def __init__(self, stage: str, message: str):
        self.stage = stage
        super().__init__(f"stage '{stage}': {message}")


class StageTimeout(StageError):
    """A stage ran past its ``timeout_s``; the message is what the run records for it."""

    def __init__(self, message: str, stage: str | None = None):
        self.stage = stage
        PipeflowError.__init__(self, message)


class RunLocked(PipeflowError):
    """Another live process runs the same resolved spec on the same store; ``holder`` is what
    its lock file says (pid, host, started, run_id). Exit 1, like a failed run: nothing is wrong
    with the input, and the same command succeeds once the other run ends."""

    def __init__(self, message: str, holder: dict[str, object] | None = None):
        self.holder = dict(holder or {})
        super().__init__(message)


class StoreError(PipeflowError):
    """The artifact store or metadata database could not be read or written."""


class RegistryError(StoreError):
    """A model, version or alias that does not exist, a name that is not allowed, or a stored
    model that is refused (tampered, truncated, or holding types pipeflow does not trust)."""


class UnsupportedOutput(StoreError, TypeError):
    """A value with no safe codec (an untrusted type in a model, an object pipeflow cannot
    serialise without pickle): the message names the type and, from a stage, the port."""


class InvalidName(RegistryError):
    """A model or alias name that cannot be used (it becomes a path component), or a reference
    with nothing after its ``@``: bad input, like a :class:`UsageError`."""

    exit_code = 2


class ArchivedVersion(RegistryError):
    """An archived model version (``pipeflow models archive``) asked to be served, to score a
    batch, or to hold an alias: it is kept for the record and used for nothing until restored."""


class GateFailed(PipeflowError):
    """A promotion was refused by its gates; ``gates`` holds every gate with both numbers."""

    def __init__(self, message: str, gates: list[dict[str, object]] | None = None):
        self.gates = gates or []
        super().__init__(message)


class ServingError(PipeflowError):
    """A request the model server refuses or cannot answer; one place in the server
    (``pipeflow.serving.routes.failure``) turns it into the JSON error reply, so bad input never
    reaches the model and never answers 500."""


class BadRequest(ServingError):
    """A refused request: the HTTP ``status``, an error ``kind`` and the ``fields`` at fault.
    Raised by the decoders, the token check and the request helpers of the server."""

    def __init__(
        self, status: int, kind: str, message: str, fields: list[dict[str, Any]] | None = None
    ):
        super().__init__(message)
        self.status, self.kind, self.fields = status, kind, fields or []


class AuditUnavailable(ServingError):
    """A batch's audit records cannot be written: no prediction is answered unaudited (503)."""


class UnknownStageType(PipeflowError, LookupError):
    """No stage type of that name is installed."""

    exit_code = 2

    def __init__(self, name: str, installed: list[str]):
        self.name = name
        self.installed = installed
        import difflib  # only for this message

        close = difflib.get_close_matches(name, installed, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        super().__init__(
            f"unknown stage type '{name}'; {hint}installed types: {', '.join(installed) or 'none'}"
        )


class PluginLoadError(PipeflowError):
    """An entry point (a stage type, an alert sink) exists but its code could not be imported,
    or is not what its group expects: a broken plugin, which must not look like a broken spec."""

    exit_code = 2


class StageTypeLoadError(PluginLoadError):
    """A stage type's entry point exists but its code could not be imported."""


class SinkTypeError(PluginLoadError):
    """An alert sink type that is not installed or could not be loaded, or a sink declared
    without what it needs (a file sink's path, a webhook's URL)."""
