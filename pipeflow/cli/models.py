"""``pipeflow models ...`` and ``pipeflow lineage``: the registry from the command line.

Which registry: ``--spec SPEC`` (the store and metadata of that spec), else ``--store URL`` or
``$PIPEFLOW_STORE``, else ``.pipeflow/`` in the current directory. Lineage also needs the metadata
database: the spec's, ``--db PATH``, ``$PIPEFLOW_DB``, or ``pipeflow.db`` inside a local store.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pipeflow.cli import _common


def add_parsers(sub: Any) -> None:
    def where(
        c: argparse.ArgumentParser,
        *,
        db: bool = False,
        json: bool = False,
        reason: str | None = None,
    ) -> None:
        """What an action's options end with: ``--reason`` (recorded with ``reason``) where it
        changes the registry, ``--json`` where it prints data, then which registry."""
        if reason:
            _common.add_reason(c, reason)
        if json:
            _common.add_json(c)
        _common.add_where(c, db=db)
        _common.add_debug(c)

    models = sub.add_parser(
        "models", help="the model registry: versions, aliases, promotions, rollbacks, model cards"
    )
    models.set_defaults(handler=cmd_models)
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    c = msub.add_parser("list", help="list registered models with their versions and aliases")
    where(c, json=True)
    c = msub.add_parser("show", help="show a model: its versions and the full alias history")
    c.add_argument("name", metavar="NAME")
    where(c, json=True)
    c = msub.add_parser(
        "promote",
        help="point an alias at a version, if the given gates pass",
        description="Point ALIAS at a version (a number, or an alias such as staging, meaning its "
        "holder). Gates given here are checked first; a failed gate leaves the alias untouched.",
    )
    c.add_argument("name", metavar="NAME")
    c.add_argument(
        "which",  # not "version": that is the top-level --version flag's dest
        metavar="VERSION",
        help="version number, or an alias (its holder)",
    )
    c.add_argument("--to", dest="alias", required=True, metavar="ALIAS")
    _common.add_reason(c, "the move")
    c.add_argument(
        "--gate",
        action="append",
        default=[],
        metavar="METRIC>=VALUE",
        help="metric threshold the version must meet, e.g. 'accuracy>=0.95' (repeatable)",
    )
    c.add_argument(
        "--champion",
        metavar="METRIC[:MARGIN]",
        help="no worse than the alias's current holder on METRIC by more than MARGIN",
    )
    c.add_argument(
        "--force",
        action="store_true",
        help="promote a version the serving guard rolled back from ALIAS (needs --reason)",
    )
    where(c)
    c = msub.add_parser("rollback", help="point an alias back at its previous holder")
    c.add_argument("name", metavar="NAME")
    c.add_argument("alias", metavar="ALIAS")
    where(c, reason="the move")
    for action, aliases, help_, description in (  # a version's archive and its undoing
        (
            "archive",
            [],
            "archive a version: kept for the record, never served, refused by promotion",
            "Archive NAME@VERSION: its record and model file stay (show, card, lineage read "
            "them; store gc keeps them), but serve, predict and promotion refuse it until it is "
            "restored. A version an alias holds cannot be archived: move the alias first.",
        ),
        (
            "restore",
            ["unarchive"],
            "undo archive: the version may be promoted and served again",
            None,
        ),
    ):
        c = msub.add_parser(action, aliases=aliases, help=help_, description=description)
        c.add_argument("ref", metavar="NAME@VERSION")
        where(c, reason="the event")
    c = msub.add_parser(
        "compare",
        help="compare two versions on live traffic: accuracy, error rate, latency, significance",
        description="Compare NAME@A and NAME@B on what the serving fleet recorded (every "
        "replica's journal): rows, error rate and accuracy from feedback with Wilson intervals, "
        "latency p50/p95 and mean with an interval, and whether each difference is significant "
        "at --alpha.",
    )
    c.add_argument("first", metavar="NAME@A")
    c.add_argument("second", metavar="NAME@B")
    c.add_argument(
        "--live", action="store_true", help="from the serving journal (the only mode for now)"
    )
    c.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    c.add_argument(
        "--since",
        metavar="DURATION|TIME",
        help="only records since this long ago (90s, 30m, 2h, 7d) or this time "
        "(2026-05-01 or 2026-05-01T12:00); default: the whole journal",
    )
    _common.add_json(c)
    _common.add_audit_dir(c)
    where(c)
    from pipeflow.cli import exchange

    exchange.add_parsers(msub, where)  # models export, models import
    c = msub.add_parser("card", help="print the model card of NAME@VERSION (or NAME@ALIAS)")
    c.add_argument("ref", metavar="NAME@VERSION")
    c.add_argument("--format", choices=["markdown", "html"], default="markdown")
    c.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")
    where(c, db=True)

    lin = sub.add_parser(
        "lineage",
        help="where a model version came from: run, stages, datasets, sources",
    )
    lin.add_argument(
        "ref",
        metavar="NAME@VERSION|PREDICTION_ID",
        help="a model version (or NAME@ALIAS), or the id of a served prediction",
    )
    lin.set_defaults(handler=cmd_lineage)
    _common.add_json(lin)
    _common.add_audit_dir(lin)
    where(lin, db=True)


# ---------------------------------------------------------------------------------- helpers


def _headline(metrics: dict[str, Any] | None) -> str:
    metrics = metrics or {}
    for name in ("accuracy", "r2", "f1_macro", "rmse"):
        value = metrics.get(name)
        if isinstance(value, int | float):
            return f"{name} {value:.4f}"
    return ""


# ---------------------------------------------------------------------------------- commands


def _compare(args: argparse.Namespace, registry: Any, db: Any) -> int:
    from pipeflow.cli import compare

    return compare.compare(args, registry)


def _exchange(args: argparse.Namespace, registry: Any, db: Any) -> int:
    from pipeflow.cli import exchange

    if args.models_command == "export":
        return exchange.export_model(args, registry, db)
    return exchange.import_model(args, registry, db)


def cmd_models(args: argparse.Namespace) -> int:
    registry, db = _common.open_registry(args)
    try:
        return {
            "list": _list,
            "show": _show,
            "promote": _promote,
            "rollback": _rollback,
            "compare": _compare,  # pipeflow.cli.compare
            "export": _exchange,  # pipeflow.cli.exchange
            "import": _exchange,
            "card": _card,
            "archive": _archive,
            "restore": _archive,
            "unarchive": _archive,
        }[args.models_command](args, registry, db)
    finally:
        if db is not None:
            db.close()


def _list(args: argparse.Namespace, registry: Any, db: Any) -> int:
    rows = []
    for name in registry.models():
        versions = registry.versions(name)
        if not versions:
            continue
        latest = versions[-1]
        rows.append(
            {
                "name": name,
                "versions": len(versions),
                "latest": latest["version"],
                "latest_created": latest.get("created"),
                "aliases": registry.aliases(name),
                "archived": sorted(registry.archived(name)),
                "headline": _headline(latest.get("metrics")),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return _common.EXIT_OK
    if not rows:
        _common.make_console().print(f"no models registered in {registry.store.url} yet")
        return _common.EXIT_OK

    t = _common.table(
        "model", "versions", "latest", "created", "aliases", "latest metrics", "archived"
    )
    for r in rows:
        t.add_row(
            r["name"],
            str(r["versions"]),
            f"v{r['latest']}",
            _common.when(r["latest_created"]),
            ", ".join(f"{a} -> v{v}" for a, v in sorted(r["aliases"].items())) or "-",
            r["headline"],
            ", ".join(f"v{v}" for v in r["archived"]) or "-",
        )
    _common.make_console().print(t)
    return _common.EXIT_OK


def _print_mitigations(console: Any, versions: list[dict[str, Any]]) -> None:
    """The per-group decision thresholds of the versions that have them, with the accuracy and
    bias differences before and after on the held-out rows."""
    m = _common.table(
        "version", "attribute", "objective", "thresholds", "metric", "before", "after",
        title="bias mitigation (held-out rows)",
    )  # fmt: skip
    for v in versions:
        record = v.get("mitigation")
        if not isinstance(record, dict):
            continue
        before, after = record.get("before") or {}, record.get("after") or {}
        cuts = ", ".join(f"{g}: {t:.3g}" for g, t in (record.get("thresholds") or {}).items())
        for i, name in enumerate(after):
            number = [
                f"{x:.4g}" if isinstance(x, int | float) else "-"
                for x in (before.get(name), after[name])
            ]
            head = [
                f"v{v['version']}",
                str(record.get("attribute")),
                str(record.get("objective")),
                _common.escape(cuts),
            ]
            m.add_row(*(head if i == 0 else [""] * 4), name, *number)
    if m.row_count:
        console.print(m)


def _show(args: argparse.Namespace, registry: Any, db: Any) -> int:
    from pipeflow.errors import RegistryError

    versions = registry.versions(args.name)
    if not versions:
        raise RegistryError(registry._unknown_model(args.name))
    from pipeflow.registry import verdicts

    aliases = registry.aliases(args.name)
    history = registry.history(args.name)
    archive_events = registry.archive_events(args.name)
    archived = registry.archived(args.name)
    refusals = registry.refusals(args.name)
    # a version's gates as last checked: its latest promotion or refusal, else its registration's
    verdict = verdicts(versions, history, refusals)
    if args.json:
        for v in versions:
            v["archived"] = v["version"] in archived
        print(
            json.dumps(
                {
                    "name": args.name,
                    "aliases": aliases,
                    "archived": sorted(archived),
                    "versions": [{**v, "verdict": verdict[v["version"]]} for v in versions],
                    "history": history,
                    "archive_history": archive_events,
                    "refusals": refusals,
                },
                indent=2,
                default=str,
            )
        )
        return _common.EXIT_OK

    console = _common.make_console()
    console.print(f"[bold]{args.name}[/]  ({registry.store.url})")
    held: dict[int, list[str]] = {}
    for alias, version in aliases.items():
        held.setdefault(version, []).append(alias)
    t = _common.table(
        "version",
        "created",
        "by",
        "run",
        "metrics",
        "status",
        "aliases",
        "archived",
        title="versions",
    )
    g = _common.table("version", "", "kind", "gate", "value", title="gates, as last checked")
    for v in versions:
        judged = verdict[v["version"]]
        t.add_row(
            f"v{v['version']}",
            _common.when(v.get("created")),
            str(v.get("user", "")),
            str((v.get("run") or {}).get("run_id") or ""),
            _headline(v.get("metrics")),
            _status(judged),
            ", ".join(sorted(held.get(v["version"], []))),
            "[yellow]archived[/]" if v["version"] in archived else "",
        )
        for gate in judged["gates"]:
            value = gate.get("value")
            g.add_row(
                f"v{v['version']}",
                "[green]✓[/]" if gate.get("passed") is True else "[red]✗[/]",
                str(gate.get("kind")),
                _common.escape(str(gate.get("gate"))),
                f"{value:.4g}"
                if isinstance(value, int | float)
                else _common.escape(str(gate.get("detail") or "-")),
            )
    console.print(t)
    if g.row_count:
        console.print(g)
    _print_mitigations(console, versions)
    h = _common.table(
        "when", "alias", "action", "from", "to", "by", "reason", title="alias history"
    )
    for e in history:
        h.add_row(
            _common.when(e["time"]),
            e["alias"],
            e["action"],
            f"v{e['from_version']}" if e.get("from_version") else "-",
            f"v{e['to_version']}",
            str(e.get("user", "")),
            _common.escape(e.get("reason") or ""),
        )
    if history:
        console.print(h)
    else:
        console.print("no alias has pointed at a version yet")
    if archive_events:
        a = _common.table("when", "action", "version", "by", "reason", title="archive history")
        for e in archive_events:
            a.add_row(
                _common.when(e.get("time")),
                str(e.get("action", "")),
                f"v{e.get('version')}",
                str(e.get("user", "")),
                _common.escape(e.get("reason") or ""),
            )
        console.print(a)
    return _common.EXIT_OK


def _status(judged: dict[str, Any]) -> str:
    """A version's status in a few words: the failed gates by kind (the gates table below has
    each expression and value)."""
    failed = ", ".join(str(g.get("kind")) for g in judged["gates"] if g.get("passed") is not True)
    if not judged["promoted"]:
        return (
            f"[red]not promoted: {_common.escape(failed)} failed[/]" if failed else "not promoted"
        )
    if judged["refused"] is not None and failed:
        alias = _common.escape(str(judged["refused"].get("alias")))
        return f"[red]refused for {alias}: {_common.escape(failed)} failed[/]"
    return "promoted"


def _promote(args: argparse.Namespace, registry: Any, db: Any) -> int:
    from pipeflow.errors import UsageError
    from pipeflow.registry.gates import gates_from_flags, promote, withdrawn_canary

    if args.force and not args.reason.strip():
        raise UsageError("--force: say why with --reason (recorded with the move)")
    gates_spec = gates_from_flags(args.gate)
    champion = None
    if args.champion:
        metric, _, margin = args.champion.partition(":")
        try:
            champion = (metric, float(margin or 0))
        except ValueError:
            raise UsageError(
                f"--champion {args.champion!r}: expected METRIC or METRIC:MARGIN"
            ) from None
    try:
        event = promote(
            registry,
            args.name,
            args.which,
            args.alias,
            gates=gates_spec,
            champion=champion,
            reason=args.reason,
            force=args.force,
        )
    except ValueError as err:  # a gate that cannot be read
        raise UsageError(str(err)) from None
    assert event is not None  # without unless_held a promotion always writes
    was = f"v{event['from_version']}" if event["from_version"] else "unset"
    print(f"{args.name}@{args.alias} -> v{event['to_version']} (was {was})")
    if w := withdrawn_canary(registry, args.name, event["to_version"]):
        sys.stderr.write(
            f"warning: v{w['version']} was withdrawn as the serving fleet's canary "
            f"{_common.when(w.get('time'))} (replica {w.get('replica', '?')}: {w.get('reason')})\n"
        )
    return _common.EXIT_OK


def _rollback(args: argparse.Namespace, registry: Any, db: Any) -> int:
    event = registry.rollback(args.name, args.alias, reason=args.reason)
    print(
        f"{args.name}@{args.alias} -> v{event['to_version']} (rolled back from v{event['from_version']})"
    )
    return _common.EXIT_OK


def _archive(args: argparse.Namespace, registry: Any, db: Any) -> int:
    """``models archive`` and ``models restore`` (``unarchive``): one event each."""
    from pipeflow.errors import UsageError
    from pipeflow.registry import parse_ref

    name, which = parse_ref(args.ref)
    if which is None:
        raise UsageError(f"{args.ref!r}: name the version, e.g. {name}@3")
    version = int(registry.resolve(name, which)["version"])
    if args.models_command == "archive":
        registry.archive(name, version, reason=args.reason)
        print(f"{name}@{version} archived: kept, never served or promoted until restored")
    else:
        registry.restore(name, version, reason=args.reason)
        print(f"{name}@{version} restored: it may be promoted and served again")
    return _common.EXIT_OK


def _card(args: argparse.Namespace, registry: Any, db: Any) -> int:
    from pipeflow.governance import render_card
    from pipeflow.registry import parse_ref
    from pipeflow.registry.lineage import model_lineage

    name, which = parse_ref(args.ref)
    record = registry.resolve(name, which)
    lineage = model_lineage(db, registry, record) if db is not None else None
    promotions = [
        e for e in registry.history(name) if e["to_version"] == record["version"] and e["gates"]
    ]
    if promotions:  # the gates of its latest promotion include the champion check
        record = {**record, "gates": promotions[-1]["gates"]}
    markdown, html = render_card(record, lineage)
    data = html if args.format == "html" else markdown.encode("utf-8")
    if args.output:
        from pipeflow.errors import UsageError

        try:
            with open(args.output, "wb") as fh:
                fh.write(data)
        except OSError as err:
            raise UsageError(f"cannot write {args.output}: {err.strerror or err}") from None
        print(f"wrote the model card of {name}@{record['version']} to {args.output}")
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return _common.EXIT_OK


def _find_prediction(args: argparse.Namespace, registry: Any) -> dict[str, Any] | None:
    """The audit record of a prediction id (with its feedback), or None if ``args.ref`` is not
    one; a name that is neither a prediction nor a model is an error naming both places."""
    import re

    from pipeflow.errors import RegistryError
    from pipeflow.store import journal as audit
    from pipeflow.store.shipping import open_journal

    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", args.ref):
        return None
    folder = open_journal(registry.store, "audit", args.audit_dir)
    found = audit.find(folder, "predictions", args.ref)
    if found:
        return {**found[0], "feedback": audit.find(folder, "feedback", args.ref)}
    if args.ref in registry.models():
        return None
    raise RegistryError(
        f"'{args.ref}' is neither a prediction id in the audit log at {audit.describe(folder)} nor a model "
        f"in the registry at {registry.store.url} (give NAME@VERSION for a model)"
    )


def explanation_line(explanation: dict[str, Any], top: int = 10) -> str:
    """A prediction's explanation in one line: method, output, base, then the contributions,
    the largest first (``top`` of them)."""
    about = [str(explanation.get("method")), str(explanation.get("output"))]
    if explanation.get("class") is not None:
        about[1] += f" of class {explanation['class']!r}"
    if explanation.get("evaluations") is not None:
        about.append(f"{explanation['evaluations']:,} model evaluations")
    given = explanation.get("contributions") or {}
    ranked = sorted(given.items(), key=lambda kv: -abs(kv[1]) if kv[1] is not None else 0.0)
    parts = [f"{k} {v:+.4g}" if v is not None else f"{k} ?" for k, v in ranked[:top]]
    if len(ranked) > top:
        parts.append(f"... {len(ranked) - top} more")
    base = explanation.get("base")
    return (
        f"   explanation ({', '.join(about)}): base {base:.4g}; {', '.join(parts)}"
        if isinstance(base, int | float)
        else f"   explanation ({', '.join(about)}): {', '.join(parts)}"
    )


def cmd_lineage(args: argparse.Namespace) -> int:
    from pipeflow.registry import parse_ref
    from pipeflow.registry.lineage import model_lineage

    registry, db = _common.open_registry(args)
    prediction = None
    try:
        if "@" not in args.ref:
            prediction = _find_prediction(args, registry)
        if prediction is not None:
            record = registry.resolve(prediction["model"], int(prediction["version"]))
        else:
            name, which = parse_ref(args.ref)
            record = registry.resolve(name, which)
        lineage = model_lineage(db, registry, record)
    finally:
        if db is not None:
            db.close()
    if prediction is not None:
        lineage = {"prediction": prediction, **lineage}
    if args.json:
        print(json.dumps(lineage, indent=2, default=str))
        return _common.EXIT_OK
    console = _common.make_console()
    if prediction is not None:
        console.print(
            f"[bold]prediction {prediction['id']}[/]  {_common.when(prediction.get('time'))}"
            f"  output {_common.escape(repr(prediction.get('output')))}  caller {prediction.get('caller')}"
        )
        console.print(
            f"   inputs {json.dumps(prediction.get('inputs'), default=str)[:300]}", markup=False
        )
        if prediction.get("flags"):
            console.print(f"   flags: {'; '.join(prediction['flags'])}", markup=False)
        if isinstance(prediction.get("explanation"), dict):
            console.print(explanation_line(prediction["explanation"]), markup=False)
        for fb in prediction.get("feedback", []):
            console.print(
                f"   feedback {_common.when(fb.get('time'))}: true outcome {fb.get('outcome')!r}"
            )
        console.print("   answered by:")
    console.print(f"[bold]{lineage['model']}[/]  model {str(lineage['model_digest'])[:12]}")
    console.print(
        f"└─ run {lineage['run_id']}  pipeline {lineage['pipeline']}  registered by stage {lineage['stage']}"
    )
    if lineage.get("note"):
        console.print(f"   ({lineage['note']})")
    console.print(
        f"   ├─ training table {str(lineage['training_table'])[:12]}"
        f"  evaluation table {str(lineage['evaluation_table'])[:12]}"
    )
    if lineage["stages"]:
        console.print("   ├─ stages:")
        for s in lineage["stages"]:
            fed = f"  <- {', '.join(s['inputs'])}" if s["inputs"] else ""
            console.print(f"   │    {s['stage']} ({s['type']}, {s['state']}){fed}")
    console.print("   ├─ sources:")
    for src in lineage["sources"]:
        console.print(
            f"   │    {src['stage']} ({src['type']}): {_common.escape(str(src['source']))}"
            f"  fingerprint {str(src['fingerprint'])[:12]}  data {str(src['digest'])[:12]}"
        )
    if not lineage["sources"]:
        console.print("   │    none recorded")
    shared = ", ".join(s["model"] for s in lineage["shared_with"]) or "no other version"
    console.print(f"   └─ shares data with: {shared}")
    return _common.EXIT_OK
