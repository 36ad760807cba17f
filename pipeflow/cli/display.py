"""Terminal presentation of runs: live progress while running, tables for ``pipeflow runs``.

Kept out of :mod:`pipeflow.runner.session` so that running a pipeline from Python or a notebook draws
nothing. On a terminal a live progress bar names the stages running now; every finished stage also
prints one line (so a log file or CI output shows the whole story without a TTY).
"""

from __future__ import annotations

import json
import time
from typing import Any

from pipeflow.cli._common import escape, when
from pipeflow.core.states import StageState

_MARK = {
    StageState.DONE: ("[green]✓[/]", "done"),
    StageState.CACHED: ("[cyan]↺[/]", "cached"),
    StageState.FAILED: ("[red]✗[/]", "failed"),
    StageState.SKIPPED: ("[yellow]-[/]", "skipped"),
}


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.2f}s"


class RunDisplay:
    def __init__(self, console: Any, *, quiet: bool = False, debug: bool = False):
        self.console = console
        self.quiet = quiet
        self.debug = debug
        self.running: dict[str, float] = {}
        self.total = 0
        self.finished = 0
        self._progress: Any = None
        self._task: Any = None
        self._width = 12

    def __enter__(self) -> RunDisplay:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def plan(self, plan: Any) -> None:
        self.total = len(plan.stages)
        self._width = max([len(n) for n in plan.stages] + [12])
        to_run, cached = len(plan.to_run), len(plan.cached)
        if not self.quiet:
            self.console.print(
                f"[bold]{plan.pipeline.name}[/]: {self.total} stages, {to_run} to run, {cached} reused from the store"
            )
            for name in plan.to_run:
                self.console.print(
                    f"  [dim]· {name:<{self._width}} will run: {plan.stages[name].reason}[/]"
                )
        if self.console.is_terminal and not self.quiet and to_run:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                TextColumn("[bold blue]running"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.description}"),
                console=self.console,
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task("", total=self.total)

    def event(self, name: str, state: StageState, outcome: Any) -> None:
        if state is StageState.RUNNING:
            self.running[name] = time.monotonic()
        else:
            self.running.pop(name, None)
            self.finished += 1
            if not self.quiet:
                mark, word = _MARK.get(state, ("?", str(state)))
                detail = _fmt_s(outcome.duration) if state is StageState.DONE else ""
                if state is StageState.CACHED or state is StageState.SKIPPED:
                    detail = outcome.reason
                elif state is StageState.FAILED:
                    detail = outcome.error or ""
                    if outcome.attempts > 1:
                        detail += f" (after {outcome.attempts} attempts)"
                self.console.print(
                    f"  {mark} {name:<{self._width}} {word:<7} {detail}", markup=True
                )
                if state is StageState.FAILED and self.debug and outcome.traceback:
                    self.console.print(outcome.traceback, markup=False)
        if self._progress is not None:
            shown = ", ".join(list(self.running)[:4]) + (" ..." if len(self.running) > 4 else "")
            self._progress.update(self._task, completed=self.finished, description=shown)

    def summary(self, report: Any) -> None:
        counts = ", ".join(
            f"{report.count(s)} {s}"
            for s in (StageState.DONE, StageState.CACHED, StageState.FAILED, StageState.SKIPPED)
        )
        colour = "green" if report.ok else "red"
        self.console.print(
            f"[{colour}]run {report.run_id} {report.state}[/] in {_fmt_s(report.duration)}: {counts}"
        )
        for name in report.failed:
            o = report.stages[name]
            self.console.print(f"[red]stage '{name}' failed:[/] {o.error}", markup=True)
        if report.failed:
            self.console.print(f"details: pipeflow runs show {report.run_id} --db {report.db_path}")


def show_runs(
    console: Any,
    db: Any,
    *,
    limit: int,
    pipeline: str | None,
    where: list[Any] | None = None,
    as_json: bool = False,
) -> None:
    """The latest runs (meeting ``where``), with their tags and, for each metric ``where`` names,
    its value."""
    from rich.table import Table

    rows = db.runs(limit=limit, pipeline=pipeline, where=where or ())
    ids = [r["id"] for r in rows]
    tags = db.tags_of(ids) if rows else {}
    # run -> stage -> metric -> value (two stages may log metrics of the same name)
    values: dict[str, dict[str, dict[str, float]]] = {}
    for m in db.latest_metrics(ids) if rows else []:
        values.setdefault(m["run_id"], {}).setdefault(m["stage"], {})[m["name"]] = m["value"]
    if as_json:
        print(
            json.dumps(
                [
                    {
                        **dict(r),
                        "tags": tags.get(r["id"], {}),
                        "metrics": values.get(r["id"], {}),
                    }
                    for r in rows
                ],
                indent=2,
                default=str,
            )
        )
        return
    if not rows:
        console.print("no runs match" if where else "no runs recorded yet")
        return
    shown_metrics = list(dict.fromkeys(c.name for c in where or () if c.kind == "metrics"))
    t = Table(show_edge=False)
    # a narrow terminal squeezes the figures, never the run id (what `runs show` and `runs
    # compare` take), the pipeline or the state
    for col in ("run", "pipeline", "state"):
        widest = max(len(str(r["id" if col == "run" else col])) for r in rows)
        t.add_column(col, no_wrap=True, min_width=min(max(widest, len(col)), 40))
    for col in ("started", "duration", "stages", "ran", "cached", "failed"):
        t.add_column(col)
    for name in shown_metrics:
        t.add_column(escape(name), justify="right")
    if tags:
        t.add_column("tags")
    for r in rows:
        dur = _fmt_s(r["ended"] - r["started"]) if r["ended"] else ""
        mine = values.get(r["id"], {})
        t.add_row(
            r["id"],
            r["pipeline"],
            r["state"],
            when(r["started"]),
            dur,
            str(r["n_stages"]),
            str(r["n_done"]),
            str(r["n_cached"]),
            str(r["n_failed"]),
            *[
                ", ".join(f"{by[name]:.4g}" for by in mine.values() if name in by) or "-"
                for name in shown_metrics
            ],
            *(
                [escape(" ".join(f"{k}={v}" for k, v in sorted(tags.get(r["id"], {}).items())))]
                if tags
                else []
            ),
        )
    console.print(t)


