"""``pipeflow monitor NAME@ALIAS``: one monitoring pass (or several consecutive windows)."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from pipeflow.cli._common import add_audit_dir, add_debug, add_where, make_console, open_registry


def add_parsers(sub: Any) -> None:
    c = sub.add_parser(
        "monitor",
        help="drift, live accuracy and latency of a served model against its training reference",
    )
    c.add_argument("ref", metavar="NAME@ALIAS")
    c.add_argument("--window", default="1h", help="window length: 90s, 15m, 1h, 2d (default 1h)")
    c.add_argument(
        "--windows", type=int, default=1, help="consecutive windows ending now (default 1)"
    )
    c.add_argument("--rules", metavar="FILE", help="YAML with `alerts:` rules and `sinks:`")
    c.add_argument("--all-versions", action="store_true", help="include earlier versions' traffic")
    add_audit_dir(c)
    c.add_argument("--html", metavar="FILE", help="write the (last) report as HTML")
    c.add_argument("--json", action="store_true", help="print the report(s) as JSON")
    c.add_argument("--no-save", action="store_true", help="do not add the report to the history")
    add_where(c)
    add_debug(c)
    c.set_defaults(handler=cmd_monitor)


def read_rules(path: str | None) -> tuple[list[Any], list[Any]]:
    from pydantic import ValidationError

    from pipeflow.errors import UsageError
    from pipeflow.monitoring.alerts import Rule, Sink

    if not path:
        return [], [Sink(type="log")]
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except OSError as err:
        raise UsageError(f"cannot read --rules {path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        from pipeflow.spec.yamlsrc import yaml_problem

        what, where = yaml_problem(path, err)
        raise UsageError(f"{where}: {what}") from None
    if not isinstance(data, dict) or set(data) - {"alerts", "sinks"}:
        raise UsageError(f"{path}: expected a mapping with `alerts:` and optionally `sinks:`")
    rules, sinks = [], []
    for key, cls, out in (("alerts", Rule, rules), ("sinks", Sink, sinks)):
        for i, item in enumerate(data.get(key) or []):
            try:
                out.append(cls.model_validate(item))
            except ValidationError as err:
                from pipeflow.spec.load import did_you_mean, pydantic_message

                first = err.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                if first["type"] == "extra_forbidden":
                    word, known = str(first["loc"][-1]), list(cls.model_fields)
                    what = (
                        f"unknown key '{word}'{did_you_mean(word, known)} "
                        f"(expected one of: {', '.join(known)})"
                    )
                else:
                    what = pydantic_message(first)
                field = f"{key}[{i}]" + (f".{where}" if where else "")
                raise UsageError(f"{path}: {field}: {what}") from None
    return rules, sinks or [Sink(type="log")]


def cmd_monitor(args: argparse.Namespace) -> int:
    import time

    from pipeflow.errors import UsageError
    from pipeflow.monitoring.alerts import parse_duration
    from pipeflow.monitoring.monitor import monitor, render_html
    from pipeflow.registry import parse_ref
    from pipeflow.store.shipping import open_journal

    try:
        window = parse_duration(args.window)
    except ValueError as err:
        raise UsageError(f"--window: {err}") from None
    if args.windows < 1:
        raise UsageError(f"--windows must be at least 1, got {args.windows}")
    rules, sinks = read_rules(args.rules)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args.db = None
    registry, db = open_registry(args)
    if db is not None:
        db.close()
    # the audit journal: <store>/audit (or --audit-dir) of a local store; of a remote one, what
    # every replica shipped to <store>/journal/audit and this machine's unshipped spool
    audit_dir = open_journal(registry.store, "audit", args.audit_dir)
    name, which = parse_ref(args.ref)
    now = time.time()
    reports = []
    for k in range(args.windows - 1, -1, -1):
        reports.append(
            monitor(
                registry,
                name,
                which or "production",
                audit_dir=audit_dir,
                store_root=registry.store,
                window_s=window,
                end=now - k * window,
                all_versions=args.all_versions,
                rules=rules,
                sinks=sinks,
                save=not args.no_save,
            )
        )
    if args.html:
        with open(args.html, "wb") as fh:
            fh.write(render_html(reports[-1]))
    if args.json:
        print(json.dumps(reports if len(reports) > 1 else reports[0], indent=2, default=str))
        return 0
    console = make_console()
    for r in reports:
        end = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["window"]["end"]))
        share = "-" if r["drift_share"] is None else f"{r['drift_share']:.0%}"
        acc = (r["accuracy"] or {}).get("accuracy")
        console.print(
            f"[bold]{r['model']}@{r['version']}[/] window ending {end}: {r['rows']} predictions, "
            f"drifted features {share}"
            + (f" ({', '.join(r['drifted_features'])})" if r["drifted_features"] else "")
            + (
                f", live accuracy {acc:.3f} on {r['accuracy']['labelled']} labelled"
                if acc is not None
                else ""
            )
        )
        for a in r["alerts"]:
            state = "suppressed: cooldown" if a["suppressed"] else "sent"
            console.print(f"  alert [{a['severity']}] {a['message']} ({state})", markup=False)
    if args.html:
        console.print(f"wrote {os.path.abspath(args.html)}")
    return 0
