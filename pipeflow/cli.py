"""The ``pipeflow`` command.

argparse rather than typer/click: the whole command tree must parse and print ``--help`` in well
under 0.15 s, and typer's import alone costs about that on these machines. Every command imports
what it needs inside its own function, so ``pipeflow --help`` loads no pydantic, networkx, Dask,
pandas or ML library.

Exit codes: 0 success, 1 a stage or run failed, 2 bad input (spec or arguments). Errors print as
one message; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pipeflow",
        description="Compile YAML pipeline specs into a typed DAG and run them on Dask.",
        epilog="Exit codes: 0 ok, 1 a stage or run failed, 2 bad spec or arguments. Docs: docs/ in the repository.",
    )
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def spec_cmd(name: str, help_: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_, description=help_)
        c.add_argument("spec", metavar="SPEC", help="pipeline YAML file")
        c.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a spec value, e.g. params.seed=7 (repeatable)",
        )
        c.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show tracebacks for errors",
        )
        return c

    r = spec_cmd("run", "run a pipeline")
    r.add_argument(
        "--executor",
        choices=["sync", "threads", "processes", "distributed"],
        help="override the spec's executor (default: threads)",
    )
    r.add_argument(
        "--address",
        metavar="TCP://HOST:PORT",
        help="Dask scheduler address for --executor distributed (default: a LocalCluster)",
    )
    r.add_argument(
        "--only",
        action="append",
        metavar="STAGE",
        help="run only this stage (repeatable); its inputs must be stored already",
    )
    r.add_argument(
        "--from",
        dest="from_",
        action="append",
        metavar="STAGE",
        help="run this stage and everything downstream of it (repeatable)",
    )
    r.add_argument(
        "--force", action="store_true", help="re-run stages even when a stored result matches"
    )
    r.add_argument("--quiet", "-q", action="store_true", help="print only the final summary")

    spec_cmd("check", "compile a spec without running it (exit 2 on a spec error)")
    g = spec_cmd("graph", "show the compiled DAG")
    g.add_argument("--format", choices=["text", "mermaid", "dot"], default="text")

    s = sub.add_parser(
        "stages", help="list installed stage types with their ports and config fields"
    )
    s.add_argument("--json", action="store_true", help="machine-readable output")
    sc = sub.add_parser(
        "schema", help="print the JSON Schema of pipeline specs (for yaml-language-server)"
    )
    sc.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")

    data = sub.add_parser(
        "data", help="dataset versions read by ingest stages, and the runs that used them"
    )
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
        c.add_argument("--json", action="store_true", help="machine-readable output")
        c.add_argument("--spec", metavar="SPEC", help="use the store of this spec")
        c.add_argument(
            "--db",
            metavar="PATH",
            help="metadata database (default: .pipeflow/pipeflow.db or $PIPEFLOW_DB)",
        )

    from pipeflow.cli_predict import add_parser as add_predict
    from pipeflow.cli_registry import add_parsers

    add_parsers(sub)
    add_predict(sub)
    from pipeflow.cli_serve import add_parser as add_serve

    add_serve(sub)
    from pipeflow.cli_ui import add_parser as add_ui

    add_ui(sub)
    from pipeflow.cli_monitor import add_parser as add_monitor

    add_monitor(sub)
    from pipeflow.cli_watch import add_parser as add_watch

    add_watch(sub)

    st = sub.add_parser("store", help="inspect the artifact store and its metadata")
    st_sub = st.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    c = st_sub.add_parser(
        "check",
        help="verify a store: every object hashes to its name, every record and manifest names "
        "objects present, nothing half-written is reachable, the database is intact",
        description="Verify a store and its metadata database; print each problem (exit 1 if any).",
    )
    c.add_argument("--spec", metavar="SPEC", help="check the store and database of this spec")
    c.add_argument(
        "--store", metavar="URL", help="store root (default: $PIPEFLOW_STORE or .pipeflow)"
    )
    c.add_argument(
        "--db",
        metavar="PATH",
        help="metadata database (default: $PIPEFLOW_DB, or pipeflow.db in a local store)",
    )
    c.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
    )

    runs = sub.add_parser("runs", help="list and inspect recorded runs")
    runs_sub = runs.add_subparsers(dest="runs_command", metavar="ACTION", required=True)
    for name, help_ in (
        ("list", "list recent runs"),
        ("show", "show one run: stages, timings, cache hits, errors, outputs, lineage"),
        ("output", "print one output of a stage in a run (a table, JSON value, array or bytes)"),
        ("compare", "compare runs side by side: params and metrics"),
    ):
        c = runs_sub.add_parser(name, help=help_, description=help_)
        if name in ("show", "output"):
            c.add_argument("run_id", metavar="RUN", help="run id (a unique prefix, or 'latest')")
        if name == "compare":
            c.add_argument(
                "run_ids",
                metavar="RUN",
                nargs="+",
                help="two or more run ids (unique prefixes, or 'latest')",
            )
            c.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "show":
            c.add_argument("--json", action="store_true", help="machine-readable output")
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
        c.add_argument("--spec", metavar="SPEC", help="use the store of this spec")
        c.add_argument(
            "--db",
            metavar="PATH",
            help="metadata database (default: .pipeflow/pipeflow.db or $PIPEFLOW_DB)",
        )
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.version:
        from pipeflow import __version__

        print(f"pipeflow {__version__}")
        return EXIT_OK
    if not args.command:
        parser.print_help()
        return EXIT_OK
    handler = {
        "run": cmd_run,
        "check": cmd_check,
        "graph": cmd_graph,
        "stages": cmd_stages,
        "schema": cmd_schema,
        "runs": cmd_runs,
        "data": cmd_data,
        "store": cmd_store,
        "models": _registry_cmd("cmd_models"),
        "lineage": _registry_cmd("cmd_lineage"),
        "predict": _lazy("pipeflow.cli_predict", "cmd_predict"),
        "serve": _lazy("pipeflow.cli_serve", "cmd_serve"),
        "ui": _lazy("pipeflow.cli_ui", "cmd_ui"),
        "monitor": _lazy("pipeflow.cli_monitor", "cmd_monitor"),
        "watch": _lazy("pipeflow.cli_watch", "cmd_watch"),
    }[args.command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `pipeflow schema | head`: the reader left; not an error
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as err:
        from pipeflow.errors import PipeflowError

        if getattr(args, "debug", False):
            import traceback

            traceback.print_exc()
        if isinstance(err, PipeflowError):
            _error(str(err), [str(p) for p in getattr(err, "problems", [])])
            return err.exit_code
        _error(f"internal error: {type(err).__name__}: {err} (run with --debug for the traceback)")
        return EXIT_FAILED


def _lazy(module: str, name: str) -> Any:
    """A command handler imported only when its command runs (keeps --help fast)."""

    def handler(args: argparse.Namespace) -> int:
        from importlib import import_module

        return int(getattr(import_module(module), name)(args))

    return handler


def _registry_cmd(name: str) -> Any:
    return _lazy("pipeflow.cli_registry", name)


def _error(message: str, problems: list[str] | None = None) -> None:
    """``error: message`` on stderr, or ``error: N problems found:`` and one line each when a
    spec had several problems. A message of several lines (a library's) stays one error, its
    later lines indented under the first."""
    if problems and len(problems) > 1:
        print(f"error: {len(problems)} problems found:", file=sys.stderr)
        for problem in problems:
            _indented(problem, "  ", "    ")
    else:
        _indented(message, "error: ", "  ")


def _indented(text: str, first: str, rest: str) -> None:
    head, *tail = text.splitlines() or [""]
    print(f"{first}{head}", file=sys.stderr)
    for line in tail:
        print(f"{rest}{line}", file=sys.stderr)


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 160  # logs and CI output: don't squeeze tables into 80 columns
    return console


# ---------------------------------------------------------------------------- commands


def cmd_check(args: argparse.Namespace) -> int:
    from pipeflow.core.compiler import compile_pipeline
    from pipeflow.spec.load import load

    pipeline = compile_pipeline(load(args.spec, args.overrides))
    edges = pipeline.graph.number_of_edges()
    print(
        f"ok: {args.spec}: pipeline '{pipeline.name}', {len(pipeline.stages)} stages, {edges} edges"
    )
    return EXIT_OK


def cmd_graph(args: argparse.Namespace) -> int:
    from pipeflow.core.compiler import compile_pipeline
    from pipeflow.core.render import render
    from pipeflow.spec.load import load

    print(render(compile_pipeline(load(args.spec, args.overrides)), args.format))
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from pipeflow.progress import RunDisplay
    from pipeflow.runner.session import run

    display = RunDisplay(_console(), quiet=args.quiet, debug=getattr(args, "debug", False))
    with display:
        report = run(
            args.spec,
            overrides=args.overrides,
            executor=args.executor,
            address=args.address,
            only=args.only,
            from_=args.from_,
            force=args.force,
            on_event=display.event,
            on_plan=display.plan,
        )
    display.summary(report)
    return EXIT_OK if report.ok else EXIT_FAILED


def cmd_stages(args: argparse.Namespace) -> int:
    import json

    from pipeflow.core.compiler import describe_type
    from pipeflow.core.registry import StageTypeLoadError, default_registry

    reg = default_registry()
    described, broken = {}, {}
    for name in reg.names():
        try:  # one broken plugin must not hide the types that load
            info = describe_type(reg.get(name))
        except StageTypeLoadError as err:
            broken[name] = {"origin": reg.origin(name), "error": str(err)}
            continue
        info["origin"] = reg.origin(name)
        described[name] = info
    for problem in broken.values():
        _error(problem["error"])
    exit_code = StageTypeLoadError.exit_code if broken else EXIT_OK
    if args.json:
        print(json.dumps({n: described.get(n) or broken[n] for n in reg.names()}, indent=2))
        return exit_code
    from rich.table import Table

    console = _console()
    for name, info in described.items():
        t = Table(
            title=f"[bold]{name}[/] v{info['version']} ({info['origin']}): {info['description']}",
            title_justify="left",
            show_edge=False,
        )
        t.add_column("config field")
        t.add_column("type")
        t.add_column("default")
        t.add_column("description")
        for fname, f in info["config"].items():
            t.add_row(
                fname,
                f["type"],
                "required" if f["required"] else str(f["default"]),
                f["description"],
            )
        ins = ", ".join(f"{k}: {v['kind']}" for k, v in info["inputs"].items())
        if info["extra_inputs"]:
            ins = f"{ins + ', ' if ins else ''}any name: {info['extra_inputs']}"
        outs = ", ".join(f"{k}: {v['kind']}" for k, v in info["outputs"].items())
        console.print(t)
        console.print(
            f"  inputs: {ins or 'none'}   outputs: {outs or 'none'} (defaults; some types derive ports from config)\n"
        )
    return exit_code


def cmd_schema(args: argparse.Namespace) -> int:
    import json

    from pipeflow.core.schema import spec_schema

    text = json.dumps(spec_schema(), indent=2)
    if args.output:
        from pipeflow.errors import UsageError

        try:
            with open(args.output, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
        except OSError as err:
            raise UsageError(f"cannot write {args.output}: {err.strerror or err}") from None
    else:
        print(text)
    return EXIT_OK


def _db(args: argparse.Namespace) -> Any:
    from pipeflow.errors import UsageError
    from pipeflow.store.metadata import MetadataDB

    if args.spec:
        from pipeflow.runner.session import open_store
        from pipeflow.spec.load import load

        return open_store(load(args.spec))[1]
    path = args.db or os.environ.get("PIPEFLOW_DB") or os.path.join(".pipeflow", "pipeflow.db")
    if not os.path.exists(path):
        raise UsageError(f"no pipeflow metadata at {path}: pass --spec SPEC or --db PATH")
    return MetadataDB(path)


def cmd_runs(args: argparse.Namespace) -> int:
    from pipeflow.progress import show_run, show_runs

    db = _db(args)
    try:
        if args.runs_command == "list":
            show_runs(_console(), db, limit=args.limit, pipeline=args.pipeline)
            return EXIT_OK
        if args.runs_command == "output":
            return _print_output(args, db)
        if args.runs_command == "compare":
            return _compare(args, db)
        return show_run(_console(), db, args.run_id, as_json=args.json)
    finally:
        db.close()


def cmd_data(args: argparse.Namespace) -> int:
    import json

    from pipeflow.errors import UsageError
    from pipeflow.progress import _when

    db = _db(args)
    try:
        versions = db.dataset_versions()
        if args.data_command == "list":
            if args.json:
                print(json.dumps(versions, indent=2, default=str))
                return EXIT_OK
            from rich.table import Table

            t = Table(show_edge=False)
            for col in (
                "version",
                "source",
                "pipeline",
                "stage",
                "first seen",
                "last used",
                "runs",
            ):
                t.add_column(col)
            for v in versions:
                t.add_row(
                    v["version"][:12],
                    v["source"],
                    v["pipeline"],
                    v["stage"],
                    _when(v["first_seen"]),
                    _when(v["last_used"]),
                    str(v["runs"]),
                )
            _console().print(t)
            return EXIT_OK
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
            return EXIT_OK
        console = _console()
        console.print(f"[bold]dataset version {version}[/]")
        for m in matches:
            console.print(f"  source {m['source']}  (pipeline {m['pipeline']}, stage {m['stage']})")
        console.print(f"  used by {len(uses)} run(s):")
        for u in uses:
            console.print(
                f"    {u['run_id']}  {u['pipeline']}  {u['state']}  {_when(u['started'])}  output {str(u['digest'] or '')[:16]}"
            )
        return EXIT_OK
    finally:
        db.close()


def cmd_store(args: argparse.Namespace) -> int:
    """``pipeflow store check``: one line per problem on stdout, exit 1 if there is any."""
    from pipeflow.cli_registry import locate
    from pipeflow.errors import UsageError
    from pipeflow.store.check import scan_store

    if args.spec and (args.store or args.db):
        raise UsageError("give --spec SPEC, or --store URL (and --db PATH), not both")
    located = locate(args)
    db = located.open_db()
    if db is None:
        raise UsageError(f"no metadata database at {located.db_path}: pass --db PATH")
    store = located.store
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
        return EXIT_FAILED
    print(f"ok: store {report.url}: {counted}, database {db.path} intact")
    return EXIT_OK


def _run_store(args: argparse.Namespace, run: Any) -> Any:
    from pipeflow.errors import UsageError
    from pipeflow.runner.session import open_store
    from pipeflow.spec.load import load

    spec_path = getattr(args, "spec", None) or run["spec_path"]
    if not spec_path or not os.path.exists(spec_path):
        raise UsageError(
            f"the spec of run {run['id']} ({spec_path}) is gone: pass --spec SPEC to find its store"
        )
    return open_store(load(spec_path))[0]


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
            store = store or _run_store(args, run)
            value = store.load(ArtifactRef(row["digest"], row["codec"], row["kind"], row["size"]))
            for key, number in _numbers(value, f"{row['stage']}.{row['port']}"):
                table.setdefault(key, [None] * len(runs))[i] = number
    ids = [r["id"] for r in runs]
    if args.json:
        print(json.dumps({"runs": ids, "rows": table}, indent=2, default=str))
        return EXIT_OK
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
    _console().print(t)
    return EXIT_OK


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


def _print_output(args: argparse.Namespace, db: Any) -> int:
    import json

    from pipeflow.errors import UsageError
    from pipeflow.runner.session import open_store
    from pipeflow.spec.load import load
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
        if len(rows) > 1:
            raise UsageError(
                f"stage '{stage}' has outputs {', '.join(r['port'] for r in rows)}: write {stage}.<port>"
            )
        port = rows[0]["port"]
    row = next((r for r in rows if r["port"] == port), None)
    if row is None:
        raise UsageError(
            f"stage '{stage}' has no output '{port}' (its outputs: {', '.join(r['port'] for r in rows)})"
        )
    spec_path = args.spec or run["spec_path"]
    if not spec_path or not os.path.exists(spec_path):
        raise UsageError(
            f"the spec of run {run['id']} ({spec_path}) is gone: pass --spec SPEC to find its store"
        )
    store = open_store(load(spec_path))[0]
    value = store.load(ArtifactRef(row["digest"], row["codec"], row["kind"], row["size"]))
    if isinstance(value, bytes):
        sys.stdout.buffer.write(value)
        return EXIT_OK
    if hasattr(value, "to_csv") and hasattr(value, "to_string"):  # a table
        if args.format == "csv":
            value.to_csv(sys.stdout, index=False)
        elif args.format == "json":
            print(value.to_json(orient="records", indent=2))
        else:
            print(value.to_string(max_rows=args.rows or None, index=False))
            print(f"[{len(value)} rows x {len(value.columns)} columns]")
        return EXIT_OK
    try:
        print(json.dumps(value, indent=2, default=str))
    except (TypeError, ValueError):
        print(repr(value))
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
