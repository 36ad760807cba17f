"""What ``pipeflow run`` prints: the lines of stages that finish close together (a burst of
reused stages, short stages) and the plan's lines are printed together (one rich ``print`` each
costs more than a no-op stage), and the output is exactly what a ``print`` per line gave, in
order; a failure's line comes after every line before it."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from rich.console import Console

from pipeflow.cli._common import escape, make_console
from pipeflow.cli.display import HOLD_S, RunDisplay
from pipeflow.cli.plain import PlainOutput, run_console
from pipeflow.core.states import StageState

REASON = "unchanged: same type, config, code and inputs as run 20261207-045220-f49afc [x] \\[y]"


def _outcome(reason: str = REASON) -> SimpleNamespace:
    return SimpleNamespace(reason=reason, duration=0.004, error=None, attempts=1, traceback=None)


def test_reused_stages_print_the_lines_a_print_each_gave_before_the_first_running_stage() -> None:
    names = [f"stage_{i}" for i in range(30)]
    plan = SimpleNamespace(
        stages={n: None for n in [*names, "last"]},
        to_run=["last"],
        cached=names,
        pipeline=SimpleNamespace(name="p"),
    )
    plan.stages["last"] = SimpleNamespace(reason="first run of this stage")
    out = io.StringIO()
    display = RunDisplay(Console(file=out, width=80))  # a file: no live area, as in CI logs
    display.plan(plan)
    head = out.getvalue()
    for name in names:
        display.event(name, StageState.CACHED, _outcome())
    display.event("last", StageState.RUNNING, _outcome())
    display.event("last", StageState.DONE, _outcome())
    with display:
        pass

    expected = io.StringIO()
    plain = Console(file=expected, width=80)
    for name in names:
        plain.print(f"  [cyan]↺[/] {escape(f'{name:<12} cached  {REASON}')}", markup=True)
    plain.print(f"  [green]✓[/] {'last':<12} done    4ms", markup=True)
    assert out.getvalue() == head + expected.getvalue()  # wrapped at 80 columns alike
    assert "[x] \\[y]" in out.getvalue()  # the reason's brackets shown as they are


def test_a_fully_cached_run_prints_its_lines_by_the_summary() -> None:
    out = io.StringIO()
    display = RunDisplay(Console(file=out, width=80))
    display.plan(
        SimpleNamespace(
            stages={"a": None}, to_run=[], cached=["a"], pipeline=SimpleNamespace(name="p")
        )
    )
    display.event("a", StageState.CACHED, _outcome("unchanged"))
    report = SimpleNamespace(
        run_id="r1", state="done", ok=True, duration=0.1, failed=[], count=lambda s: 1
    )
    display.summary(report)
    lines = out.getvalue().splitlines()
    assert lines[1] == "  ↺ a            cached  unchanged"
    assert lines[2].startswith("run r1 done in 100ms")


def test_the_plan_lists_every_stage_to_run_as_a_print_each_did() -> None:
    names = [f"stage_{i}" for i in range(25)]
    reasons = {n: f"upstream stage 'stage_{i}' will run [{i}]" for i, n in enumerate(names)}
    plan = SimpleNamespace(
        stages={n: SimpleNamespace(reason=reasons[n]) for n in names},
        to_run=names,
        cached=[],
        pipeline=SimpleNamespace(name="p"),
    )
    out = io.StringIO()
    RunDisplay(Console(file=out, width=60)).plan(plan)

    expected = io.StringIO()
    plain = Console(file=expected, width=60)
    plain.print("[bold]p[/]: 25 stages, 25 to run, 0 reused from the store")
    for name in names:
        plain.print(f"  [dim]· {name:<12} will run: {reasons[name]}[/]")
    assert out.getvalue() == expected.getvalue()
    assert len(out.getvalue().splitlines()) > 26  # some lines wrapped, as they did


def test_a_failure_prints_after_the_lines_held_before_it() -> None:
    out = io.StringIO()
    display = RunDisplay(Console(file=out, width=80))
    display.event("a", StageState.DONE, _outcome())
    display.event("b", StageState.SKIPPED, _outcome("upstream stage 'x' failed"))
    failed = SimpleNamespace(
        reason="", duration=None, error="ValueError: boom", attempts=2, traceback=None
    )
    display.event("c", StageState.FAILED, failed)
    assert out.getvalue().splitlines() == [  # printed at once, the held lines first
        "  ✓ a            done    4ms",
        "  - b            skipped upstream stage 'x' failed",
        "  ✗ c            failed  ValueError: boom (after 2 attempts)",
    ]
    display.event("d", StageState.DONE, _outcome())
    deadline = time.monotonic() + 30  # the timer prints what waits, with no further event
    while "✓ d " not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(HOLD_S)
    assert out.getvalue().splitlines()[-1] == "  ✓ d            done    4ms"


#: reasons rich prints unchanged and reasons it does not (markup, an emoji code, a tab, a
#: control character), and a stage with no detail (a line ending in spaces)
TRICKY = [
    "unchanged: same type, config, code and inputs as run 20261207-045220-f49afc",
    "upstream [x] \\[y] [bold]z[/bold]",
    "a :smile: and a:b:c and 12:30:45 and ::",
    "tab\there, bell\x07, carriage\rreturn",
    "naïve 日本語 ✓ → fine",
    "",
]


def test_without_colours_or_wrapping_lines_are_written_as_rich_prints_them() -> None:
    """On a console that neither colours nor wraps (a log file, CI output: what ``pipeflow run``
    prints to when it is not a terminal), lines rich would print unchanged are written
    directly; the output is byte for byte what a rich ``print`` of each line gave."""
    names = [f"stage_{i}" for i in range(len(TRICKY) * 2)]
    plan = SimpleNamespace(
        stages={n: SimpleNamespace(reason=TRICKY[i % len(TRICKY)]) for i, n in enumerate(names)},
        to_run=names[: len(TRICKY)],
        cached=names[len(TRICKY) :],
        pipeline=SimpleNamespace(name="p"),
    )
    out = io.StringIO()
    display = RunDisplay(Console(file=out, width=40, soft_wrap=True, highlight=False))
    assert display._prints_plain()
    through_rich: list[str] = []
    print_rich = display._print_rich
    display._print_rich = lambda lines: (through_rich.extend(lines), print_rich(lines))  # type: ignore[method-assign]
    display.plan(plan)
    for i, name in enumerate(names[len(TRICKY) :]):
        display.event(name, StageState.CACHED, _outcome(TRICKY[i]))
    display.event("last", StageState.DONE, _outcome())
    display.event("gone", StageState.SKIPPED, _outcome(""))
    with display:
        pass

    expected = io.StringIO()
    plain = Console(file=expected, width=40, soft_wrap=True, highlight=False, emoji=False)
    plain.print("[bold]p[/]: 12 stages, 6 to run, 6 reused from the store")
    for name in names[: len(TRICKY)]:
        plain.print(f"  [dim]{escape(f'· {name:<12} will run: {plan.stages[name].reason}')}[/]")
    for i, name in enumerate(names[len(TRICKY) :]):
        plain.print(f"  [cyan]↺[/] {escape(f'{name:<12} cached  {TRICKY[i]}')}", markup=True)
    plain.print(f"  [green]✓[/] {'last':<12} done    4ms", markup=True)
    plain.print(f"  [yellow]-[/] {'gone':<12} skipped ", markup=True)
    assert out.getvalue() == expected.getvalue()
    assert "\t" not in out.getvalue()  # rich's work (tabs to spaces), kept
    lines = out.getvalue().splitlines()
    for reason in TRICKY[:3]:  # a reason is data: its brackets and colons are shown as they are
        assert f"  ↺ {names[len(TRICKY) + TRICKY.index(reason)]:<12} cached  {reason}" in lines
    # the plan's and the reused stages' lines with a bracket or a control character went
    # through rich; the rest were written as they are
    assert len(through_rich) == 2 * 2
    assert not any(TRICKY[0] in line or "naïve" in line for line in through_rich)


def test_lines_go_through_rich_on_a_console_that_colours_or_wraps() -> None:
    for console in (
        Console(file=io.StringIO(), width=40),  # wraps
        Console(file=io.StringIO(), soft_wrap=True, force_terminal=True),  # colours
        Console(file=io.StringIO(), soft_wrap=True, record=True),  # keeps what it printed
    ):
        assert not RunDisplay(console)._prints_plain()


def _whole_run(display: RunDisplay) -> None:
    """A plan, reused, done, skipped and failed stages, and the summary, through ``display``."""
    plan = SimpleNamespace(
        stages={n: SimpleNamespace(reason=TRICKY[i]) for i, n in enumerate("abcdef")},
        to_run=list("ab"),
        cached=list("cdef"),
        pipeline=SimpleNamespace(name="p"),
    )
    failed = SimpleNamespace(
        reason="", duration=None, error="ValueError: [x] :smile:", attempts=1, traceback="tb"
    )
    with display:
        display.plan(plan)
        for i, name in enumerate("cdef"):
            display.event(name, StageState.CACHED, _outcome(TRICKY[i]))
        display.event("a", StageState.DONE, _outcome())
        display.event("b", StageState.FAILED, failed)
    report = SimpleNamespace(
        run_id="r1",
        state="failed",
        ok=False,
        duration=0.1,
        failed=["b"],
        stages={"b": failed},
        db_path="x.db",
        count=lambda s: 1,
    )
    display.summary(report)


def test_pipeflow_run_prints_what_rich_printed_when_stdout_is_not_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``pipeflow run``'s console when stdout is a file or a pipe writes plain lines itself and
    hands the rest to rich: the whole output is rich's, byte for byte."""
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)
    outputs = []
    for make in (run_console, make_console):
        monkeypatch.setattr("sys.stdout", io.StringIO())
        console = make()
        _whole_run(RunDisplay(console, debug=True))
        outputs.append(sys.stdout.getvalue())
        assert isinstance(console, PlainOutput) is (make is run_console)
    assert outputs[0] == outputs[1]
    lines = outputs[0].splitlines()
    assert "  ↺ c            cached  " + TRICKY[0] in lines
    # a stage's error is shown as it was raised: no markup read into it, no emoji made of it
    assert "  ✗ b            failed  ValueError: [x] :smile:" in lines
    assert "stage 'b' failed: ValueError: [x] :smile:" in lines


