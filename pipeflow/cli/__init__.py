"""The ``pipeflow`` command.

argparse rather than typer/click: the whole command tree must parse and print ``--help`` in well
under 0.15 s, and typer's import alone costs about that on these machines. Every command imports
what it needs inside its own function, so ``pipeflow --help`` loads no pydantic, networkx, Dask,
pandas or ML library.

One module per command group, each with ``add_parsers(sub)`` declaring its commands and setting
the handler each runs (``set_defaults(handler=...)``); :mod:`pipeflow.cli._common` declares the
arguments several commands share and decides which store a command means.

Modules, not names: a module of this package refers to the shared helpers through their module,
``from pipeflow.cli import _common`` then ``_common.add_listen(c, ...)`` or ``_common.EXIT_OK``,
never ``from pipeflow.cli._common import add_listen`` (the "import modules, not names" rule of
Google's Python style guide). A reader sees at each call where the helper lives, and a command's
imports do not grow a line for each helper it starts to use.

============  ============================================================================
module        commands
============  ============================================================================
scaffold      ``init`` (a new project from a template)
pipeline      ``run``, ``check``, ``graph``, ``stages``, ``schema``
history       ``runs list|show|output|compare``, ``data list|show``, ``store check|gc|migrate``
models        ``models list|show|promote|rollback|archive|restore|card``, ``lineage``
predict       ``predict`` (batch inference)
serve         ``serve`` (the HTTP model server)
ui            ``ui`` (the dashboard)
monitor       ``monitor``, ``drift`` (two tables)
watch         ``watch`` (triggers)
display       terminal presentation of runs (progress, ``runs`` tables), no command
plain         ``run``'s output where rich would print plain text anyway, no command
============  ============================================================================

Exit codes: 0 success, 1 a stage or run failed, 2 bad input (spec or arguments). Errors print as
one message; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from pipeflow.cli import _common
from pipeflow.cli._common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK  # the package's API

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_OK", "main"]


def _parser() -> argparse.ArgumentParser:
    from pipeflow.cli import (
        history,
        models,
        monitor,
        pipeline,
        predict,
        scaffold,
        serve,
        ui,
        watch,
    )

    p = argparse.ArgumentParser(
        prog="pipeflow",
        description="Compile YAML pipeline specs into a typed DAG and run them on Dask.",
        epilog="Exit codes: 0 ok, 1 a stage or run failed, 2 bad spec or arguments. Docs: docs/ in the repository.",
    )
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for group in (scaffold, pipeline, history, models, predict, serve, ui, monitor, watch):
        group.add_parsers(sub)
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
    try:
        return int(args.handler(args))
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
            return _common.report(err)
        _common.error(
            f"internal error: {type(err).__name__}: {err} (run with --debug for the traceback)"
        )
        return EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
