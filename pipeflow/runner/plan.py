"""plan: decide, before anything runs, which stages are reused and why the others run.

Walking the DAG in topological order, a stage whose inputs are all known (it has none, or every
upstream is reused) gets its cache key computed now; if the store has a complete result under that
key the stage is CACHED. Otherwise it will RUN, and the plan says why, comparing with the last
recorded execution of the same stage: first run, config changed (which fields), code changed,
inputs changed, ``--force``, ``cache: false``, or an upstream stage that will run.

A stage downstream of a running stage is planned to run, but may still be reused at run time if
its upstream produced identical bytes (see :mod:`pipeflow.execute.task`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pipeflow.core.compiler import Pipeline
from pipeflow.core.hashing import digest_json, stage_key
from pipeflow.core.tracking import from_manifest
from pipeflow.execute.task import StageRecord
from pipeflow.store.artifacts import ArtifactStore


@dataclass(kw_only=True)
class StagePlan(StageRecord):
    """A stage's record as planned: run or reuse, and the digests its cache key is made of."""

    action: Literal["cached", "run"]
    config: dict[str, Any]
    config_digest: str
    fingerprint: str
    forced: bool = False


@dataclass
class Plan:
    pipeline: Pipeline
    stages: dict[str, StagePlan]

    @property
    def to_run(self) -> list[str]:
        return [n for n, s in self.stages.items() if s.action == "run"]

    @property
    def cached(self) -> list[str]:
        return [n for n, s in self.stages.items() if s.action == "cached"]


def make_plan(
    pipeline: Pipeline,
    store: ArtifactStore,
    previous: Any = None,
    *,
    force: bool | set[str] = False,
    include: set[str] | None = None,
) -> Plan:
    """Plan the stages in ``include`` (default: all). ``previous``: last records by stage name
    (anything with ``.get(name)``; only asked about stages that must run).

    ``force``: True re-runs every stage; a set re-runs those stages (and, through their new
    outputs, whatever depends on them).
    """
    previous = previous or {}
    base_dir = pipeline.loaded.base_dir
    plans: dict[str, StagePlan] = {}
    for name in pipeline.order:
        if include is not None and name not in include:
            continue
        st = pipeline.stages[name]
        config = st.config.model_dump(mode="json", by_alias=True)
        config_digest = digest_json(config)
        fingerprint = st.cls.fingerprint(st.config, base_dir)
        moving = st.cls.store_fingerprint(st.config, store)
        if moving:
            fingerprint = digest_json([fingerprint, moving])
        plan = StagePlan(
            name=name,
            action="run",
            config=config,
            config_digest=config_digest,
            fingerprint=fingerprint,
        )
        plans[name] = plan
        waiting = [
            w.source
            for w in st.inputs.values()
            if plans.get(w.source) is None or plans[w.source].action != "cached"
        ]
        if force is True or (isinstance(force, set) and name in force):
            plan.reason = "forced (--force)"
            plan.forced = True
            continue
        if not st.spec.cache:
            plan.reason = "cache disabled for this stage (cache: false)"
            continue
        if not st.cls.cacheable:
            plan.reason = f"'{st.type}' stages run every time (they act, not compute)"
            continue
        if waiting:
            plan.reason = f"upstream stage '{sorted(set(waiting))[0]}' will run"
            continue
        inputs = {port: plans[w.source].outputs[w.source_port] for port, w in st.inputs.items()}
        plan.inputs = inputs
        plan.key = stage_key(
            st.type,
            st.cls.version,
            config_digest,
            fingerprint,
            {p: r.digest for p, r in inputs.items()},
        )
        manifest = store.read_manifest(plan.key)
        if manifest is not None:
            plan.action = "cached"
            plan.outputs = manifest["outputs"]
            plan.cached_from = manifest.get("run_id")
            plan.metrics, plan.logged_params = from_manifest(manifest)
            plan.reason = f"unchanged: same type, config, code and inputs as run {plan.cached_from}"
            continue
        cut_short = getattr(previous, "cut_short", None)
        plan.reason = _why(plan, previous.get(name), cut_short(name) if cut_short else None)
    return Plan(pipeline, plans)


def _why(plan: StagePlan, last: Any, cut_short: str | None = None) -> str:
    if cut_short is not None and (last is None or last["state"] != "failed"):
        return f"not finished last time: {cut_short}"
    if last is None:
        return "first run of this stage"
    if (
        last["state"] == "failed"
        and last["config_digest"] == plan.config_digest
        and last["code_digest"] == plan.fingerprint
    ):
        return "previous attempt failed"
    if last["config_digest"] != plan.config_digest:
        try:
            old = json.loads(last["config"]) if "config" in last.keys() and last["config"] else None  # noqa: SIM118 (sqlite3.Row: `in` tests values)
        except ValueError:
            old = None
        changed = _diff(old, plan.config) if old is not None else []
        return f"config changed: {', '.join(changed[:5])}" if changed else "config changed"
    if last["code_digest"] != plan.fingerprint:
        return "code changed"
    old_inputs = json.loads(last["input_digests"] or "{}")
    changed = sorted(p for p, r in plan.inputs.items() if old_inputs.get(p) != r.digest)
    if changed:
        return f"inputs changed: {', '.join(changed)}"
    return "no stored result for this key"


def _diff(old: Any, new: Any, prefix: str = "with") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _diff(old.get(k), new.get(k), f"{prefix}.{k}")
        return out
    if old != new:
        return [f"{prefix} {json.dumps(old, default=str)} -> {json.dumps(new, default=str)}"]
    return []
