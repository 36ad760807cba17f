"""``pipeflow watch SPEC``: run a pipeline whenever its triggers fire (see pipeflow.runner.watch).

Only the holder of the pipeline's watch lease in the store (pipeflow.runner.lease) checks
triggers and starts runs; another watcher of the same pipeline on the same store stands by,
counting schedule slots from the holder's last check, and takes over when the holder releases
the lease or its lease expires.
"""

from __future__ import annotations

import argparse
from typing import Any

from pipeflow.cli import _common


def add_parsers(sub: Any) -> None:
    c = sub.add_parser(
        "watch",
        help="run a pipeline unattended when its triggers fire (schedule, data change, drift)",
    )
    c.add_argument("spec", metavar="SPEC")
    _common.add_overrides(c)
    c.add_argument(
        "--interval", type=float, default=30.0, help="seconds between checks (default 30)"
    )
    c.add_argument("--once", action="store_true", help="check once, run if needed, and exit")
    c.add_argument(
        "--lease",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="period of the watch lease in the store: another watcher takes over this long after "
        "this one dies (default 60)",
    )
    _common.add_executor(c, address=False)
    _common.add_debug(c)
    c.set_defaults(handler=cmd_watch)


def cmd_watch(args: argparse.Namespace) -> int:
    import logging
    import time

    from pipeflow.core.compiler import compile_pipeline
    from pipeflow.errors import UsageError
    from pipeflow.runner.lease import Lease, describe
    from pipeflow.runner.watch import Watcher, parse_cron
    from pipeflow.spec.load import load
    from pipeflow.workspace import open_workspace

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
    for flag, seconds in (("--interval", args.interval), ("--lease", args.lease)):
        if not seconds > 0:  # (NaN too) a zero interval would poll the store in a tight loop
            raise UsageError(f"{flag} {seconds:g}: expected a positive number of seconds")
    _common.log_to_console(logging.INFO, "%(asctime)s %(name)s %(message)s")
    console = _common.make_console()
    watcher = Watcher(args.spec, args.overrides, executor=args.executor)
    if args.once:
        watcher.last_tick = time.time() - args.interval
    store = open_workspace(loaded).store
    lease = Lease(
        store,
        loaded.spec.pipeline,
        ttl=args.lease,
        note=lambda: {"watched_until": watcher.last_tick},
    )
    console.print(f"watching {args.spec} (every {args.interval:g} s); Ctrl-C to stop", markup=False)
    failed, holding = False, None
    with lease.kept():
        while True:
            if lease.acquire():
                if holding is not True:
                    took = lease.previous
                    if took and not args.once and took.get("watched_until"):
                        watcher.last_tick = float(took["watched_until"])
                    since = f", taking over from {took['holder']}" if took else ""
                    console.print(f"holding the watch lease {lease.holder}{since}", markup=False)
                holding = True
                fired = watcher.tick()
                if fired is not None:
                    causes = "; ".join(c["detail"] for c in fired["causes"])
                    console.print(
                        f"triggered ({causes}): run {fired['run_id']} {fired['state']}",
                        markup=False,
                    )
                    failed = fired["state"] != "done"
                elif args.once:
                    console.print("no trigger fired", markup=False)
            else:
                # the holder checks the triggers: slots up to its last check are its own
                seen = lease.seen or {}
                watcher.last_tick = float(seen.get("watched_until") or time.time())
                if holding is not False or args.once:
                    console.print(
                        f"standing by: the watch lease is held by {describe(seen)}", markup=False
                    )
                holding = False
            if args.once:
                return 1 if failed else 0
            time.sleep(args.interval)
