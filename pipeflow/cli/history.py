"""``pipeflow runs``, ``data``, ``store check``, ``store gc`` and ``store migrate``: what the
metadata database and the store recorded.

``runs`` and ``data`` read the metadata database (:func:`pipeflow.cli._common.open_history`);
``runs output`` and ``runs compare`` also load artifacts from the store of the run's spec.
``store check`` verifies a whole store (:mod:`pipeflow.store.check`); ``store gc`` deletes what
nothing needs (:mod:`pipeflow.runner.gc`); ``store migrate`` copies a
run history into another database, checked (:mod:`pipeflow.store.migrate`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pipeflow.cli import _common


def add_parsers(sub: Any) -> None:
    data = sub.add_parser(
        "data", help="dataset versions read by ingest stages, and the runs that used them"
    )
    data.set_defaults(handler=cmd_data)
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    for name, help_ in (
        ("list", "list dataset versions (one per source content seen)"),
        ("show", "show one dataset version: its source and every run that used it"),
    ):
        c = data_sub.add_parser(name, help=help_, description=help_)
        if name == "show":
            c.add_argument(
                "dataset_version",
                metavar="VERSION",
                help="a version id (unique prefix) from `data list`",
            )
        _common.add_json(c)
        _common.add_where(c, store=False, db=True)
        _common.add_debug(c)

    st = sub.add_parser("store", help="inspect the artifact store and its metadata")
    st.set_defaults(handler=cmd_store)
    st_sub = st.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    check = st_sub.add_parser(
        "check",
        help="verify a store: every object hashes to its name, every record and manifest names "
        "objects present, nothing half-written is reachable, the database is intact",
        description="Verify a store and its metadata database; print each problem (exit 1 if any).",
    )
    gc = st_sub.add_parser(
        "gc",
        help="delete run artifacts nothing needs: never a registered version's, the last runs' "
        "or the latest stage results' (refused while a run is in progress)",
        description="Delete objects and cache manifests that are unreachable: not named by a "
        "registered version (archived ones included) or its registering stage's lineage, not "
        "an output of the last --keep-last runs of a pipeline, not the latest result of any "
        "stage, and older than --older-than. The run history is kept; what was deleted is "
        "recorded in it. Refused while a run is in progress.",
    )
    gc.add_argument(
        "--keep-last",
        type=int,
        default=1,
        metavar="N",
        help="keep the outputs of the last N runs of each pipeline (default 1)",
    )
    gc.add_argument(
        "--older-than",
        default="30d",
        metavar="AGE",
        help="delete only what is older than this: 30d, 12h, 90m, 45s, 2w (default 30d)",
    )
    gc.add_argument(
        "--dry-run",
        action="store_true",
        help="list what would be deleted, with sizes; delete nothing",
    )
    migrate = st_sub.add_parser(
        "migrate",
        help="copy the run history into another metadata database (a team's PostgreSQL), "
        "checked row by row",
        description="Copy every run, stage record, output and lineage edge of the metadata "
        "database (the spec's, or --db) into --to, then read each back and compare (counts and "
        "SHA-256 per table). Safe to run again; rows already there are skipped.",
    )
    migrate.add_argument(
        "--to",
        required=True,
        metavar="URL",
        help="target database: postgresql://user@host/db (password from PGPASSWORD or "
        "~/.pgpass) or a SQLite path",
    )
    for c in (check, gc, migrate):  # each ends with where to look (migrate: no store, a database)
        _common.add_where(c, store=c is not migrate, db=True)
        _common.add_debug(c)

    runs = sub.add_parser("runs", help="list and inspect recorded runs")
    runs.set_defaults(handler=cmd_runs)
    runs_sub = runs.add_subparsers(dest="runs_command", metavar="ACTION", required=True)
    for name, help_ in (
        ("list", "list recent runs"),
        ("show", "show one run: stages, timings, cache hits, errors, outputs, lineage"),
        ("output", "print one output of a stage in a run (a table, JSON value, array or bytes)"),
        ("compare", "compare runs side by side: params and metrics"),
        ("tag", "set (or --delete) tags of a recorded run"),
        ("note", "set the note of a recorded run (an empty TEXT removes it)"),
        ("logs", "print the log lines stages of a run kept (Python logging in the stage)"),
    ):
        c = runs_sub.add_parser(name, help=help_, description=help_)
        if name in ("show", "output", "tag", "note", "logs"):
            c.add_argument("run_id", metavar="RUN", help="run id (a unique prefix, or 'latest')")
        if name == "tag":
            c.add_argument("tags", metavar="KEY=VALUE", nargs="*", help="tags to set")
            c.add_argument(
                "--delete", action="append", default=[], metavar="KEY", help="remove this tag"
            )
        elif name == "note":
            c.add_argument("text", metavar="TEXT", help="the note (replaces the previous one)")
        if name == "compare":
            c.add_argument(
                "run_ids",
                metavar="RUN",
                nargs="+",
                help="two or more run ids (unique prefixes, or 'latest')",
            )
            _common.add_json(c)
        if name == "logs":
            c.add_argument("stage", metavar="STAGE", nargs="?", help="only this stage's lines")
        if name in ("show", "logs"):
            _common.add_json(c)
        elif name == "output":
            c.add_argument(
                "target", metavar="STAGE[.PORT]", help="the stage (its only output) or stage.port"
            )
            c.add_argument(
                "--format",
                choices=["text", "csv", "json"],
                default="text",
                help="how to print a table (default: text)",
            )
            c.add_argument(
                "--rows",
                type=int,
                default=20,
                help="rows of a table to print as text (default 20; 0 = all)",
            )
        elif name == "list":
            c.add_argument("--limit", type=int, default=20)
            c.add_argument("--pipeline", help="only runs of this pipeline")
            c.add_argument(
                "--where",
                metavar="EXPR",
                help='only runs meeting EXPR, e.g. "metrics.accuracy > 0.9 and '
                "params.optimizer = 'adam' and tags.team = 'fraud'\" (see docs/cli.md)",
            )
            c.add_argument(
                "--tag",
                dest="tags",
                action="append",
                default=[],
                metavar="KEY[=VALUE]",
                help="only runs with this tag (and value); repeatable",
            )
            c.add_argument(
                "--json", action="store_true", help="machine-readable: runs, tags, metrics"
            )
        _common.add_where(c, store=False, db=True)
        _common.add_debug(c)


def cmd_runs(args: argparse.Namespace) -> int:
    from pipeflow.cli.display import show_logs, show_run, show_runs

    workspace = _common.locate(args)
    db = workspace.metadata()
    try:
        if workspace.loaded is not None:
            _common.pin_latest(args, db, workspace.loaded.spec.pipeline)
        if args.runs_command == "list":
            show_runs(
                _common.make_console(),
                db,
                limit=args.limit,
                pipeline=args.pipeline,
                where=_conditions(args),
                as_json=args.json,
            )
            return _common.EXIT_OK
        if args.runs_command in ("tag", "note"):
            return _tag_or_note(args, db)
        if args.runs_command in ("output", "compare"):
            return (_print_output if args.runs_command == "output" else _compare)(args, db)
        if args.runs_command == "logs":
            return show_logs(_common.make_console(), db, args.run_id, args.stage, as_json=args.json)
        return show_run(_common.make_console(), db, args.run_id, as_json=args.json)
    finally:
        db.close()


def _conditions(args: argparse.Namespace) -> list[Any]:
    """``--where`` and ``--tag`` of ``runs list`` as search conditions (pipeflow.store.search)."""
    from pipeflow.store.search import Condition, parse_where

    conditions = parse_where(args.where) if args.where is not None else []
    for name, value in _common.parse_tags(args.tags, value_optional=True).items():
        conditions.append(
            Condition("tags", name) if value is None else Condition("tags", name, "=", value)
        )
    return conditions


def _tag_or_note(args: argparse.Namespace, db: Any) -> int:
    from pipeflow.errors import UsageError

    run = db.find_run(args.run_id)
    if run is None:
        raise UsageError(f"no run {args.run_id!r} in {db.location}")
    if args.runs_command == "note":
        db.set_note(run["id"], args.text or None)
        print(f"run {run['id']}: note {'set' if args.text else 'removed'}")
        return _common.EXIT_OK
    if not args.tags and not args.delete:
        raise UsageError("give tags to set (KEY=VALUE) or --delete KEY")
    tags = {k: v or "" for k, v in _common.parse_tags(args.tags).items()}
    clash = sorted(set(tags) & set(args.delete))
    if clash:
        raise UsageError(f"tag {clash[0]!r} is both set and deleted")
    missing = [k for k in args.delete if k not in db.tags(run["id"])]
    if missing:
        raise UsageError(f"run {run['id']} has no tag {missing[0]!r}")
    if tags:
        db.set_tags(run["id"], tags)
    if args.delete:
        db.delete_tags(run["id"], args.delete)
    now = db.tags(run["id"])
    shown = ", ".join(f"{k}={v}" for k, v in sorted(now.items())) or "none"
    print(f"run {run['id']}: tags {shown}")
    return _common.EXIT_OK


def cmd_data(args: argparse.Namespace) -> int:
    import json

    from pipeflow.errors import UsageError

    db = _common.open_history(args)
    try:
        versions = db.dataset_versions()
        if args.data_command == "list":
            if args.json:
                print(json.dumps(versions, indent=2, default=str))
                return _common.EXIT_OK
            t = _common.table(
                "version", "source", "pipeline", "stage", "first seen", "last used", "runs"
            )
            for v in versions:
                t.add_row(
                    v["version"][:12],
                    v["source"],
                    v["pipeline"],
                    v["stage"],
                    _common.when(v["first_seen"]),
                    _common.when(v["last_used"]),
                    str(v["runs"]),
                )
            _common.make_console().print(t)
            return _common.EXIT_OK
        matches = [v for v in versions if v["version"].startswith(args.dataset_version)]
        if len({v["version"] for v in matches}) != 1:
            raise UsageError(
                f"no dataset version starts with {args.dataset_version!r}"
                if not matches
                else f"{args.dataset_version!r} is ambiguous: give more characters"
            )
        version = matches[0]["version"]
        uses = db.dataset_uses(version)
        if args.json:
            print(
                json.dumps(
                    {"version": version, "sources": matches, "runs": uses}, indent=2, default=str
                )
            )
            return _common.EXIT_OK
        console = _common.make_console()
        console.print(f"[bold]dataset version {version}[/]")
        for m in matches:
            console.print(f"  source {m['source']}  (pipeline {m['pipeline']}, stage {m['stage']})")
        console.print(f"  used by {len(uses)} run(s):")
        for u in uses:
            console.print(
                f"    {u['run_id']}  {u['pipeline']}  {u['state']}  {_common.when(u['started'])}  output {str(u['digest'] or '')[:16]}"
            )
        return _common.EXIT_OK
    finally:
        db.close()


def cmd_store(args: argparse.Namespace) -> int:
    """``pipeflow store check``: one line per problem on stdout, exit 1 if there is any."""
    if args.store_command == "migrate":
        return cmd_migrate(args)
    if args.store_command == "gc":
        return cmd_gc(args)
    from pipeflow.errors import UsageError
    from pipeflow.store.check import scan_store

    if args.spec and (args.store or args.db):
        raise UsageError("give --spec SPEC, or --store URL (and --db PATH), not both")
    located = _common.locate(args)
    store = located.store  # a local store that is not there: said first
    db = located.open_db()
    if db is None:
        raise UsageError(f"no metadata database at {located.db_path}: pass --db PATH")
    try:
        report = scan_store(store, db)
    finally:
        db.close()
    for problem in report.problems:
        print(problem)
    counted = (
        f"{report.objects} objects, {report.manifests} manifests, {report.artifacts} artifact "
        f"records, {report.registry_files} registry files"
    )
    if report.problems:
        print(f"store {report.url}: {len(report.problems)} problem(s) ({counted})", file=sys.stderr)
        return _common.EXIT_FAILED
    print(f"ok: store {report.url}: {counted}, database {db.location} intact")
    return _common.EXIT_OK


def cmd_gc(args: argparse.Namespace) -> int:
    """``pipeflow store gc``: with ``--dry-run`` a line per object that would go, then one
    summary line (count and bytes deleted, and what is kept)."""
    from pipeflow.errors import UsageError
    from pipeflow.runner.gc import collect, parse_age

    if args.spec and (args.store or args.db):
        raise UsageError("give --spec SPEC, or --store URL (and --db PATH), not both")
    older_than = parse_age(args.older_than)
    located = _common.locate(args)
    store = located.store
    db = located.open_db()
    if db is None:
        raise UsageError(f"no metadata database at {located.db_path}: pass --db PATH")
    try:
        done = collect(
            store, db, keep_last=args.keep_last, older_than_s=older_than, dry_run=args.dry_run
        )
    finally:
        db.close()
    if args.dry_run:
        for o in sorted(done.objects, key=lambda o: (-o.size, o.digest)):
            print(
                f"would delete {o.digest[:12]}  {_size(o.size):>9}  {o.origin or 'no run recorded'}"
            )
    verb = "would delete" if args.dry_run else "deleted"
    print(
        f"{verb} {len(done.objects)} object(s), {_size(done.bytes)}, and {done.manifests} cache "
        f"manifest(s) from {done.url}; kept {done.kept_objects} object(s), {_size(done.kept_bytes)}"
    )
    return _common.EXIT_OK


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover


def cmd_migrate(args: argparse.Namespace) -> int:
    """``pipeflow store migrate --to URL``: a line per table, then the verdict."""
    from pipeflow.errors import UsageError
    from pipeflow.store.database import open_metadata
    from pipeflow.store.metadata import TABLES, absolute
    from pipeflow.store.migrate import migrate

    located = _common.locate(args)
    source = located.open_db()
    if source is None:
        raise UsageError(
            f"no metadata database at {located.db_path}: pass --spec SPEC or --db PATH"
        )
    try:
        if absolute(args.to) == absolute(located.db_path):
            raise UsageError(f"--to names the database being migrated ({source.location})")
        target = open_metadata(args.to)
        try:
            width = max(map(len, TABLES))  # the columns line up whatever the table

            def shown(t: Any) -> None:
                print(
                    f"{t.table:<{width}} {t.rows:>7} rows: {t.copied} copied, {t.present} already "
                    f"there{f', {len(t.differing)} differ' if t.differing else ''}"
                    f"  sha256 {t.digest[:16] or '-'}"
                )

            report = migrate(source, target, progress=shown)
        finally:
            target.close()
    finally:
        source.close()
    for problem in report.problems[:20]:
        print(problem)
    runs = next(t.rows for t in report.tables if t.table == "runs")
    if report.problems:
        print(
            f"{len(report.problems)} record(s) differ between {report.source} and "
            f"{report.target}: nothing was overwritten",
            file=sys.stderr,
        )
        return _common.EXIT_FAILED
    print(
        f"ok: {runs} runs from {report.source} are in {report.target} (counts and digests checked)"
    )
    return _common.EXIT_OK


def _compare(args: argparse.Namespace, db: Any) -> int:
    """Params and every numeric metric (outputs of kind ``metrics``) of several runs."""
    import json

    from pipeflow.errors import UsageError
    from pipeflow.store.artifacts import ArtifactRef

    runs = []
    for run_id in args.run_ids:
        run = db.find_run(run_id)
        if run is None:
            raise UsageError(f"no run matches {run_id!r}")
        runs.append(run)
    if len(runs) < 2:
        raise UsageError("give at least two runs to compare")
    table: dict[str, list[Any]] = {}
    for i, run in enumerate(runs):
        for name, value in db.params(run["id"]).items():
            table.setdefault(f"param {name}", [None] * len(runs))[i] = value
        store = None
        for row in db.outputs(run["id"]):
            if not str(row["kind"]).startswith("metrics"):
                continue
            store = store or _common.run_store(args, run)
            value = store.load(ArtifactRef(row["digest"], row["codec"], row["kind"], row["size"]))
            for key, number in _numbers(value, f"{row['stage']}.{row['port']}"):
                table.setdefault(key, [None] * len(runs))[i] = number
    ids = [r["id"] for r in runs]
    if args.json:
        print(json.dumps({"runs": ids, "rows": table}, indent=2, default=str))
        return _common.EXIT_OK
    from rich.table import Table

    t = Table(show_edge=False)
    t.add_column("param / metric")
    for run_id in ids:
        t.add_column(run_id, justify="right")
    t.add_column("change", justify="right")
    for key, values in table.items():
        first, last = values[0], values[-1]
        if first != first and last != last:  # NaN in both: unchanged
            first = last = None
        change = ""
        if (
            isinstance(first, int | float)
            and isinstance(last, int | float)
            and not isinstance(first, bool)
            and first != last
        ):
            change = f"{last - first:+.4g}"
        elif first != last:
            change = "changed"
        t.add_row(key, *[_cell(v) for v in values], change)
    _common.make_console().print(t)
    return _common.EXIT_OK


def _numbers(value: Any, prefix: str, depth: int = 0) -> list[tuple[str, float]]:
    """Numeric leaves of a metrics value, two levels deep (``scores.metrics.accuracy``, ...)."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [(prefix, value)]
    if isinstance(value, dict) and depth < 2:
        out = []
        for key in sorted(value):
            out += _numbers(value[key], f"{prefix}.{key}", depth + 1)
        return out
    return []


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _bare_port(db: Any, run_id: str, stage: str, ports: list[str]) -> str:
    """The output a bare stage name means, as in a spec's ``inputs``
    (:meth:`pipeflow.core.stage.Stage.default_output`: the type's default port, the only
    output, or ``out``); the same error as the spec's when a stage has several and none is
    the default."""
    import json

    from pipeflow.core.stage_types import default_registry
    from pipeflow.errors import PipeflowError, UsageError

    if len(ports) == 1:
        return ports[0]
    row = next((r for r in db.stage_runs(run_id) if r["stage"] == stage), None)
    default = "out" if "out" in ports else None
    if row is not None:
        try:
            cls = default_registry().get(row["type"])
        except PipeflowError:  # a plugin's type no longer installed: the recorded ports only
            cls = None
        if cls is not None:
            try:
                config = cls.Config.model_validate(json.loads(row["config"] or "{}"))
                default = cls.default_output(config)
            except ValueError:  # a config this release reads otherwise: the type's default
                if cls.default_port in ports:
                    default = cls.default_port
    if default is None or default not in ports:
        raise UsageError(
            f"stage '{stage}' has several outputs ({', '.join(ports)}): write '{stage}.<port>'"
        )
    return default


