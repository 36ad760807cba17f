"""``pipeflow monitor NAME@ALIAS``: one monitoring pass (or several consecutive windows); and
``pipeflow drift REFERENCE CURRENT``: the same drift engine over two tables (any fsspec URL, CSV or
Parquet).

Both read the drift rule (:class:`pipeflow.monitoring.engine.DriftPolicy`) from YAML: the
``drift:`` mapping of ``monitor --rules FILE``, or ``drift --policy FILE`` (the mapping itself);
``drift``'s ``--method``, ``--alpha``, ``--wasserstein`` and ``--js`` override it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from pipeflow.cli import _common


def add_parsers(sub: Any) -> None:
    c = sub.add_parser(
        "monitor",
        help="drift, live accuracy and latency of a served model against its training reference",
    )
    _common.add_model_ref(c)
    c.add_argument("--window", default="1h", help="window length: 90s, 15m, 1h, 2d (default 1h)")
    c.add_argument(
        "--windows", type=int, default=1, help="consecutive windows ending now (default 1)"
    )
    c.add_argument("--rules", metavar="FILE", help="YAML with `alerts:` rules and `sinks:`")
    c.add_argument("--all-versions", action="store_true", help="include earlier versions' traffic")
    _common.add_audit_dir(c)
    c.add_argument("--html", metavar="FILE", help="write the (last) report as HTML")
    _common.add_json(c, "print the report(s) as JSON")
    c.add_argument("--no-save", action="store_true", help="do not add the report to the history")
    _common.add_where(c)
    _common.add_debug(c)
    c.set_defaults(handler=cmd_monitor)

    d = sub.add_parser(
        "drift",
        help="drift of one table against another (KS / chi-squared, Wasserstein, JS, PSI)",
        description="Compare CURRENT with REFERENCE column by column with the drift engine "
        "`monitor` uses: per column a test (KS for continuous numbers, chi-squared for discrete "
        "numbers and categories) with its p-value, effect sizes, and the rule that decided. "
        "Exit code 0 whatever the verdict unless --fail-on-drift.",
    )
    d.add_argument("reference", metavar="REFERENCE", help="CSV or Parquet: a path or fsspec URL")
    d.add_argument("current", metavar="CURRENT", help="CSV or Parquet: a path or fsspec URL")
    d.add_argument("--columns", help="comma-separated columns (default: every shared column)")
    d.add_argument(
        "--policy",
        metavar="FILE",
        help="YAML mapping: method, alpha, wasserstein, js, psi, share, per_column",
    )
    d.add_argument("--method", choices=["auto", "test", "effect", "psi"], help="the rule")
    d.add_argument("--alpha", type=float, help="p-value threshold (default 0.05)")
    d.add_argument("--wasserstein", type=float, help="numeric effect threshold (default 0.05)")
    d.add_argument("--js", type=float, help="categorical effect threshold (default 0.05)")
    _common.add_json(d, "print the report as JSON")
    d.add_argument("--html", metavar="FILE", help="write the report as an HTML page")
    d.add_argument("--fail-on-drift", action="store_true", help="exit 1 when the table is drifted")
    _common.add_debug(d)
    d.set_defaults(handler=cmd_drift)


def read_rules(path: str | None) -> tuple[list[Any], list[Any]]:

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
    if not isinstance(data, dict) or set(data) - {"alerts", "sinks", "drift"}:
        raise UsageError(
            f"{path}: expected a mapping with `alerts:` and optionally `sinks:` and `drift:`"
        )
    rules, sinks = [], []
    for key, cls, out in (("alerts", Rule, rules), ("sinks", Sink, sinks)):
        for i, item in enumerate(data.get(key) or []):
            out.append(_validate(cls, item, path, f"{key}[{i}]"))
    return rules, sinks or [Sink(type="log")]


def read_policy(path: str | None, key: str | None = None) -> Any:
    """The drift policy of a YAML file (its ``key`` mapping, or the whole file); the defaults
    without a file."""
    from pipeflow.monitoring.engine import DriftPolicy

    if not path:
        return DriftPolicy()
    data = _load_yaml(path, "--policy" if key is None else "--rules")
    if key is not None:
        data = (data or {}).get(key) if isinstance(data, dict) else None
    return _validate(DriftPolicy, data or {}, path, key or "")


def _load_yaml(path: str, flag: str) -> Any:
    import yaml

    from pipeflow.errors import UsageError

    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except OSError as err:
        raise UsageError(f"cannot read {flag} {path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        from pipeflow.spec.yamlsrc import yaml_problem

        what, where = yaml_problem(path, err)
        raise UsageError(f"{where}: {what}") from None


def _validate(cls: Any, item: Any, path: str, field: str) -> Any:
    """``cls`` from ``item``, or a UsageError naming the file, the field and what was expected."""
    from pydantic import ValidationError

    from pipeflow.errors import UsageError

    try:
        return cls.model_validate(item)
    except ValidationError as err:
        from pipeflow.spec.load import did_you_mean, pydantic_message

        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        if first["type"] == "extra_forbidden":
            word = str(first["loc"][-1])
            known = list(cls.model_fields)
            if len(first["loc"]) > 2 and first["loc"][0] == "per_column":
                from pipeflow.monitoring.engine import ColumnPolicy

                known = list(ColumnPolicy.model_fields)
            what = (
                f"unknown key '{word}'{did_you_mean(word, known)} "
                f"(expected one of: {', '.join(known)})"
            )
        else:
            what = pydantic_message(first)
        where = ".".join(p for p in (field, where) if p)
        raise UsageError(f"{path}: {where or 'the file'}: {what}") from None


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
    policy = read_policy(args.rules, "drift")
    import logging

    _common.log_to_console(logging.INFO, "%(levelname)s %(name)s: %(message)s")
    args.db = None
    registry, db = _common.open_registry(args)
    if db is not None:
        db.close()
    # the audit journal: <store>/audit (or --audit-dir) of a local store; of a remote one, what
    # every replica shipped to <store>/journal/audit and this machine's unshipped spool
    audit_dir = open_journal(registry.store, "audit", args.audit_dir)
    name, which = parse_ref(args.ref)
    now = time.time()
    reports = []
    try:
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
                    policy=policy,
                )
            )
    except UsageError as err:
        if args.rules and str(err).startswith("alerts["):  # a rule of the file: name the file
            raise UsageError(f"{args.rules}: {err}") from None
        raise
    if args.html:
        with open(args.html, "wb") as fh:
            fh.write(render_html(reports[-1]))
    if args.json:
        print(json.dumps(reports if len(reports) > 1 else reports[0], indent=2, default=str))
        return 0
    console = _common.make_console()
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
            + "".join(
                f", {what} drifted against the {r[key]['against']}"
                for key, what in (("prediction", "predictions"), ("target", "outcomes"))
                if (r.get(key) or {}).get("drifted")
            )
        )
        _print_kpis(console, r)
        for a in r["alerts"]:
            state = "suppressed: cooldown" if a["suppressed"] else "sent"
            console.print(f"  alert [{a['severity']}] {a['message']} ({state})", markup=False)
    if args.html:
        console.print(f"wrote {os.path.abspath(args.html)}")
    return 0


def _print_kpis(console: Any, report: dict[str, Any]) -> None:
    """The window's business metrics and bias (what the version declared at promotion)."""
    business = report.get("business")
    if business:
        shown = [f"{k} {v:.4g}" for k, v in business.items() if v is not None and k != "rows"]
        console.print(
            f"  business on {business['rows']} labelled: " + (", ".join(shown) or "-"),
            markup=False,
        )
    bias = report.get("bias")
    if bias:
        if bias.get("note"):
            console.print(f"  bias across {bias['attribute']}: {bias['note']}", markup=False)
        else:
            console.print(
                f"  bias across {bias['attribute']} ({bias['source']}, {bias['rows']} labelled): "
                f"demographic parity difference {bias['demographic_parity_difference']:.4g}, "
                f"equalized odds difference {bias['equalized_odds_difference']:.4g}",
                markup=False,
            )
        for b in bias["breaches"]:
            console.print(
                f"  bias limit breached: {b['metric']} = {b['value']:.4g} > {b['limit']:g}",
                markup=False,
            )


