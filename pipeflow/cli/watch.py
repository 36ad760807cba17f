"""``pipeflow watch SPEC``: run a pipeline whenever its triggers fire (see pipeflow.runner.watch)."""

from __future__ import annotations

import argparse
from typing import Any

from pipeflow.cli._common import add_debug, add_executor, add_overrides, make_console


def add_parsers(sub: Any) -> None:
    c = sub.add_parser(
        "watch",
        help="run a pipeline unattended when its triggers fire (schedule, data change, drift)",
    )
    c.add_argument("spec", metavar="SPEC")
    add_overrides(c)
    c.add_argument(
        "--interval", type=float, default=30.0, help="seconds between checks (default 30)"
    )
    c.add_argument("--once", action="store_true", help="check once, run if needed, and exit")
    add_executor(c, address=False)
    add_debug(c)
    c.set_defaults(handler=cmd_watch)


def cmd_watch(args: argparse.Namespace) -> int:
    import logging
    import time

    from pipeflow.core.compiler import compile_pipeline
    from pipeflow.errors import UsageError
    from pipeflow.runner.watch import Watcher, parse_cron
    from pipeflow.spec.load import load

    loaded = load(args.spec, args.overrides)
    triggers = loaded.spec.triggers
    if not (triggers.schedule or triggers.on_data_change or triggers.on_drift):
        raise UsageError(
            f"{args.spec} declares no triggers: add `triggers:` (schedule, on_data_change, on_drift)"
        )
    if triggers.schedule:
        try:
            parse_cron(triggers.schedule)
        except ValueError as err:
            raise UsageError(f"{args.spec}: triggers.schedule: {err}") from None
    # the stages the triggers name, checked as `pipeflow check` does (file:line or --set), before
    # the watcher says it is watching
    compile_pipeline(loaded)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    console = make_console()
    watcher = Watcher(args.spec, args.overrides, executor=args.executor)
    if args.once:
        watcher.last_tick = time.time() - args.interval
    console.print(f"watching {args.spec} (every {args.interval:g} s); Ctrl-C to stop", markup=False)
    failed = False
    while True:
        fired = watcher.tick()
        if fired is not None:
            causes = "; ".join(c["detail"] for c in fired["causes"])
            console.print(
                f"triggered ({causes}): run {fired['run_id']} {fired['state']}", markup=False
            )
            failed = fired["state"] != "done"
        elif args.once:
            console.print("no trigger fired", markup=False)
        if args.once:
            return 1 if failed else 0
        time.sleep(args.interval)
