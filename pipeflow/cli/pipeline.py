"""``pipeflow run``, ``check``, ``graph``, ``stages`` and ``schema``: a spec from the command line.

``run`` draws its progress through :mod:`pipeflow.cli.display`; running a pipeline from Python
(:func:`pipeflow.run`) draws nothing.
"""

from __future__ import annotations

import argparse
from typing import Any

from pipeflow.cli import _common


def add_parsers(sub: Any) -> None:
    def spec_cmd(
        name: str, help_: str, handler: Any, *, several: bool = False
    ) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_, description=help_)
        if several:
            c.add_argument("spec", metavar="SPEC", nargs="+", help="pipeline YAML file(s)")
        else:
            c.add_argument("spec", metavar="SPEC", help="pipeline YAML file")
        _common.add_overrides(c)
        _common.add_debug(c)
        c.set_defaults(handler=handler)
        return c

    r = spec_cmd("run", "run a pipeline", cmd_run)
    _common.add_executor(r, cluster=True)
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
    _common.add_tag_args(r)
    r.add_argument("--note", metavar="TEXT", help="a note recorded with the run (runs show)")

    spec_cmd(
        "check",
        "compile specs without running them (exit 2 on a spec error in any)",
        cmd_check,
        several=True,
    )
    g = spec_cmd("graph", "show the compiled DAG", cmd_graph)
    g.add_argument("--format", choices=["text", "mermaid", "dot"], default="text")

    s = sub.add_parser(
        "stages", help="list installed stage types with their ports and config fields"
    )
    _common.add_json(s)
    _common.add_debug(s)
    s.set_defaults(handler=cmd_stages)
    sc = sub.add_parser(
        "schema", help="print the JSON Schema of pipeline specs (for yaml-language-server)"
    )
    sc.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")
    _common.add_debug(sc)
    sc.set_defaults(handler=cmd_schema)


def cmd_check(args: argparse.Namespace) -> int:
    """Each spec compiled in turn: ``ok: ...`` for a sound one, its errors for another (as
    ``pipeflow`` prints any error), every spec checked; exit 2 if any had a spec error."""
    from pipeflow.errors import PipeflowError

    specs = [args.spec] if isinstance(args.spec, str) else list(args.spec)
    if len(specs) == 1:
        return _check(specs[0], args.overrides)  # an error is the command's, as before
    worst = _common.EXIT_OK
    for spec in specs:
        try:
            _check(spec, args.overrides)
        except PipeflowError as err:
            worst = max(worst, _common.report(err))
    return worst


def _check(spec: str, overrides: list[str]) -> int:
    from pipeflow.core.compiler import compile_pipeline
    from pipeflow.core.static import static_problems
    from pipeflow.errors import SpecError
    from pipeflow.spec.load import load

    pipeline = compile_pipeline(load(spec, overrides))
    problems = static_problems(pipeline)
    if problems:
        raise SpecError(problems)
    edges = len(pipeline.edges)  # the DAG's edges (no networkx: see core.compiler)
    print(
        f"ok: {spec}: pipeline '{pipeline.name}', {len(pipeline.stages)} stages, {edges} edges",
        flush=True,  # before a later spec's error on stderr
    )
    return _common.EXIT_OK


def cmd_graph(args: argparse.Namespace) -> int:
    from pipeflow.core.compiler import compile_pipeline
    from pipeflow.core.render import render
    from pipeflow.spec.load import load

    print(render(compile_pipeline(load(args.spec, args.overrides)), args.format))
    return _common.EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from pipeflow.core import gcpause

    # the session's modules (pydantic models, the compiler) are with us until the process ends:
    # imported with no collection, then out of the collector's sight (pipeflow.core.gcpause)
    with gcpause.paused(freeze=True):
        from pipeflow.cli.display import RunDisplay
        from pipeflow.cli.plain import run_console
        from pipeflow.runner.session import run

        display = RunDisplay(run_console(), quiet=args.quiet, debug=getattr(args, "debug", False))
    # the process exits after the run: what the run froze stays frozen (pipeflow.core.gcpause)
    with display, gcpause.kept_frozen():
        report = run(
            args.spec,
            overrides=args.overrides,
            executor=args.executor,
            address=args.address,
            cluster=args.cluster,
            only=args.only,
            from_=args.from_,
            force=args.force,
            on_event=display.event,
            on_plan=display.plan,
            tags=_common.parse_tags(args.tags),
            note=args.note,
            on_progress=display.progress if display.live else None,
        )
    display.summary(report)
    return _common.EXIT_OK if report.ok else _common.EXIT_FAILED


def cmd_stages(args: argparse.Namespace) -> int:
    import json

    from pipeflow.core.compiler import describe_type
    from pipeflow.core.stage_types import StageTypeLoadError, default_registry

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
        _common.error(problem["error"])
    exit_code = StageTypeLoadError.exit_code if broken else _common.EXIT_OK
    if args.json:
        print(json.dumps({n: described.get(n) or broken[n] for n in reg.names()}, indent=2))
        return exit_code
    from rich.table import Table

    console = _common.make_console()
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
    return _common.EXIT_OK
