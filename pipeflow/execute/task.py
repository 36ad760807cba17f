"""What runs on a worker: one stage, from artifact references in to artifact references out.

``run_stage(task, *upstream_results)`` is the only function an executor schedules. It never
raises for a stage problem: a failure becomes a ``StageResult`` in state FAILED, and a stage whose
upstream failed returns SKIPPED. That is what lets independent branches finish on every scheduler
(Dask aborts a whole ``get`` on the first exception) and keeps the recorded outcome identical
whether the graph ran on threads, processes or a cluster.

Before running, the stage's cache key is computed from its actual input digests and looked up in
the store: an upstream that re-ran but produced identical bytes does not force its consumers to
re-run. The spec's own code is imported from ``base_dir``, or, for a task that carries a code
bundle, from wherever :func:`pipeflow.execute.bundle.code_folder` finds that exact code (the
folder itself, or the bundle fetched from the store). After running, outputs are written to the store and the manifest is written last, so a
result becomes visible only once complete (and a worker that dies after writing it still leaves a
reusable result for the next run).
"""

from __future__ import annotations

import contextvars
import functools
import os
import socket
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from pipeflow.core.hashing import stage_key
from pipeflow.core.importpath import put_first
from pipeflow.core.progress import LogLine, Sender, StageMonitor, capture
from pipeflow.core.stage import Stage, StageContext
from pipeflow.core.states import StageState
from pipeflow.core.tracking import Metric, Tracker, from_manifest, to_manifest
from pipeflow.errors import StageTimeout, UnsupportedOutput
from pipeflow.execute import bundle
from pipeflow.execute.cluster import worker_address
from pipeflow.store.artifacts import ArtifactRef, StoreRef


@dataclass(frozen=True)
class StageTask:
    """Everything a worker needs to run one stage. Picklable; holds no YAML and no store handle."""

    name: str
    type_name: str
    cls: type[Stage]
    config: BaseModel
    config_digest: str
    #: what else the cache key depends on (code source, data content; :meth:`Stage.fingerprint`)
    fingerprint: str
    #: input port -> (upstream stage, upstream port)
    inputs: Mapping[str, tuple[str, str]]
    output_kinds: Mapping[str, str]
    store: StoreRef
    run_id: str
    base_dir: str
    params: Mapping[str, Any] = field(default_factory=dict)
    resources: Mapping[str, float] = field(default_factory=dict)
    retries: int = 0
    timeout_s: float | None = None
    use_cache: bool = True
    #: inputs already known at plan time (from cached upstream stages): port -> ref
    known_inputs: Mapping[str, ArtifactRef] = field(default_factory=dict)
    pipeline: str = ""
    #: digest of the spec folder's code in the store, for workers that may not share the
    #: client's files (:mod:`pipeflow.execute.bundle`); None: import from ``base_dir``
    code: str | None = None
    #: where live updates of the stage go (:mod:`pipeflow.execute.channel`); None: nobody watches
    progress: Sender | None = None

    @property
    def upstream(self) -> list[str]:
        """Stages whose results must be passed positionally to :func:`run_stage`, in order."""
        return sorted(
            {src for port, (src, _) in self.inputs.items() if port not in self.known_inputs}
        )


@dataclass
class StageRecord:
    """One stage's fate, as far as it is known. The record grows as it moves: the plan adds what
    it decided (:class:`pipeflow.runner.plan.StagePlan`), the worker what happened
    (:class:`StageResult`), the runner what the report shows
    (:class:`pipeflow.runner.report.StageOutcome`); :func:`carry` takes a record one step on."""

    name: str
    state: StageState = StageState.PENDING
    reason: str = ""
    key: str | None = None
    inputs: dict[str, ArtifactRef] = field(default_factory=dict)
    outputs: dict[str, ArtifactRef] = field(default_factory=dict)
    cached_from: str | None = None
    #: what the stage logged (:mod:`pipeflow.core.tracking`); for a stage reused from the
    #: store, what it logged in the run that made it (``cached_from``)
    metrics: list[Metric] = field(default_factory=list)
    logged_params: dict[str, str] = field(default_factory=dict)
    #: the stage's log lines (:mod:`pipeflow.core.progress`); empty for a stage reused from the
    #: store (it did not run)
    log: list[LogLine] = field(default_factory=list)


