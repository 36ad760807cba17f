"""``pipeflow models compare NAME@A NAME@B --live``: two versions on live traffic.

The numbers and tests are :func:`pipeflow.monitoring.compare.compare_live`'s, over every
replica's journal; this module reads the arguments (``--since``, ``--alpha``) and prints the
report as tables (or ``--json``).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from pipeflow.cli import _common

__all__ = ["compare"]


def _since(text: str, now: float) -> float:
    """``--since``: a duration back from now, or a date / date-time (local time)."""
    from datetime import datetime

    from pipeflow.errors import UsageError
    from pipeflow.monitoring.alerts import parse_duration

    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise UsageError(
            f"--since {text!r}: expected a duration (90s, 30m, 2h, 7d) or a time "
            "(2026-05-01 or 2026-05-01T12:00)"
        ) from None


def compare(args: argparse.Namespace, registry: Any) -> int:
    """``pipeflow models compare A B --live``: the report of :mod:`pipeflow.monitoring.compare`."""
    import time

    from pipeflow.errors import UsageError
    from pipeflow.monitoring.compare import compare_live
    from pipeflow.registry import parse_ref
    from pipeflow.store import journal as audit
    from pipeflow.store.shipping import open_journal

    if not args.live:
        raise UsageError(
            "models compare needs --live: it compares versions on what the serving fleet "
            "recorded (offline metrics: pipeflow models show NAME, pipeflow runs compare)"
        )
    if not 0 < args.alpha < 1:
        raise UsageError(f"--alpha {args.alpha:g}: expected a level between 0 and 1, e.g. 0.05")
    variants = []
    for ref in (args.first, args.second):
        name, which = parse_ref(ref)
        if which is None:
            raise UsageError(f"{ref}: name the version or alias, e.g. {name}@2")
        variants.append((name, int(registry.resolve(name, which)["version"])))
    if variants[0] == variants[1]:
        raise UsageError(
            f"{args.first} and {args.second} are the same version "
            f"({variants[0][0]}@{variants[0][1]}): name two versions"
        )
    now = time.time()
    start = _since(args.since, now) if args.since else 0.0
    journal = open_journal(registry.store, "audit", args.audit_dir)
    report = compare_live(journal, variants[0], variants[1], start=start, end=now + 1,
                          alpha=args.alpha)  # fmt: skip
    report["journal"] = audit.describe(journal)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return _common.EXIT_OK
    _print_compare(report, args)
    return _common.EXIT_OK


def _print_compare(report: dict[str, Any], args: argparse.Namespace) -> None:
    def pct(p: dict[str, Any]) -> str:
        if p["value"] is None:
            return "-"
        lo, hi = p["ci"]
        return f"{100 * p['value']:.2f}% [{100 * lo:.2f}, {100 * hi:.2f}] ({p['count']}/{p['of']})"

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    console = _common.make_console()
    since = f" since {_common.when(report['window']['start'])}" if args.since else ""
    level = f"{100 * (1 - report['alpha']):g}%"
    console.print(f"live comparison from {_common.escape(report['journal'])}{since}")
    t = _common.table("", *(v["variant"] for v in report["variants"]))
    va, vb = report["variants"]
    for label, fn in (
        ("rows", lambda v: f"{v['rows']} ({', '.join(f'{n} {r}' for r, n in sorted(v['roles'].items())) or 'none answered'})"),
        (f"accuracy [{level} CI]", lambda v: pct(v["accuracy"])),
        (f"error rate [{level} CI]", lambda v: pct(v["error_rate"])),
        ("latency p50 / p95 ms", lambda v: f"{ms(v['latency_ms']['p50'])} / {ms(v['latency_ms']['p95'])}"),
        (
            f"latency mean ms [{level} CI]",
            lambda v: "-" if v["latency_ms"]["mean"] is None else (
                f"{v['latency_ms']['mean']:.2f}"
                + (f" [{v['latency_ms']['ci'][0]:.2f}, {v['latency_ms']['ci'][1]:.2f}]"
                   if v["latency_ms"]["ci"] else "")
            ),
        ),
    ):  # fmt: skip
        t.add_row(label, fn(va), fn(vb))
    console.print(t)
    for verdict in report["verdicts"]:
        console.print(_common.escape(verdict))
    for note in report["notes"]:
        console.print(f"note: {_common.escape(note)}")