def read_table(where: str, flag: str) -> Any:
    """A CSV or Parquet table from a path or fsspec URL, or a UsageError naming it."""
    from pipeflow.errors import UsageError
    from pipeflow.stages.ingest import _format_of, _read

    try:
        fmt = _format_of(where)
    except ValueError:
        raise UsageError(
            f"{flag} {where}: expected a .csv, .csv.gz or .parquet file (or a folder of Parquet "
            "files ending in .parquet)"
        ) from None
    if fmt not in ("csv", "parquet"):
        raise UsageError(f"{flag} {where}: expected CSV or Parquet, not {fmt}")
    try:
        return _read(where, fmt, {}, {})
    except (OSError, ValueError, ImportError) as err:
        raise UsageError(f"{flag} {where}: {err}") from None


def cmd_drift(args: argparse.Namespace) -> int:
    from pipeflow.errors import UsageError
    from pipeflow.monitoring.drift import compare_tables

    policy = read_policy(args.policy)
    given = {k: getattr(args, k) for k in ("method", "alpha", "wasserstein", "js")}
    try:
        policy = type(policy).model_validate(
            {**policy.model_dump(), **{k: v for k, v in given.items() if v is not None}}
        )
    except ValueError as err:
        raise UsageError(f"--method/--alpha/--wasserstein/--js: {err}") from None
    reference = read_table(args.reference, "REFERENCE")
    current = read_table(args.current, "CURRENT")
    columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
    report = compare_tables(reference, current, columns=columns, policy=policy)
    report = {"reference": args.reference, "current": args.current, **report}
    if args.html:
        from pipeflow.monitoring.monitor import render_tables_html

        with open(args.html, "wb") as fh:
            fh.write(render_tables_html(report))
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        console = _common.make_console()
        share = report["drift_share"]
        console.print(
            f"[bold]{args.current}[/] against {args.reference}: {report['rows']:,} rows against "
            f"{report['reference_rows']:,}; drifted columns "
            f"{'-' if share is None else f'{share:.0%}'}"
            + (" -> [red]drifted[/]" if report["drifted"] else "")
        )
        from rich.table import Table

        table = Table(box=None)
        for head in ("column", "kind", "state", "test", "statistic", "p-value", "effect", "rule"):
            table.add_column(
                head, justify="left" if head in ("column", "kind", "state", "rule") else "right"
            )
        for name, f in report["features"].items():
            effect = f.get("js") if f.get("kind") == "categorical" else f.get("wasserstein")
            table.add_row(
                name,
                str(f.get("kind") or "-"),
                "drifted" if f.get("drifted") else "ok",
                str(f.get("test") or "-"),
                _num(f.get("statistic")),
                _num(f.get("p_value")),
                _num(effect),
                str(f.get("rule") or "-"),
            )
        console.print(table)
    if args.html:
        print(f"wrote {os.path.abspath(args.html)}", file=sys.stderr if args.json else sys.stdout)
    return _common.EXIT_FAILED if args.fail_on_drift and report["drifted"] else _common.EXIT_OK


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}"
