"""One run, end to end: load -> compile -> plan -> execute -> record.

This is the only module that knows every layer; the CLI and the Python API both call
:func:`run`. The client process is the single writer of run metadata: it records cached stages
before execution starts and every other stage as its result arrives, so ``pipeflow runs show`` of
a run in progress is current, and a run killed mid-way leaves exactly the finished stages
recorded (their manifests in the store make the next run reuse them).

Run lock: while a run executes it holds ``locks/<pipeline>-<digest12>.lock`` in the store (the
digest is the resolved spec's, so the same file with different ``--set`` overrides runs
concurrently, but the same resolved spec twice does not: two runs would compute and record the
same stages at once). The lock is created exclusively (:meth:`ArtifactStore.create_exclusive`),
holds ``{pid, host, started, run_id}`` and is removed when the run ends. A second run fails at
once with :class:`~pipeflow.errors.RunLocked` naming the holder. A lock whose process is gone
(same host, pid no longer running, or reused by a process started later) is stale and reclaimed
automatically; a lock held on another host is never guessed about (the message says which file
to remove). On local and network file systems the create is atomic; on object stores (s3://...)
it is check-then-write, so there the lock is advisory: it stops the common mistake, not a race.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import difflib
import gc
import json
import os
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeflow.core.compiler import Pipeline, compile_pipeline
from pipeflow.core.registry import StageRegistry
from pipeflow.core.states import RunState, StageState
from pipeflow.errors import RunLocked, StoreError, UsageError
from pipeflow.execute.dask_executor import DaskExecutor
from pipeflow.execute.protocol import Executor
from pipeflow.execute.task import StageResult, StageTask
from pipeflow.runner.plan import Plan, StagePlan, make_plan
from pipeflow.spec.load import LoadedSpec, load
from pipeflow.store.artifacts import ArtifactRef, ArtifactStore, StoreRef
from pipeflow.store.metadata import MetadataDB, sqlite_path

EventCallback = Callable[[str, StageState, "StageOutcome"], None]


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


def open_store(loaded: LoadedSpec) -> tuple[ArtifactStore, MetadataDB]:
    """The artifact store and metadata DB a spec uses (defaults beside the spec file)."""
    spec = loaded.spec.store
    base = loaded.base_dir
    root = spec.root or str(base / ".pipeflow")
    if "://" not in root and not os.path.isabs(root):
        root = str(base / root)
    db_url = spec.metadata or str(base / ".pipeflow" / "pipeflow.db")
    try:
        store = StoreRef(root, tuple(sorted(spec.storage_options.items()))).open()
    except OSError as err:  # a backend that connects on open (ftp://, sftp://) and cannot
        raise StoreError(f"cannot reach store {root!r}: {err.strerror or err}") from None
    return store, MetadataDB(sqlite_path(db_url, base))


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def select(
    pipeline: Pipeline, only: list[str] | str | None, from_: list[str] | str | None
) -> set[str] | None:
    """The stages a run covers: ``--only`` stages, or ``--from`` stages and their descendants.
    A single stage may be given as a string (``only="model"``)."""
    only = [only] if isinstance(only, str) else only
    from_ = [from_] if isinstance(from_, str) else from_
    if not only and not from_:
        return None
    chosen: set[str] = set()
    for name in [*(only or []), *(from_ or [])]:
        if name not in pipeline.stages:
            close = difflib.get_close_matches(name, list(pipeline.stages), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise UsageError(f"no stage named '{name}' in pipeline '{pipeline.name}'{hint}")
    for name in only or []:
        chosen.add(name)
    for name in from_ or []:
        chosen |= {name} | pipeline.downstream(name)
    return chosen


def make_executor(loaded: LoadedSpec, kind: str | None, address: str | None) -> DaskExecutor:
    ex = loaded.spec.executor
    return DaskExecutor(
        kind or ex.kind,
        address=address or (ex.address if (kind or ex.kind) == "distributed" else None),
        workers=ex.workers,
        threads_per_worker=ex.threads_per_worker,
    )


def run(
    spec: str | os.PathLike[str] | LoadedSpec,
    *,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    executor: str | Executor | None = None,
    address: str | None = None,
    only: list[str] | str | None = None,
    from_: list[str] | str | None = None,
    force: bool = False,
    registry: StageRegistry | None = None,
    on_event: EventCallback | None = None,
    on_plan: Callable[[Plan], None] | None = None,
) -> RunReport:
    """Run a pipeline. Returns a :class:`RunReport` whether or not stages failed."""
    t0 = time.perf_counter()
    with _gc_paused():
        loaded = spec if isinstance(spec, LoadedSpec) else load(spec, overrides)
        pipeline = compile_pipeline(loaded, registry)
    store, db = open_store(loaded)
    try:
        run_id = new_run_id()
        with run_lock(store, pipeline.name, loaded.digest, run_id, spec=str(loaded.path)):
            return _run(
                pipeline,
                store,
                db,
                run_id,
                executor,
                address,
                only,
                from_,
                force,
                on_event,
                on_plan,
                t0,
            )
    finally:
        db.close()


def _run(
    pipeline: Pipeline,
    store: ArtifactStore,
    db: MetadataDB,
    run_id: str,
    executor: str | Executor | None,
    address: str | None,
    only: list[str] | str | None,
    from_: list[str] | str | None,
    force: bool,
    on_event: EventCallback | None,
    on_plan: Callable[[Plan], None] | None,
    t0: float,
) -> RunReport:
    loaded = pipeline.loaded
    ex: Executor = (
        executor
        if executor is not None and not isinstance(executor, str)
        else make_executor(loaded, executor, address)
    )
    if getattr(ex, "kind", None) in ("processes", "distributed") and store.url.startswith(
        "memory://"
    ):
        raise UsageError(
            f"store {store.url} lives in this process's memory, so {ex.kind} workers cannot share it: "
            "use a path or a shared URL (s3://...), or the threads/sync executor"
        )
    db.mark_interrupted()
    store.clean_tmp()  # files half-written by runs that died (over an hour old: never a live write)
    chosen = select(pipeline, only, from_)
    include = None
    if chosen is not None:
        include = set(chosen)
        for name in chosen:
            include |= pipeline.upstream(name)
    # With --only/--from, --force applies to the chosen stages; their upstream is reused.
    forced: bool | set[str] = (set(chosen) if chosen is not None else True) if force else False
    with _gc_paused():
        plan = make_plan(
            pipeline, store, db.last_stage_runs(pipeline.name), force=forced, include=include
        )
    if chosen is not None:
        for name, sp in plan.stages.items():
            if name in chosen:
                continue
            if sp.action != "cached":
                needed_by = sorted(n for n in chosen if name in pipeline.upstream(n))
                raise UsageError(
                    f"stage '{name}' (needed by {', '.join(needed_by)}) has no stored result for its current "
                    f"inputs: run it first (without --only/--from)"
                )
    if on_plan is not None:
        on_plan(plan)

    outcomes = {
        name: StageOutcome(
            name,
            pipeline.stages[name].type,
            reason=sp.reason,
            default_port=pipeline.stages[name].cls.default_output(pipeline.stages[name].config),
        )
        for name, sp in plan.stages.items()
    }
    db.start_run(
        run_id,
        pipeline.name,
        spec_path=str(loaded.path),
        spec_digest=loaded.digest,
        executor=getattr(ex, "name", type(ex).__name__),
        params=loaded.spec.params,
        overrides=list(loaded.overrides),
        stages=[(n, pipeline.stages[n].type) for n in plan.stages],
    )

    cached_rows = []
    for name in plan.cached:
        sp = plan.stages[name]
        o = outcomes[name]
        o.state, o.key, o.outputs, o.duration = StageState.CACHED, sp.key, dict(sp.outputs), 0.0
        cached_rows.append(_row(pipeline, sp, o, sp.inputs, started=None, ended=None))
        if on_event:
            on_event(name, StageState.CACHED, o)
    db.record_stages(run_id, cached_rows)

    tasks = _tasks(pipeline, plan, store, run_id)

    def handle(name: str, state: StageState, result: StageResult | None) -> None:
        o = outcomes[name]
        o.state = state
        if result is not None:
            if result.manifest is not None and result.key:
                store.record_manifest(result.key, result.manifest, duration=result.duration)
            o.key, o.duration, o.attempts = result.key, result.duration, result.attempts
            o.error, o.traceback, o.worker, o.outputs = (
                result.error,
                result.traceback,
                result.worker,
                dict(result.outputs),
            )
            if result.reason:
                o.reason = result.reason
            recorder.add(
                _row(pipeline, plan.stages[name], o, result.inputs, result.started, result.ended)
            )
        elif state is StageState.RUNNING:
            recorder.add(
                {
                    "stage": name,
                    "seq": pipeline.position[name],
                    "type": o.type,
                    "state": "running",
                    "reason": o.reason,
                    "started": time.time(),
                }
            )
        if on_event:
            on_event(name, state, o)

    recorder = _Recorder(db, run_id)
    # The spec, graph and plan are long-lived; freezing them keeps the garbage collector from
    # rescanning thousands of them after every stage (it was a third of a no-op stage's cost).
    gc.freeze()
    try:
        ex.execute(tasks, handle)
    except BaseException as err:
        with contextlib.suppress(Exception):  # keep the original error; record what we can
            store.flush()
        recorder.flush()
        db.finish_run(run_id, RunState.FAILED, error=f"{type(err).__name__}: {err}")
        raise
    finally:
        gc.unfreeze()
    store.flush()
    recorder.flush()
    failed = [n for n, o in outcomes.items() if o.state is StageState.FAILED]
    state = RunState.FAILED if failed else RunState.DONE
    db.finish_run(run_id, state, error=f"failed stages: {', '.join(failed)}" if failed else None)
    return RunReport(
        run_id, pipeline.name, state, outcomes, store, db.path, time.perf_counter() - t0
    )


# -- run lock (see the module docstring) ---------------------------------------------------------


def lock_name(pipeline: str, digest: str) -> str:
    """The lock of one resolved spec, relative to the store root."""
    return f"locks/{pipeline}-{digest[:12]}.lock"


@contextlib.contextmanager
def run_lock(
    store: ArtifactStore, pipeline: str, digest: str, run_id: str, *, spec: str = ""
) -> Iterator[dict[str, Any]]:
    """Hold the run lock of ``pipeline`` at spec ``digest`` for the duration of the block.

    Raises :class:`~pipeflow.errors.RunLocked` at once if a live process holds it; reclaims it
    if the holder is gone."""
    rel = lock_name(pipeline, digest)
    pid = os.getpid()
    info = {
        "pipeline": pipeline,
        "digest": digest,
        "run_id": run_id,
        "spec": spec,
        "pid": pid,
        "pid_start": _process_start(pid),
        "host": socket.gethostname(),
        "started": time.time(),
    }
    _acquire(store, rel, json.dumps(info, sort_keys=True).encode(), pipeline)
    try:
        yield info
    finally:
        _release(store, rel, run_id)


def _acquire(store: ArtifactStore, rel: str, data: bytes, pipeline: str) -> None:
    for _ in range(50):  # each turn either wins, raises, or sees a contender make progress
        if store.create_exclusive(rel, data):
            return
        raw = store.read_text(rel)
        if raw is None:
            continue  # released between our attempt and our look
        try:
            holder = json.loads(raw)
            holder["pid"] = int(holder["pid"])
        except (ValueError, KeyError, TypeError):
            raise StoreError(
                f"run lock {store.path(rel)} is unreadable: remove it if no run of "
                f"pipeline '{pipeline}' is in progress"
            ) from None
        if _holder_alive(holder):
            raise RunLocked(_locked_message(store, rel, pipeline, holder), holder)
        _reclaim(store, rel, raw)
    raise StoreError(f"cannot take the run lock {store.path(rel)}: too many contenders")


def _release(store: ArtifactStore, rel: str, run_id: str) -> None:
    """Remove the lock if it is still ours. Never raises: a lock left behind by a failure here
    is stale once this process exits, and the next run reclaims it."""
    with contextlib.suppress(Exception):
        raw = store.read_text(rel)
        if raw is not None and json.loads(raw).get("run_id") == run_id:
            store.fs.rm_file(store.path(rel))


def _reclaim(store: ArtifactStore, rel: str, stale: str) -> None:
    """Remove a stale lock. Locally it is first renamed aside, then compared with what was judged
    stale: if a contender reclaimed it in between, what was moved is that contender's live lock,
    and it is put back. Elsewhere (object stores) it is simply removed: advisory, see above."""
    path = store.path(rel)
    if not store.is_local:
        with contextlib.suppress(FileNotFoundError):
            store.fs.rm_file(path)
        return
    aside = os.path.join(store.root, "tmp", f"{uuid.uuid4().hex}.stale-lock")
    try:
        os.makedirs(os.path.dirname(aside), exist_ok=True)
        os.rename(path, aside)
    except FileNotFoundError:
        return  # a contender removed it first
    except OSError as err:
        raise StoreError(f"cannot remove stale run lock {path}: {err.strerror or err}") from None
    try:
        with open(aside, encoding="utf-8") as fh:
            moved = fh.read()
        if moved != stale:
            with contextlib.suppress(FileExistsError):
                os.link(aside, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(aside)


def _holder_alive(holder: Mapping[str, Any]) -> bool:
    """Whether the process named in a lock may still be running. Another host's process cannot
    be checked, so it counts as running."""
    if holder.get("host") != socket.gethostname():
        return True
    pid = int(holder["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    state, started = _proc_stat(pid)
    if state == "Z":
        return False  # exited, not yet reaped by its parent
    recorded = holder.get("pid_start")
    # the pid was reused by a process started after the holder
    return not (recorded is not None and started is not None and started != recorded)


def _process_start(pid: int) -> int | None:
    return _proc_stat(pid)[1]


def _proc_stat(pid: int) -> tuple[str | None, int | None]:
    """(state, start time in clock ticks since boot) from /proc; (None, None) where unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            text = fh.read()
        fields = text[text.rindex(")") + 2 :].split()
        return fields[0], int(fields[19])
    except (OSError, ValueError, IndexError):
        return None, None


