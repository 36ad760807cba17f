"""The ``pipeflow`` command.

argparse rather than typer/click: the whole command tree must parse and print ``--help`` in well
under 0.15 s, and typer's import alone costs about that on these machines. Every command imports
what it needs inside its own function, so ``pipeflow --help`` loads no pydantic, networkx, Dask,
pandas or ML library.

One module per command group, each with ``add_parsers(sub)`` declaring its commands and setting
the handler each runs (``set_defaults(handler=...)``); :mod:`pipeflow.cli._common` declares the
arguments several commands share and decides which store a command means. ``COMMANDS`` names the
group of each command: a command line builds (and imports) its own group's parsers only.

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


#: the command groups, in the order ``pipeflow --help`` lists their commands
GROUPS = ("scaffold", "pipeline", "history", "models", "predict", "serve", "ui", "monitor", "watch")
#: the group declaring each command. A command line naming one (after ``--debug`` at most) builds
#: that group's parsers only: importing and building every group's took ~12 ms of CPU per command
#: on the 2-core VM (25 -> 13 ms with ``run``'s only). Anything else (no command, ``--help``, a
#: typo) builds them all, so help and errors read as before. tests/cli checks it against the groups.
COMMANDS = {
    "init": "scaffold",
    **dict.fromkeys(("run", "check", "graph", "stages", "schema"), "pipeline"),
    **dict.fromkeys(("runs", "data", "store"), "history"),
    **dict.fromkeys(("models", "lineage"), "models"),
    "predict": "predict",
    "serve": "serve",
    "ui": "ui",
    **dict.fromkeys(("monitor", "drift"), "monitor"),
    "watch": "watch",
}


def _parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser of the whole command tree; given ``argv``, of the part it needs (``COMMANDS``)."""
    import importlib

    p = argparse.ArgumentParser(
        prog="pipeflow",
        description="Compile YAML pipeline specs into a typed DAG and run them on Dask.",
        epilog="Exit codes: 0 ok, 1 a stage or run failed, 2 bad spec or arguments. Docs: docs/ in the repository.",
    )
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    named = _group_named(argv) if argv is not None else None
    for name in (named,) if named else GROUPS:
        importlib.import_module(f"pipeflow.cli.{name}").add_parsers(sub)
    return p


def _group_named(argv: list[str]) -> str | None:
    """The group of the command ``argv`` names first, after ``--debug`` at most: any other word
    before it (``--help``, an abbreviation argparse would expand) may need the whole tree."""
    for word in argv:
        if word != "--debug":
            return COMMANDS.get(word)
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _parser(argv)
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