def show_run(console: Any, db: Any, run_id: str, *, as_json: bool = False) -> int:
    from pipeflow.errors import UsageError

    run = db.find_run(run_id)
    if run is None:
        raise UsageError(f"no run {run_id!r} in {db.location}")
    stages = db.stage_runs(run["id"])
    outputs = db.outputs(run["id"])
    lineage = db.lineage(run["id"])
    params = db.params(run["id"])
    tags = db.tags(run["id"])
    metrics = db.metrics(run["id"])
    logged = db.logged_params(run["id"])
    if as_json:
        print(
            json.dumps(
                {
                    "run": dict(run),
                    "params": params,
                    "tags": tags,
                    "metrics": [dict(m) for m in metrics],
                    "logged_params": [dict(p) for p in logged],
                    "stages": [{k: s[k] for k in s.keys() if k != "config"} for s in stages],  # noqa: SIM118 (sqlite3.Row: `in` tests values)
                    "outputs": [dict(o) for o in outputs],
                    "lineage": [dict(e) for e in lineage],
                },
                indent=2,
                default=str,
            )
        )
        return 0
    from rich.table import Table

    dur = _fmt_s(run["ended"] - run["started"]) if run["ended"] else "(not finished)"
    console.print(
        f"[bold]run {run['id']}[/]  pipeline [bold]{run['pipeline']}[/]  state [bold]{run['state']}[/]"
    )
    console.print(
        f"  started {when(run['started'])}  duration {dur}  executor {run['executor']}  host {run['host']}"
    )
    console.print(f"  spec {run['spec_path']}")
    if params:
        console.print(f"  params {escape(json.dumps(params, default=str))}")
    if tags:
        console.print(f"  tags {escape(' '.join(f'{k}={v}' for k, v in sorted(tags.items())))}")
    if run["note"]:
        console.print(f"  note {escape(run['note'])}")
    if run["error"]:
        console.print(f"  [red]{run['error']}[/]")
    t = Table(show_edge=False, title="stages", title_justify="left")
    for col in ("stage", "type", "state", "duration", "attempts", "worker", "why / error"):
        t.add_column(col)
    for s in stages:
        d = _fmt_s(s["ended"] - s["started"]) if s["ended"] and s["started"] else ""
        t.add_row(
            s["stage"],
            s["type"],
            s["state"],
            d,
            str(s["attempts"] or ""),
            s["worker"] or "",
            s["error"] or s["reason"] or "",
        )
    console.print(t)
    if outputs:
        t = Table(show_edge=False, title="artifacts", title_justify="left")
        for col in ("stage.port", "kind", "codec", "size", "digest"):
            t.add_column(col)
        for o in outputs:
            t.add_row(
                f"{o['stage']}.{o['port']}", o["kind"], o["codec"], str(o["size"]), o["digest"][:16]
            )
        console.print(t)
    if metrics:
        t = Table(show_edge=False, title="metrics", title_justify="left")
        for col in ("stage", "metric", "value", "steps", "logged by"):
            t.add_column(col)
        last: dict[tuple[str, str], Any] = {}
        steps: dict[tuple[str, str], int] = {}
        for m in metrics:  # ordered by step: the last one is the metric's value
            last[(m["stage"], m["name"])] = m
            steps[(m["stage"], m["name"])] = steps.get((m["stage"], m["name"]), 0) + 1
        for key, m in last.items():
            origin = m["from_run"] if m["from_run"] and m["from_run"] != run["id"] else ""
            t.add_row(
                m["stage"],
                escape(m["name"]),
                f"{m['value']:.6g}",
                str(steps[key]),
                f"run {origin} (cached)" if origin else "this run",
            )
        console.print(t)
    if logged:
        t = Table(show_edge=False, title="logged params", title_justify="left")
        for col in ("stage", "param", "value"):
            t.add_column(col)
        for p in logged:
            t.add_row(p["stage"], escape(p["name"]), escape(p["value"]))
        console.print(t)
    if lineage:
        console.print("[bold]lineage[/]")
        for e in lineage:
            console.print(
                f"  {e['src_stage']}.{e['src_port']} -> {e['dst_stage']}.{e['dst_port']}  ({e['digest'][:16]})"
            )
    for s in stages:
        if s["traceback"]:
            console.print(f"[red]traceback of stage '{s['stage']}':[/]")
            console.print(s["traceback"], markup=False)
    return 0