def _locked_message(
    store: ArtifactStore, rel: str, pipeline: str, holder: Mapping[str, Any]
) -> str:
    try:
        since = dt.datetime.fromtimestamp(float(holder["started"])).strftime("%Y-%m-%d %H:%M:%S")
    except (KeyError, TypeError, ValueError, OverflowError):
        since = "an unknown time"
    path = store.path(rel)
    if holder.get("host") == socket.gethostname():
        hint = "wait for it to finish or stop it (a lock left by a process that died is reclaimed automatically)"
    else:
        hint = f"wait for it to finish; if that process is gone, remove {path}"
    return (
        f"pipeline '{pipeline}' is already running with this spec on this store "
        f"(run {holder.get('run_id', '?')}, pid {holder['pid']} on host {holder.get('host', '?')}, "
        f"started {since}; lock {path}): {hint}"
    )


@contextlib.contextmanager
def _gc_paused() -> Any:
    """No cyclic garbage collection while building the spec, graph and plan: they allocate many
    objects and free few, so collections there find nothing and cost up to 30% of a large plan.
    Only pipeflow's own code runs inside (no stage code)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class _Recorder:
    """Batches stage records into few SQLite transactions.

    A transaction per stage would cost more than running a small stage. Records are flushed when
    ``max_rows`` are waiting, ``max_age_s`` after the first one arrived (a timer, so a long stage
    does not hold back the records of those before it), and at the end of the run; ``runs show``
    of a run in progress lags by at most a fraction of a second. A crash can lose only those
    unflushed records.
    """

    def __init__(
        self, db: MetadataDB, run_id: str, *, max_rows: int = 200, max_age_s: float = 0.25
    ):
        self.db, self.run_id = db, run_id
        self.max_rows, self.max_age_s = max_rows, max_age_s
        #: latest row per stage: a stage that starts and ends within one batch is written once
        self.rows: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def add(self, row: dict[str, Any]) -> None:
        with self._lock:
            self.rows[row["stage"]] = row
            full = len(self.rows) >= self.max_rows
            if not full and self._timer is None:
                self._timer = threading.Timer(self.max_age_s, self._flush_quietly)
                self._timer.daemon = True
                self._timer.start()
        if full:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            rows, self.rows = self.rows, {}
            if rows:
                self.db.record_stages(self.run_id, rows.values())

    def _flush_quietly(self) -> None:
        with contextlib.suppress(Exception):  # the end-of-run flush reports failures
            self.flush()


def _tasks(pipeline: Pipeline, plan: Plan, store: ArtifactStore, run_id: str) -> list[StageTask]:
    tasks = []
    loaded = pipeline.loaded
    for name in plan.to_run:
        st = pipeline.stages[name]
        sp = plan.stages[name]
        known = {
            port: plan.stages[w.source].outputs[w.source_port]
            for port, w in st.inputs.items()
            if plan.stages[w.source].action == "cached"
        }
        tasks.append(
            StageTask(
                name=name,
                type_name=st.type,
                cls=st.cls,
                config=st.config,
                config_digest=sp.config_digest,
                code_digest=sp.code_digest,
                inputs={port: (w.source, w.source_port) for port, w in st.inputs.items()},
                output_kinds={p: port.kind for p, port in st.output_ports.items()},
                store=store.ref,
                run_id=run_id,
                base_dir=str(loaded.base_dir),
                params=loaded.spec.params,
                resources=st.spec.resources,
                retries=st.spec.retries,
                timeout_s=st.spec.timeout_s,
                use_cache=st.spec.cache and st.cls.cacheable and not sp.forced,
                known_inputs=known,
                pipeline=pipeline.name,
            )
        )
    return tasks


def _row(
    pipeline: Pipeline,
    sp: StagePlan,
    o: StageOutcome,
    inputs: dict[str, ArtifactRef],
    started: float | None,
    ended: float | None,
) -> dict[str, Any]:
    st = pipeline.stages[sp.name]
    return {
        "stage": sp.name,
        "seq": pipeline.position[sp.name],
        "type": st.type,
        "state": str(o.state),
        "key": o.key,
        "reason": o.reason,
        "started": started,
        "ended": ended,
        "attempts": o.attempts,
        "error": o.error,
        "traceback": o.traceback,
        "worker": o.worker,
        "config_digest": sp.config_digest,
        "config": sp.config,
        "code_digest": sp.code_digest,
        "input_digests": {p: r.digest for p, r in inputs.items()},
        "outputs": o.outputs,
        "lineage": {
            port: (w.source, w.source_port, inputs[port].digest)
            for port, w in st.inputs.items()
            if port in inputs
        },
    }
