"""Terminal presentation of runs: live progress while running, tables for ``pipeflow runs``.

Kept out of :mod:`pipeflow.runner.session` so that running a pipeline from Python or a notebook draws
nothing. On a terminal a live area shows the run's progress and each running stage (spinner,
elapsed time, what it reported through ``ctx.progress``, its latest log line); every finished
stage also prints one line, and that line is all a log file or CI output (no TTY) gets, as before.
Lines of stages that finish close together are printed together, within a tenth of a second
(rich costs more per ``print`` than a no-op stage takes to run; see ``RunDisplay._hold``), and
where stdout is not a terminal the lines rich would print unchanged are written as they are
(:mod:`pipeflow.cli.plain`).
``pipeflow runs logs`` prints the log lines stages kept.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from typing import Any

from pipeflow.cli import _common
from pipeflow.cli.plain import as_rich_prints
from pipeflow.core.states import StageState

#: a finished stage's mark (with its colour, and as plain text) and word
_MARK = {
    StageState.DONE: ("[green]✓[/]", "✓", "done"),
    StageState.CACHED: ("[cyan]↺[/]", "↺", "cached"),
    StageState.FAILED: ("[red]✗[/]", "✗", "failed"),
    StageState.SKIPPED: ("[yellow]-[/]", "-", "skipped"),
}

#: the longest a finished stage's line waits to be printed with others (see RunDisplay._hold)
HOLD_S = 0.1


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.2f}s"


class RunDisplay:
    """What ``pipeflow run`` prints. Every finished stage prints one line (the whole story on a
    terminal, in a log file or CI output alike). On a terminal only, a live area under those
    lines shows the run's progress and, per running stage, a spinner, its elapsed time, the
    progress it reported (``ctx.progress``: done/total and percent) and its latest message or
    log line; it is gone when the run ends. :meth:`progress` may be called from any thread."""

    def __init__(self, console: Any, *, quiet: bool = False, debug: bool = False):
        self.console = console
        self.quiet = quiet
        self.debug = debug
        self.running: dict[str, float] = {}
        self.total = 0
        self.finished = 0
        self._progress: Any = None
        self._task: Any = None
        self._stage_tasks: dict[str, Any] = {}
        self._width = 12
        #: lines of finished stages not printed yet (see :meth:`_hold`), and what prints them:
        #: each with markup, and as plain text where that is what rich would print
        self._held: list[tuple[str, str | None]] = []
        self._held_lock = threading.Lock()
        self._timer: threading.Timer | None = None

    @property
    def live(self) -> bool:
        """Whether live updates are drawn (a terminal, not quiet): ``on_progress`` is worth
        passing to the runner only then."""
        return bool(self.console.is_terminal and not self.quiet)

    def __enter__(self) -> RunDisplay:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._flush()
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def plan(self, plan: Any) -> None:
        self.total = len(plan.stages)
        self._width = max([len(n) for n in plan.stages] + [12])
        to_run, cached = len(plan.to_run), len(plan.cached)
        if not self.quiet:
            text = f"{self.total} stages, {to_run} to run, {cached} reused from the store"
            name = plan.pipeline.name
            lines = [
                (f"[bold]{_common.escape(name)}[/]: {text}", as_rich_prints(f"{name}: {text}"))
            ]
            for name in plan.to_run:
                text = f"· {name:<{self._width}} will run: {plan.stages[name].reason}"
                lines.append((f"  [dim]{_common.escape(text)}[/]", as_rich_prints(f"  {text}")))
            self._print_lines(lines)
        if self.live and to_run:
            from rich.progress import (
                BarColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )
            from rich.table import Column

            self._progress = Progress(
                SpinnerColumn(finished_text=" "),
                TextColumn(
                    "{task.description}",
                    table_column=Column(no_wrap=True, min_width=self._width + 2),
                ),
                BarColumn(bar_width=20),
                TextColumn("{task.fields[count]}", table_column=Column(no_wrap=True, min_width=13)),
                TimeElapsedColumn(table_column=Column(no_wrap=True, min_width=7)),
                TextColumn(
                    "{task.fields[note]}",
                    markup=False,
                    table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1),
                ),
                console=self.console,
                transient=True,
                refresh_per_second=8,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                "[bold blue]running[/]", total=self.total, count=f"0/{self.total}", note=""
            )

    def event(self, name: str, state: StageState, outcome: Any) -> None:
        if state is StageState.RUNNING:
            self.running[name] = time.monotonic()
            if self._progress is not None and name not in self._stage_tasks:
                self._stage_tasks[name] = self._progress.add_task(
                    f"  {_common.escape(name):<{self._width}}", total=None, count="", note=""
                )
        else:
            self.running.pop(name, None)
            self.finished += 1
            if self._progress is not None and name in self._stage_tasks:
                self._progress.remove_task(self._stage_tasks.pop(name))
            if not self.quiet:
                mark, glyph, word = _MARK.get(state, ("?", "?", str(state)))
                detail = _fmt_s(outcome.duration) if state is StageState.DONE else ""
                if state is StageState.CACHED or state is StageState.SKIPPED:
                    detail = outcome.reason
                elif state is StageState.FAILED:
                    detail = outcome.error or ""
                    if outcome.attempts > 1:
                        detail += f" (after {outcome.attempts} attempts)"
                text = f"{name:<{self._width}} {word:<7} {detail}"
                # a reason or an error is data, not markup
                line = f"  {mark} {_common.escape(text, ends=True)}"
                if state is not StageState.FAILED:
                    self._hold(line, as_rich_prints(f"  {glyph} {text}"))
                else:
                    self._flush()
                    self.console.print(line, markup=True, emoji=False)
                    if self.debug and outcome.traceback:
                        self.console.print(outcome.traceback, markup=False)
        if self._progress is not None:
            self._progress.update(
                self._task, completed=self.finished, count=f"{self.finished}/{self.total}"
            )

    def _hold(self, line: str, plain: str | None = None) -> None:
        """Print ``line`` within ``HOLD_S``, with the lines of other stages that finish
        meanwhile: a burst of a thousand reused stages before anything runs, or short stages
        finishing one after another, print together (see :meth:`_print_lines`); a failure or
        the end of the run prints what is held at once, so the order is kept. ``plain`` is the
        line as rich would print it without colours, where that is known to be the line's
        text with its markup removed (:func:`~pipeflow.cli.plain.as_rich_prints`)."""
        with self._held_lock:
            self._held.append((line, plain))
            if self._timer is None:
                self._timer = threading.Timer(HOLD_S, self._flush)
                self._timer.daemon = True
                self._timer.start()

    def _flush(self) -> None:
        """Print the held lines (from the timer's thread, or the caller's)."""
        with self._held_lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            lines, self._held = self._held, []
            self._print_lines(lines)  # under the lock: a later flush prints after this one

    def _print_lines(self, lines: list[tuple[str, str | None]]) -> None:
        """Lines (with markup, and as plain text or None: see :meth:`_hold`) in as few writes
        as give the output of a rich ``print`` each. A large run prints a thousand lines before
        anything runs, and rich costs ~45 us a line (markup, segments, styles) even with no
        colours: where the console has none and does not wrap (a log file, CI output, a pipe;
        :func:`pipeflow.cli._common.make_console`), a line rich would print unchanged is written
        as it is. The others go through rich, in one ``print`` of a group each run of them: the
        same output as a ``print`` each at two thirds of the cost (rich works out the console's
        size and options once, not per line; one string of all the lines would be slower
        still: rich wraps a long text in quadratic time)."""
        plain_ok = self._prints_plain()
        i = 0
        while i < len(lines):
            j = i
            if plain_ok:
                while j < len(lines) and lines[j][1] is not None:
                    j += 1
                if j > i:
                    self._write("".join(f"{plain}\n" for _, plain in lines[i:j]))
                    i = j
                    continue
            while j < len(lines) and not (plain_ok and lines[j][1] is not None):
                j += 1
            self._print_rich([markup for markup, _ in lines[i:j]])
            i = j

    def _write(self, text: str) -> None:
        """Write and flush, as rich does; a reader gone away is met as rich meets it."""
        file = self.console.file
        try:
            file.write(text)
            file.flush()
        except BrokenPipeError:
            self.console.on_broken_pipe()

    def _prints_plain(self) -> bool:
        """Whether rich prints text without markup as it is on this console: no colours or
        other styles (not a terminal), no wrapping (``soft_wrap``), nothing recorded, not quiet."""
        c = self.console
        return bool(
            c.soft_wrap
            and c.color_system is None
            and not c.is_terminal
            and not c.record
            and not c.quiet
            and not c.is_jupyter
        )

    def _print_rich(self, lines: list[str]) -> None:
        if len(lines) <= 1:
            for line in lines:
                self.console.print(line, markup=True, emoji=False)
            return
        from rich.console import Group

        render = self.console.render_str
        self.console.print(Group(*[render(line, markup=True, emoji=False) for line in lines]))

    def progress(self, update: Any) -> None:
        """A live :class:`~pipeflow.core.progress.Update` of a running stage (any thread)."""
        bar = self._progress
        task = self._stage_tasks.get(update.stage)
        if bar is None or task is None:
            return
        fields: dict[str, Any] = {"note": update.message or update.line or ""}
        if update.done is not None:
            done = float(update.done)
            if update.total:
                total = float(update.total)
                pct = min(100.0, 100.0 * done / total)
                fields.update(total=total, completed=min(done, total))
                fields["count"] = f"{_num(done)}/{_num(total)} {pct:.0f}%"
            else:
                fields["count"] = _num(done)
        if update.message and update.line:
            fields["note"] = f"{update.message} · {update.line}"
        with contextlib.suppress(KeyError):  # the stage finished meanwhile
            bar.update(task, **fields)

    def summary(self, report: Any) -> None:
        self._flush()
        counts = ", ".join(
            f"{report.count(s)} {s}"
            for s in (StageState.DONE, StageState.CACHED, StageState.FAILED, StageState.SKIPPED)
        )
        colour = "green" if report.ok else "red"
        head, tail = (
            f"run {report.run_id} {report.state}",
            f" in {_fmt_s(report.duration)}: {counts}",
        )
        self._print_lines([(f"[{colour}]{head}[/]{tail}", as_rich_prints(head + tail))])
        for name in report.failed:
            o = report.stages[name]
            self.console.print(
                f"[red]stage '{name}' failed:[/] {_common.escape(o.error or '', ends=True)}",
                emoji=False,
            )
        if report.failed:
            self.console.print(f"details: pipeflow runs show {report.run_id} --db {report.db_path}")


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3g}"


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
        t.add_column(_common.escape(name), justify="right")
    if tags:
        t.add_column("tags")
    for r in rows:
        dur = _fmt_s(r["ended"] - r["started"]) if r["ended"] else ""
        mine = values.get(r["id"], {})
        t.add_row(
            r["id"],
            r["pipeline"],
            r["state"],
            _common.when(r["started"]),
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
                [
                    _common.escape(
                        " ".join(f"{k}={v}" for k, v in sorted(tags.get(r["id"], {}).items()))
                    )
                ]
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

    dur = _fmt_s(run["ended"] - run["started"]) if run["ended"] else "(not finished)"
    console.print(
        f"[bold]run {run['id']}[/]  pipeline [bold]{run['pipeline']}[/]  state [bold]{run['state']}[/]"
    )
    console.print(
        f"  started {_common.when(run['started'])}  duration {dur}  executor {run['executor']}  host {run['host']}"
    )
    console.print(f"  spec {run['spec_path']}")
    if params:
        console.print(f"  params {_common.escape(json.dumps(params, default=str))}")
    if tags:
        console.print(
            f"  tags {_common.escape(' '.join(f'{k}={v}' for k, v in sorted(tags.items())))}"
        )
    if run["note"]:
        console.print(f"  note {_common.escape(run['note'])}")
    if run["error"]:
        console.print(f"  [red]{_common.escape(run['error'])}[/]")
    t = _common.table(
        "stage", "type", "state", "duration", "attempts", "worker", "why / error", title="stages"
    )
    for s in stages:
        d = _fmt_s(s["ended"] - s["started"]) if s["ended"] and s["started"] else ""
        t.add_row(
            s["stage"],
            s["type"],
            s["state"],
            d,
            str(s["attempts"] or ""),
            s["worker"] or "",
            _common.escape(s["error"] or s["reason"] or "", ends=True),
        )
    console.print(t)
    if outputs:
        t = _common.table("stage.port", "kind", "codec", "size", "digest", title="artifacts")
        for o in outputs:
            t.add_row(
                f"{o['stage']}.{o['port']}", o["kind"], o["codec"], str(o["size"]), o["digest"][:16]
            )
        console.print(t)
    if metrics:
        t = _common.table("stage", "metric", "value", "steps", "logged by", title="metrics")
        last: dict[tuple[str, str], Any] = {}
        steps: dict[tuple[str, str], int] = {}
        for m in metrics:  # ordered by step: the last one is the metric's value
            last[(m["stage"], m["name"])] = m
            steps[(m["stage"], m["name"])] = steps.get((m["stage"], m["name"]), 0) + 1
        for key, m in last.items():
            origin = m["from_run"] if m["from_run"] and m["from_run"] != run["id"] else ""
            t.add_row(
                m["stage"],
                _common.escape(m["name"]),
                f"{m['value']:.6g}",
                str(steps[key]),
                f"run {origin} (cached)" if origin else "this run",
            )
        console.print(t)
    if logged:
        t = _common.table("stage", "param", "value", title="logged params")
        for p in logged:
            t.add_row(p["stage"], _common.escape(p["name"]), _common.escape(p["value"]))
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


def show_logs(
    console: Any, db: Any, run_id: str, stage: str | None = None, *, as_json: bool = False
) -> int:
    """The log lines the stages of a run kept (of ``stage`` only): per stage a header, then
    ``HH:MM:SS LEVEL logger: message``; a stage that dropped earlier lines says how many, one
    reused from the store says which run has its lines."""
    from pipeflow.errors import UsageError

    run = db.find_run(run_id)
    if run is None:
        raise UsageError(f"no run {run_id!r} in {db.location}")
    stages = {s["stage"]: s for s in db.stage_runs(run["id"])}
    if stage is not None and stage not in stages:
        known = ", ".join(stages) or "none"
        raise UsageError(f"run {run['id']} has no stage '{stage}' (its stages: {known})")
    rows = db.stage_logs(run["id"], stage)
    if as_json:
        print(json.dumps([dict(r) for r in rows], indent=2, default=str))
        return 0
    by_stage: dict[str, list[Any]] = {}
    for r in rows:
        by_stage.setdefault(r["stage"], []).append(r)
    for name in [stage] if stage is not None else list(stages):
        lines = by_stage.get(name, [])
        s = stages[name]
        if not lines and stage is None and s["state"] != "cached":
            continue
        console.print(f"[bold]── {_common.escape(name)}[/] ({s['state']})")
        if not lines:
            why = (
                f"reused from the store: its lines are in the run that made it ({s['reason']})"
                if s["state"] == "cached"
                else "no log lines"
            )
            console.print(f"  [dim]{_common.escape(why)}[/]")
            continue
        if lines[0]["line"] > 1:
            from pipeflow.core.progress import MAX_BYTES, MAX_LINES

            console.print(
                f"  [dim]({lines[0]['line'] - 1} earlier lines not kept: a stage keeps its last "
                f"{MAX_LINES} lines, {MAX_BYTES // 1024} KB)[/]"
            )
        for r in lines:
            at = time.strftime("%H:%M:%S", time.localtime(r["logged"])) if r["logged"] else ""
            text = f"{at} {r['level']:<7} {r['logger']}: {r['message']}"
            console.print(text, markup=False, highlight=False)
    if not rows and stage is None:
        console.print(f"run {run['id']}: no stage kept log lines")
    return 0