def _print_output(args: argparse.Namespace, db: Any) -> int:
    import json

    from pipeflow.errors import UsageError
    from pipeflow.store.artifacts import ArtifactRef

    run = db.find_run(args.run_id)
    if run is None:
        raise UsageError(f"no run matches {args.run_id!r}")
    stage, _, port = args.target.partition(".")
    rows = [r for r in db.outputs(run["id"]) if r["stage"] == stage]
    if not rows:
        known = sorted({r["stage"] for r in db.outputs(run["id"])})
        raise UsageError(
            f"run {run['id']} has no outputs of stage '{stage}' (stages with outputs: {', '.join(known) or 'none'})"
        )
    if not port:
        port = _bare_port(db, run["id"], stage, [r["port"] for r in rows])
    row = next((r for r in rows if r["port"] == port), None)
    if row is None:
        raise UsageError(
            f"stage '{stage}' has no output '{port}' (its outputs: {', '.join(r['port'] for r in rows)})"
        )
    store = _common.run_store(args, run)
    if not store.has(row["digest"]) and row["digest"] in (gone := db.collected()):
        from pipeflow.errors import StoreError

        raise StoreError(
            f"output {stage}.{port} of run {run['id']} was deleted by pipeflow store gc at "
            f"{_common.when(gone[row['digest']])} (run the spec again to make it)"
        )
    value = store.load(ArtifactRef(row["digest"], row["codec"], row["kind"], row["size"]))
    if isinstance(value, bytes):
        sys.stdout.buffer.write(value)
        return _common.EXIT_OK
    if hasattr(value, "to_csv") and hasattr(value, "to_string"):  # a table
        if args.format == "csv":
            value.to_csv(sys.stdout, index=False)
        elif args.format == "json":
            print(value.to_json(orient="records", indent=2))
        else:
            print(value.to_string(max_rows=args.rows or None, index=False))
            print(f"[{len(value)} rows x {len(value.columns)} columns]")
        return _common.EXIT_OK
    try:
        print(json.dumps(value, indent=2, default=str))
    except (TypeError, ValueError):
        print(repr(value))
    return _common.EXIT_OK
