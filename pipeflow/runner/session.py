"""One run, end to end: load -> compile -> plan -> execute -> record.

This is the only module that knows every layer; the CLI and the Python API both call
:func:`run`. The client process is the single writer of run metadata: it records cached stages
before execution starts and every other stage as its result arrives, so ``pipeflow runs show`` of
a run in progress is current, and a run killed mid-way leaves exactly the finished stages
recorded (their manifests in the store make the next run reuse them).

The run lock (:mod:`pipeflow.runner.lock`) keeps the same resolved spec from running twice on
one store; the recorder (:mod:`pipeflow.runner.recorder`) batches stage records into few
transactions; the report (:mod:`pipeflow.runner.report`) is what :func:`run` returns.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pipeflow.core import gcpause
from pipeflow.core.compiler import Pipeline, compile_pipeline
from pipeflow.core.importpath import during_a_run
from pipeflow.core.stage_types import StageRegistry
from pipeflow.core.states import RunState, StageState
from pipeflow.errors import UsageError
from pipeflow.execute import bundle
from pipeflow.execute.dask_executor import DaskExecutor
from pipeflow.execute.factory import cluster_factory
from pipeflow.execute.protocol import Executor
from pipeflow.execute.task import StageResult, StageTask, carry
from pipeflow.runner.lock import run_lock
from pipeflow.runner.plan import Plan, make_plan
from pipeflow.runner.recorder import Recorder, stage_row
from pipeflow.runner.report import RunReport, StageOutcome
from pipeflow.spec.load import LoadedSpec, load
from pipeflow.store.artifacts import ArtifactStore, StoreRef
from pipeflow.store.metadata import MetadataDB
from pipeflow.workspace import open_store

if TYPE_CHECKING:
    from pipeflow.core.progress import Update

EventCallback = Callable[[str, StageState, "StageOutcome"], None]
#: given each live update of a running stage (``ctx.progress``, its latest log line), from any
#: thread (:mod:`pipeflow.execute.channel`)
ProgressCallback = Callable[["Update"], None]


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def check_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    """Tags as recorded: names as :data:`pipeflow.core.tracking.NAME` allows, values as text."""
    from pipeflow.core.tracking import check_name

    out = {}
    for name, value in tags.items():
        try:
            check_name(name, "tag")
        except ValueError as err:
            raise UsageError(str(err)) from None
        out[name] = str(value)
    return out


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
            import difflib

            close = difflib.get_close_matches(name, list(pipeline.stages), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise UsageError(f"no stage named '{name}' in pipeline '{pipeline.name}'{hint}")
    for name in only or []:
        chosen.add(name)
    for name in from_ or []:
        chosen |= {name} | pipeline.downstream(name)
    return chosen


def make_executor(
    loaded: LoadedSpec, kind: str | None, address: str | None, cluster: str | None = None
) -> DaskExecutor:
    """The spec's executor, with what the command line overrides: ``kind``; ``address`` (the
    spec's cluster, options and adapt then do not apply: they describe a cluster the spec would
    start); ``cluster`` (it replaces the spec's factory and its options, written for that one;
    ``adapt`` still applies)."""
    ex = loaded.spec.executor
    kind = kind or ex.kind
    distributed = kind == "distributed"
    factory = None
    if distributed and not address and (cluster or ex.cluster):
        origin = (
            "--cluster"
            if cluster
            else f"{loaded.source.where(('executor', 'cluster'))}: executor.cluster"
        )
        bounds = (ex.adapt.minimum, ex.adapt.maximum) if ex.adapt else None
        factory = cluster_factory(
            cluster or ex.cluster or "",
            {} if cluster else ex.options,
            adapt=bounds,
            where=origin,
            adapt_where=f"{loaded.source.where(('executor', 'adapt'))}: executor.adapt",
            search_path=str(loaded.base_dir),
        )
    adapt = ex.adapt if distributed and not address and factory is None else None
    return DaskExecutor(
        kind,
        address=address or (ex.address if distributed and factory is None else None),
        workers=ex.workers,
        threads_per_worker=ex.threads_per_worker,
        cluster=factory,
        adapt=(adapt.minimum, adapt.maximum) if adapt else None,
    )


def run(
    spec: str | os.PathLike[str] | LoadedSpec,
    *,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    executor: str | Executor | None = None,
    address: str | None = None,
    cluster: str | None = None,
    only: list[str] | str | None = None,
    from_: list[str] | str | None = None,
    force: bool = False,
    registry: StageRegistry | None = None,
    on_event: EventCallback | None = None,
    on_plan: Callable[[Plan], None] | None = None,
    tags: Mapping[str, str] | None = None,
    note: str | None = None,
    on_progress: ProgressCallback | None = None,
) -> RunReport:
    """Run a pipeline. Returns a :class:`RunReport` whether or not stages failed.

    ``executor`` (a kind, or an :class:`~pipeflow.execute.protocol.Executor`), ``address`` and
    ``cluster`` (``module:attribute`` of a cluster factory) override the spec's executor.
    ``tags`` and ``note`` are recorded with the run (``runs list --tag``, ``runs show``).
    ``on_progress`` receives live updates of running stages where the executor can send them
    (:mod:`pipeflow.core.progress`); without it none are sent."""
    tags = check_tags(tags or {})
    t0 = time.perf_counter()
    # loading, compiling, planning and recording reused stages build thousands of long-lived
    # objects and no garbage: no collection until the first stage runs (pipeflow.core.gcpause)
    with gcpause.paused() as pause:
        if isinstance(executor, str):
            overrides = _kind_first(overrides, executor)
        loaded = spec if isinstance(spec, LoadedSpec) else load(spec, overrides)
        pipeline = compile_pipeline(loaded, registry)
        store, db = open_store(loaded)
        try:
            run_id = new_run_id()
            # the spec's folder goes on sys.path for the stage code and comes off when the run
            # ends; small objects written and read are kept in memory meanwhile (store.recent)
            with (
                run_lock(store, pipeline.name, loaded.digest, run_id, spec=str(loaded.path)),
                during_a_run(),
                store.recent.during(),
            ):
                return _run(
                    pipeline,
                    store,
                    db,
                    run_id,
                    executor,
                    address,
                    cluster,
                    only,
                    from_,
                    force,
                    on_event,
                    on_plan,
                    t0,
                    pause,
                    tags,
                    note,
                    on_progress,
                )
        finally:
            db.close()


def _kind_first(overrides: Sequence[str] | Mapping[str, Any], kind: str) -> Sequence[str]:
    """The overrides, led by ``executor.kind=KIND`` where they set other executor keys: ``--executor
    distributed --set executor.address=...`` means a distributed run at that address, whatever
    kind the spec names (the spec refuses an address for a kind that has none)."""
    from pipeflow.spec.load import override_strings

    items = override_strings(overrides)
    keys = [item.partition("=")[0].strip() for item in items]
    if "executor.kind" in keys or not any(k.startswith("executor.") for k in keys):
        return items
    return (f"executor.kind={kind}", *items)


def _run(
    pipeline: Pipeline,
    store: ArtifactStore,
    db: MetadataDB,
    run_id: str,
    executor: str | Executor | None,
    address: str | None,
    cluster: str | None,
    only: list[str] | str | None,
    from_: list[str] | str | None,
    force: bool,
    on_event: EventCallback | None,
    on_plan: Callable[[Plan], None] | None,
    t0: float,
    pause: gcpause.Pause,
    tags: Mapping[str, str] | None = None,
    note: str | None = None,
    on_progress: ProgressCallback | None = None,
) -> RunReport:
    loaded = pipeline.loaded
    ex: Executor = (
        executor
        if executor is not None and not isinstance(executor, str)
        else make_executor(loaded, executor, address, cluster)
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
    plan, outcomes = _plan_and_record_cached(
        pipeline, store, db, run_id, ex, only, from_, force, on_event, on_plan, tags, note
    )
    # workers that may not see the spec's folder get its code through the store (only then:
    # local executors import the folder directly, at no cost)
    code = (
        bundle.ship(store, loaded.base_dir)
        if plan.to_run and getattr(ex, "ships_code", False)
        else None
    )
    tasks = _tasks(pipeline, plan, store, run_id, code)

    def handle(name: str, state: StageState, result: StageResult | None) -> None:
        o = outcomes[name]
        o.state = state
        if result is not None:
            if result.manifest is not None and result.key:
                store.record_manifest(result.key, result.manifest, duration=result.duration)
            reason = result.reason or o.reason
            carry(result, o, skip=("manifest",))  # recorded above: the report need not hold it
            o.state, o.reason, o.outputs = state, reason, dict(result.outputs)
            recorder.add(stage_row(pipeline, plan.stages[name], o))
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

    recorder = Recorder(db, run_id)
    # The spec, graph and plan are long-lived; freezing them keeps the garbage collector from
    # rescanning thousands of them after every stage (it was a third of a no-op stage's cost).
    # Stage code runs with the collector on, as it was before the run.
    pause.resume(freeze=True)
    try:
        if on_progress is not None and getattr(ex, "reports_progress", False):
            ex.execute(tasks, handle, on_progress=on_progress)  # type: ignore[call-arg]
        else:
            ex.execute(tasks, handle)
    except BaseException as err:
        with contextlib.suppress(Exception):  # keep the original error; record what we can
            store.flush()
        recorder.flush()
        db.finish_run(run_id, RunState.FAILED, error=f"{type(err).__name__}: {err}")
        raise
    finally:
        gcpause.thaw()  # unless the process exits after this run (pipeflow run)
    store.flush()
    recorder.flush()
    failed = [n for n, o in outcomes.items() if o.state is StageState.FAILED]
    state = RunState.FAILED if failed else RunState.DONE
    db.finish_run(run_id, state, error=f"failed stages: {', '.join(failed)}" if failed else None)
    return RunReport(
        run_id, pipeline.name, state, outcomes, store, db.location, time.perf_counter() - t0
    )


def _plan_and_record_cached(
    pipeline: Pipeline,
    store: ArtifactStore,
    db: MetadataDB,
    run_id: str,
    ex: Executor,
    only: list[str] | str | None,
    from_: list[str] | str | None,
    force: bool,
    on_event: EventCallback | None,
    on_plan: Callable[[Plan], None] | None,
    tags: Mapping[str, str] | None,
    note: str | None,
) -> tuple[Plan, dict[str, StageOutcome]]:
    """The plan (``--only``/``--from`` checked against it), shown to ``on_plan``; the run
    started in the metadata, in one transaction with the reused stages' records and the others
    pending; then the reused stages shown to ``on_event``. Returns the plan and the outcome of
    every stage."""
    loaded = pipeline.loaded
    chosen = select(pipeline, only, from_)
    include = None
    if chosen is not None:
        include = set(chosen)
        for name in chosen:
            include |= pipeline.upstream(name)
    # With --only/--from, --force applies to the chosen stages; their upstream is reused.
    forced: bool | set[str] = (set(chosen) if chosen is not None else True) if force else False
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
            name=name,
            type=pipeline.stages[name].type,
            reason=sp.reason,
            default_port=pipeline.stages[name].default_output,
        )
        for name, sp in plan.stages.items()
    }
    cached_rows = []
    for name in plan.cached:
        sp, o = plan.stages[name], outcomes[name]
        carry(sp, o)
        o.state, o.outputs = StageState.CACHED, dict(sp.outputs)
        cached_rows.append(stage_row(pipeline, sp, o))
    # the run, its stages to run (pending) and its reused stages: one transaction
    db.start_run(
        run_id,
        pipeline.name,
        spec_path=str(loaded.path),
        spec_digest=loaded.digest,
        executor=getattr(ex, "name", type(ex).__name__),
        params=loaded.spec.params,
        overrides=list(loaded.overrides),
        stages=[(n, pipeline.stages[n].type) for n in plan.stages],
        tags=tags,
        note=note,
        records=cached_rows,
    )
    if on_event:
        for name in plan.cached:
            on_event(name, StageState.CACHED, outcomes[name])
    return plan, outcomes


def _tasks(
    pipeline: Pipeline, plan: Plan, store: ArtifactStore, run_id: str, code: str | None = None
) -> list[StageTask]:
    ref, base_dir = store.ref, str(pipeline.loaded.base_dir)  # alike for every task: made once
    return [
        stage_task(pipeline, plan, name, store, run_id, code, ref=ref, base_dir=base_dir)
        for name in plan.to_run
    ]


def stage_task(
    pipeline: Pipeline,
    plan: Plan,
    name: str,
    store: ArtifactStore,
    run_id: str,
    code: str | None = None,
    *,
    ref: StoreRef | None = None,
    base_dir: str | None = None,
) -> StageTask:
    """What a worker needs to run stage ``name`` of ``plan`` (inputs of cached upstream stages
    are known already; the others arrive as upstream results). ``ref`` and ``base_dir``: the
    store's and the spec folder's, where the caller has them already."""
    loaded = pipeline.loaded
    st = pipeline.stages[name]
    sp = plan.stages[name]
    known = {
        port: plan.stages[w.source].outputs[w.source_port]
        for port, w in st.inputs.items()
        if w.source in plan.stages and plan.stages[w.source].action == "cached"
    }
    return StageTask(
        name=name,
        type_name=st.type,
        cls=st.cls,
        config=st.config,
        config_digest=sp.config_digest,
        fingerprint=sp.fingerprint,
        inputs={port: (w.source, w.source_port) for port, w in st.inputs.items()},
        output_kinds={p: port.kind for p, port in st.output_ports.items()},
        store=ref if ref is not None else store.ref,
        run_id=run_id,
        base_dir=base_dir if base_dir is not None else str(loaded.base_dir),
        params=loaded.spec.params,
        resources=st.spec.resources,
        retries=st.spec.retries,
        timeout_s=st.spec.timeout_s,
        use_cache=st.spec.cache and st.cls.cacheable and not sp.forced,
        known_inputs=known,
        pipeline=pipeline.name,
        code=code,
    )