R = TypeVar("R", bound=StageRecord)


def carry(source: StageRecord, target: R, *, skip: tuple[str, ...] = ()) -> R:
    """Carry what ``source`` knows into ``target`` (a record further along): every field the two
    types share, but ``skip``. Once per stage on the client, on the scheduler's thread: the
    shared names are worked out once per pair of types, and ``target`` is updated in place."""
    for name in _carried(type(source), type(target)):
        if name not in skip:
            setattr(target, name, getattr(source, name))
    return target


@functools.cache
def _carried(source: type[StageRecord], target: type[StageRecord]) -> tuple[str, ...]:
    wanted = {f.name for f in fields(target)}
    return tuple(f.name for f in fields(source) if f.name in wanted)


@dataclass(kw_only=True)
class StageResult(StageRecord):
    """What running a stage (or finding it in the cache) on a worker gave."""

    started: float | None = None
    ended: float | None = None
    attempts: int = 0
    error: str | None = None
    traceback: str | None = None
    worker: str | None = None
    #: the cache manifest of a finished stage; the client records it (see ArtifactStore)
    manifest: dict[str, Any] | None = None

    @property
    def duration(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return self.ended - self.started


def worker_name() -> str:
    """The Dask worker address when on a distributed worker, else host:pid."""
    return worker_address() or _local_name()


@functools.lru_cache(maxsize=1)
def _local_name_for(pid: int) -> str:
    return f"{socket.gethostname()}:{pid}"


def _local_name() -> str:
    return _local_name_for(os.getpid())


def run_stage(task: StageTask, *upstream: StageResult) -> StageResult:
    """Run one stage (with cache lookup, retries and timeout). Never raises for stage errors."""
    by_name = {r.name: r for r in upstream}
    bad = [r for r in upstream if not r.state.ok]
    if bad:
        first = bad[0]
        why = f"upstream stage '{first.name}' {'failed' if first.state is StageState.FAILED else 'was skipped'}"
        return StageResult(task.name, StageState.SKIPPED, reason=why)

    refs: dict[str, ArtifactRef] = {}
    for port, (src, src_port) in task.inputs.items():
        if port in task.known_inputs:
            refs[port] = task.known_inputs[port]
        else:
            refs[port] = by_name[src].outputs[src_port]
    key = stage_key(
        task.type_name,
        task.cls.version,
        task.config_digest,
        task.fingerprint,
        {p: r.digest for p, r in refs.items()},
    )
    result = StageResult(task.name, StageState.RUNNING, key=key, inputs=refs, worker=worker_name())
    try:
        store = task.store.open()
        if task.use_cache:
            manifest = store.read_manifest(key)
            if manifest is not None:
                result.state = StageState.CACHED
                result.outputs = manifest["outputs"]
                result.cached_from = manifest.get("run_id")
                result.metrics, result.logged_params = from_manifest(manifest)
                result.reason = "found in the store: same type, config, code and input contents (an upstream re-ran with identical output, or an identical stage ran)"
                return result
    except Exception as err:  # store unreachable: the stage fails with the store's message
        return _failed(result, err, 0)

    code_dir = task.base_dir
    if task.code:
        try:
            code_dir = str(bundle.code_folder(store, task.code, task.base_dir))
        except Exception as err:
            return _failed(result, err, 0)
    put_first(code_dir)  # off again when the run ends, where it runs in the client
    result.started = time.time()
    attempts = task.retries + 1
    monitor = StageMonitor(task.name, task.progress)  # every attempt's lines, in one log
    for attempt in range(1, attempts + 1):
        result.attempts = attempt
        tracker = Tracker()  # each attempt logs afresh; the last one's log is kept
        try:
            with capture(monitor):
                values = _call(task, refs, store, attempt, code_dir, tracker, monitor)
            result.outputs = _save_outputs(task, values, store)
        except Exception as err:
            if attempt < attempts:
                time.sleep(min(0.1 * 2 ** (attempt - 1), 2.0))
                continue
            result.metrics, result.logged_params = tracker.metrics(), tracker.params()
            result.log = monitor.log.lines()
            return _failed(result, err, attempt)
        result.metrics, result.logged_params = tracker.metrics(), tracker.params()
        result.log = monitor.log.lines()
        result.state = StageState.DONE
        result.ended = time.time()
        result.manifest = {
            "key": key,
            "stage": task.name,
            "type": task.type_name,
            "run_id": task.run_id,
            "finished": result.ended,
            "outputs": {p: r.to_dict() for p, r in result.outputs.items()},
            "inputs": {p: r.to_dict() for p, r in refs.items()},
            **to_manifest(result.metrics, result.logged_params),
        }
        return result
    raise AssertionError("unreachable")  # pragma: no cover


def _call(
    task: StageTask,
    refs: dict[str, ArtifactRef],
    store: Any,
    attempt: int,
    code_dir: str,
    tracker: Tracker,
    monitor: StageMonitor | None = None,
) -> Mapping[str, Any]:
    inputs = {port: store.load(ref) for port, ref in refs.items()}
    ctx = StageContext(
        run_id=task.run_id,
        stage=task.name,
        params=task.params,
        base_dir=_path(task.base_dir),
        code_dir=_path(code_dir),
        attempt=attempt,
        resources=task.resources,
        store=store,
        pipeline=task.pipeline,
        input_refs=dict(refs),
        tracker=tracker,
        monitor=monitor,
    )
    stage = task.cls(task.config)
    if task.timeout_s is None:
        return stage.run(ctx, inputs)
    # A Python thread cannot be killed: on timeout the attempt is abandoned (it keeps its thread
    # until it returns) and its results, if any, are discarded. The thread is a daemon: a
    # ThreadPoolExecutor's worker would be joined at interpreter exit, so a stage stuck for good
    # would keep `pipeflow run` (or a worker) from ever exiting after reporting the timeout.
    outcome: dict[str, Any] = {}

    def attempt_run() -> None:
        try:
            outcome["value"] = stage.run(ctx, inputs)
        except BaseException as err:
            outcome["error"] = err

    context = contextvars.copy_context()  # the stage's log records stay the stage's
    thread = threading.Thread(
        target=context.run, args=(attempt_run,), name=f"pipeflow-{task.name}", daemon=True
    )
    thread.start()
    thread.join(task.timeout_s)
    if thread.is_alive():
        raise StageTimeout(f"timed out after {task.timeout_s:g} s (timeout_s)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@functools.lru_cache(maxsize=64)
def _path(text: str) -> Path:
    """``Path(text)``, made once per folder (a thousand stages share one or two)."""
    return Path(text)


def _save_outputs(task: StageTask, values: Any, store: Any) -> dict[str, ArtifactRef]:
    if not isinstance(values, Mapping):
        raise TypeError(
            f"stage type '{task.type_name}' returned {type(values).__name__}, expected a mapping of output ports"
        )
    missing = set(task.output_kinds) - set(values)
    extra = set(values) - set(task.output_kinds)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing outputs: {', '.join(sorted(missing))}")
        if extra:
            parts.append(f"undeclared outputs: {', '.join(sorted(map(str, extra)))}")
        raise ValueError(f"{'; '.join(parts)} (declared: {', '.join(task.output_kinds)})")
    out = {}
    for port, kind in task.output_kinds.items():
        try:
            out[port] = store.save(values[port], kind, overwrite=not task.use_cache)
        except UnsupportedOutput as err:
            raise UnsupportedOutput(f"output '{port}': {err}") from None
    return out


def _failed(result: StageResult, err: BaseException, attempts: int) -> StageResult:
    result.state = StageState.FAILED
    result.attempts = attempts
    result.ended = time.time()
    if result.started is None:
        result.started = result.ended
    message = str(err) or type(err).__name__
    result.error = (
        message
        if isinstance(err, StageTimeout | UnsupportedOutput)
        else f"{type(err).__name__}: {message}"
    )
    result.traceback = "".join(traceback.format_exception(err))
    return result
