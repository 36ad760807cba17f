"""Triggers: what re-runs a pipeline unattended (``pipeflow watch SPEC``).

The spec's ``triggers:`` block (DESIGN.md) declares three causes, checked on every tick:

- ``schedule``: a five-field cron expression (minute hour day-of-month month day-of-week; ``*``,
  ``*/n``, ``a-b``, ``a-b/n`` and lists). It fires when a matching minute passed since the last
  tick, so a watcher that was busy does not skip a slot.
- ``on_data_change``: ingest stages whose source is watched. The source's content fingerprint now
  is compared with the one the last recorded run of that stage read: any change fires.
- ``on_drift``: a ``monitor`` stage of the spec. Each tick runs that stage alone (monitoring is
  never cached); a window it judges drifted, or an alert it sends, fires.

A firing starts a run of the whole pipeline but the ``on_drift`` monitor stage (so a new model goes through the same gates, and a
``promote`` stage moves the alias only if they pass; a server following the alias picks it up).
Every firing is recorded with its cause and the run it started, in ``<store>/watch/events/``
(append-only JSON lines, like the audit log; on a remote store, shipped from this machine's spool
to ``<store>/journal/watch/events/`` as each is written, :mod:`pipeflow.store.shipping`).
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("pipeflow.watch")

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day", 1, 31), ("month", 1, 12), ("weekday", 0, 6))


def parse_cron(expression: str) -> list[set[int]]:
    """The allowed values of each of the five fields; raises ValueError naming the bad field."""
    parts = expression.split()
    if len(parts) != 5:
        raise ValueError(
            f"cron expression {expression!r}: expected 5 fields (minute hour day month weekday), got {len(parts)}"
        )
    out = []
    for text, (name, low, high) in zip(parts, _FIELDS, strict=True):
        allowed: set[int] = set()
        for item in text.split(","):
            body, _, step_text = item.partition("/")
            try:
                step = int(step_text) if step_text else 1
                if body == "*":
                    start, end = low, high
                elif "-" in body:
                    a, b = body.split("-", 1)
                    start, end = int(a), int(b)
                else:
                    start = int(body)
                    end = high if step_text else start
            except ValueError:
                raise ValueError(
                    f"cron expression {expression!r}: bad {name} field {text!r}"
                ) from None
            if name == "weekday" and end == 7:  # 7 is Sunday too
                if start == 7:
                    start = end = 0
                else:
                    end = 6
                    allowed.add(0)
            if step < 1 or start < low or end > high or start > end:
                raise ValueError(
                    f"cron expression {expression!r}: {name} field {text!r} outside {low}-{high}"
                )
            allowed.update(range(start, end + 1, step))
        out.append(allowed)
    return out


def cron_matches(fields: list[set[int]], when: dt.datetime) -> bool:
    """As cron does: when both day-of-month and day-of-week are restricted (neither is ``*``),
    a day matching either one matches."""
    minute, hour, day, month, weekday = fields
    day_ok, weekday_ok = when.day in day, (when.isoweekday() % 7) in weekday
    every_day, every_weekday = len(day) == 31, len(weekday) == 7
    days = (day_ok or weekday_ok) if not (every_day or every_weekday) else (day_ok and weekday_ok)
    return when.minute in minute and when.hour in hour and when.month in month and days


def cron_due(expression: str, since: float, now: float) -> float | None:
    """The latest matching minute in ``(since, now]`` (epoch seconds, UTC), or None."""
    fields = parse_cron(expression)
    moment = dt.datetime.fromtimestamp(now, dt.UTC).replace(second=0, microsecond=0)
    earliest = dt.datetime.fromtimestamp(since, dt.UTC)
    checked = 0
    while moment > earliest and checked < 60 * 24 * 8:  # at most a week and a day back
        if cron_matches(fields, moment):
            return moment.timestamp()
        moment -= dt.timedelta(minutes=1)
        checked += 1
    return None


class Watcher:
    """Checks a spec's triggers and starts runs; one :meth:`tick` per interval."""

    def __init__(
        self, spec_path: str | Path, overrides: Sequence[str] = (), *, executor: str | None = None
    ):
        self.spec_path, self.overrides, self.executor = str(spec_path), list(overrides), executor
        self.last_tick = time.time()

    def _load(self) -> Any:
        from pipeflow.core.compiler import compile_pipeline
        from pipeflow.spec.load import load

        loaded = load(self.spec_path, self.overrides)
        return loaded, compile_pipeline(loaded)

    def _events(self, store: Any) -> Any:
        """A function appending watch events: to ``<store>/watch`` of a local store; for a
        remote one, to this machine's spool, each shipped at once (pipeflow.store.shipping)."""
        from functools import partial

        from pipeflow.store.shipping import append_and_ship

        return partial(append_and_ship, store, "watch", "events")

    def check(self, now: float | None = None) -> list[dict[str, Any]]:
        """The causes that fire now (without running anything but ``on_drift``'s monitor)."""
        from pipeflow.workspace import open_workspace

        now = time.time() if now is None else now
        loaded, pipeline = self._load()
        triggers = loaded.spec.triggers
        causes: list[dict[str, Any]] = []
        if triggers.schedule:
            due = cron_due(triggers.schedule, self.last_tick, now)
            if due is not None:
                causes.append(
                    {"cause": "schedule", "detail": f"'{triggers.schedule}' matched {_iso(due)}"}
                )
        if triggers.on_data_change:
            db = open_workspace(loaded).metadata()
            try:
                for name in triggers.on_data_change:
                    st = pipeline.stages[name]
                    current = st.cls.fingerprint(st.config, loaded.base_dir)
                    last = db.last_stage_run(pipeline.name, name)
                    seen = last["code_digest"] if last is not None else None
                    if current != seen:
                        causes.append(
                            {
                                "cause": "data_change",
                                "stage": name,
                                "detail": f"source of '{name}' changed: {str(seen)[:12]} -> {current[:12]}"
                                if seen
                                else f"source of '{name}' has never been run",
                            }
                        )
            finally:
                db.close()
        if triggers.on_drift:
            drift = self._monitor(loaded, pipeline, triggers.on_drift)
            if drift is not None:
                sent = [a for a in drift.get("alerts") or [] if not a.get("suppressed")]
                if drift.get("drifted") or sent:
                    why = (
                        f"{len(drift.get('drifted_features') or [])} drifted feature(s)"
                        if drift.get("drifted")
                        else f"alert(s): {', '.join(a['rule'] for a in sent)}"
                    )
                    causes.append(
                        {
                            "cause": "drift",
                            "stage": triggers.on_drift,
                            "detail": f"{drift['model']}@{drift['version']}: {why}",
                            "report_window_end": drift["window"]["end"],
                        }
                    )
        self.last_tick = now
        return causes

    def _monitor(self, loaded: Any, pipeline: Any, name: str) -> dict[str, Any] | None:
        """Run the ``on_drift`` stage on its own (it needs no inputs: its ``after`` wiring only
        orders it in a full run) through :func:`~pipeflow.execute.task.run_stage`, like any
        stage: its retries and timeout apply, its outputs land in the store, and its report
        also lands in the monitoring history. Never from the cache: it judges the traffic of now."""
        import dataclasses

        from pipeflow.execute.task import run_stage
        from pipeflow.runner.plan import make_plan
        from pipeflow.runner.session import stage_task
        from pipeflow.workspace import open_workspace

        st = pipeline.stages[name]
        store = open_workspace(loaded).store  # the store only: no database is opened
        plan = make_plan(pipeline, store, include={name}, force={name})
        task = stage_task(pipeline, plan, name, store, f"watch-{secrets.token_hex(3)}")
        config = st.config
        if getattr(config, "fail_on_drift", False):  # here drift is an answer, not a failure
            config = config.model_copy(update={"fail_on_drift": False})
        alone = dataclasses.replace(
            task, config=config, inputs={}, known_inputs={}, use_cache=False
        )
        result = run_stage(alone)
        if result.error is not None or not result.state.ok:
            # a failing monitor must not retrain: say why and wait
            log.error("on_drift stage '%s' failed: %s", name, result.error or result.reason)
            return None
        port = st.cls.default_output(st.config) or "report"
        ref = result.outputs.get(port)
        report = store.load(ref) if ref is not None else None
        return report if isinstance(report, dict) else None

    def tick(
        self, now: float | None = None, *, on_run: Callable[[Any], None] | None = None
    ) -> dict[str, Any] | None:
        """Check the triggers; if any fire, record them and run the pipeline once."""
        from pipeflow.runner.session import run

        causes = self.check(now)
        if not causes:
            return None
        from pipeflow.workspace import open_workspace

        loaded, pipeline = self._load()
        store = open_workspace(loaded).store  # the store only: no database is opened
        events = self._events(store)
        firing = {
            "id": secrets.token_hex(6),
            "time": time.time(),
            "event": "trigger",
            "pipeline": pipeline.name,
            "spec": self.spec_path,
            "overrides": self.overrides,
            "causes": causes,
        }
        events([firing])
        log.info("%s: %s -> starting a run", pipeline.name, "; ".join(c["detail"] for c in causes))
        # the monitor stage judged the old model: the retraining run leaves it out
        others = [s for s in pipeline.stages if s != loaded.spec.triggers.on_drift]
        from pipeflow.errors import RunLocked

        try:
            report = run(
                loaded,
                executor=self.executor,
                only=others if len(others) < len(pipeline.stages) else None,
            )
        except RunLocked as err:  # a run of this spec is going on: it is the retraining
            log.warning(
                "%s: not started, %s; the triggers are checked again next tick", pipeline.name, err
            )
            events([{**firing, "event": "run_skipped", "reason": str(err)}])
            return None
        finished = {
            "id": firing["id"],
            "time": time.time(),
            "event": "run_finished",
            "pipeline": pipeline.name,
            "run_id": report.run_id,
            "state": str(report.state),
        }
        events([finished])
        if on_run is not None:
            on_run(report)
        return {**firing, "run_id": report.run_id, "state": str(report.state)}


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