def test_pipeflow_run_prints_through_rich_where_rich_would_colour(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sys.stdout", io.StringIO())
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        with monkeypatch.context() as env:
            env.setenv(name, "1")
            assert not isinstance(run_console(), PlainOutput)


def test_a_plain_run_output_imports_no_rich() -> None:
    script = (
        "import io, sys\n"
        "from types import SimpleNamespace as N\n"
        "from pipeflow.cli.display import RunDisplay\n"
        "from pipeflow.cli.plain import PlainOutput, run_console\n"
        "from pipeflow.core.states import StageState\n"
        "console = run_console()\n"
        "assert isinstance(console, PlainOutput)\n"
        "d = RunDisplay(console)\n"
        "d.plan(N(stages={'a': N(reason='first run')}, to_run=['a'], cached=[], pipeline=N(name='p')))\n"
        "d.event('a', StageState.DONE, N(duration=0.001, reason='', error=None, attempts=1))\n"
        "d.summary(N(run_id='r', state='done', ok=True, duration=0.1, failed=[], count=lambda s: 1))\n"
        "assert 'rich' not in sys.modules, 'rich imported'\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "p: 1 stages, 1 to run, 0 reused from the store",
        "  · a            will run: first run",
        "  ✓ a            done    1ms",
        "run r done in 100ms: 1 done, 1 cached, 1 failed, 1 skipped",
    ]
