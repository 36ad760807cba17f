"""What every command module of the CLI shares: exit codes, the console, error printing, tables,
and the arguments several commands take (``--spec``, ``--store``, ``--db``, ``--executor``,
``--address``, ``--cluster``, ``--set``, ``--debug``, ``--json``, ``--reason``, the model a
command serves, scores or monitors), each declared here once so that its name, choices and help
read the same in every command.

Nothing here imports more than the standard library at import time: the whole command tree is
built for ``pipeflow --help``, which must load no pydantic, Dask, pandas or ML library. Which
store a command means is decided by :func:`locate` alone (``--spec``, else ``--store`` or
``$PIPEFLOW_STORE``, else ``.pipeflow``), so every command resolves it the same way.

Command modules use these through the module, ``from pipeflow.cli import _common`` then
``_common.add_where(c)`` (see :mod:`pipeflow.cli`), not by importing the names one by one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

EXECUTORS = ("sync", "threads", "processes", "distributed")

SPEC_HELP = "use the store and metadata of this spec"
STORE_HELP = "artifact store (default: $PIPEFLOW_STORE or .pipeflow)"
DB_HELP = (
    "metadata database: a SQLite path or postgresql://user@host/db (default: the spec's, "
    "$PIPEFLOW_DB, or pipeflow.db in the store)"
)
ADDRESS_HELP = "Dask scheduler address for --executor distributed (default: a LocalCluster)"
CLUSTER_HELP = (
    "start a Dask cluster for the run from this factory, e.g. dask_jobqueue:SLURMCluster "
    "(--executor distributed; its options come from Dask's configuration, replacing the spec's "
    "executor.options; the spec's executor.adapt applies)"
)


# ------------------------------------------------------------------------- shared arguments


def add_debug(c: argparse.ArgumentParser) -> None:
    """``--debug`` after the command too (``pipeflow run x.yaml --debug``); SUPPRESS keeps the
    top-level flag's value when the command does not repeat it."""
    c.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors"
    )


def add_overrides(c: argparse.ArgumentParser) -> None:
    c.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec value, e.g. params.seed=7 (repeatable)",
    )


def add_where(
    c: argparse.ArgumentParser,
    *,
    store: bool = True,
    db: bool = False,
    exclusive: bool = False,
) -> None:
    """``--spec`` and, as the command reads them, ``--store`` and ``--db``. ``exclusive``: the
    spec and the store are alternatives argparse refuses together."""
    group: Any = c.add_mutually_exclusive_group() if exclusive and store else c
    group.add_argument("--spec", metavar="SPEC", help=SPEC_HELP)
    if store:
        group.add_argument("--store", metavar="URL", help=STORE_HELP)
    if db:
        c.add_argument("--db", metavar="PATH|URL", help=DB_HELP)


def add_model_ref(c: argparse.ArgumentParser) -> None:
    """The model of ``serve``, ``predict`` and ``monitor`` (:func:`pipeflow.registry.parse_ref`)."""
    c.add_argument("ref", metavar="NAME@ALIAS", help="the model: NAME@ALIAS or NAME@VERSION")


def add_json(c: argparse.ArgumentParser, help: str = "machine-readable output") -> None:
    c.add_argument("--json", action="store_true", help=help)


def add_reason(c: argparse.ArgumentParser, recorded_with: str) -> None:
    """``--reason`` of a command that changes the registry: recorded with ``recorded_with``."""
    c.add_argument("--reason", default="", help=f"why (recorded with {recorded_with})")


def add_tag_args(c: argparse.ArgumentParser, help: str | None = None) -> None:
    c.add_argument(
        "--tag",
        dest="tags",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=help or "tag the run (repeatable); runs list --tag KEY=VALUE finds it",
    )


def parse_tags(items: list[str], *, value_optional: bool = False) -> dict[str, str | None]:
    """``KEY=VALUE`` arguments as a dict (``KEY`` alone: None, where ``value_optional``)."""
    from pipeflow.core.tracking import check_name
    from pipeflow.errors import UsageError

    out: dict[str, str | None] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq and not value_optional:
            raise UsageError(f"--tag {item!r}: expected KEY=VALUE")
        try:
            check_name(key, "tag")
        except ValueError as err:
            raise UsageError(f"--tag {item!r}: {err}") from None
        out[key] = value if eq else None
    return out


def add_audit_dir(c: argparse.ArgumentParser) -> None:
    c.add_argument(
        "--audit-dir",
        metavar="DIR",
        help="the serving audit log (default: <store>/audit for a local store; for a remote "
        "one, this machine's spool, $PIPEFLOW_SPOOL, shipped to <store>/journal/audit)",
    )


def add_listen(c: argparse.ArgumentParser, *, port: int, log_level: str) -> None:
    """``--host``, ``--port`` and ``--log-level`` of a command that serves HTTP."""
    c.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    c.add_argument("--port", type=int, default=port, help=f"port (default {port})")
    c.add_argument("--log-level", default=log_level, choices=["debug", "info", "warning", "error"])


def add_executor(
    c: argparse.ArgumentParser,
    *,
    choices: tuple[str, ...] = EXECUTORS,
    default: str | None = None,
    help: str = "override the spec's executor (default: threads)",
    address: bool = True,
    cluster: bool = False,
) -> None:
    """``--executor``, and ``--address`` and ``--cluster`` (alternatives) where the command takes
    them."""
    c.add_argument("--executor", choices=list(choices), default=default, help=help)
    where: Any = c.add_mutually_exclusive_group() if address and cluster else c
    if address:
        where.add_argument("--address", metavar="TCP://HOST:PORT", help=ADDRESS_HELP)
    if cluster:
        where.add_argument("--cluster", metavar="MODULE:ATTR", help=CLUSTER_HELP)


# ---------------------------------------------------------------------------------- output


def make_console(stderr: bool = False) -> Any:
    from rich.console import Console

    # emoji codes off: ``:smile:`` in a stage's error or a model's name is data, shown as it is
    out = Console(stderr=stderr, highlight=False, soft_wrap=True, emoji=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = 160  # logs and CI output: don't squeeze tables into 80 columns
    return out


# AWS's clients log every credential and endpoint lookup at INFO ("Found credentials in
# environment variables."): noise between the lines of a server, a watcher or a monitor pass
_CHATTY_LOGGERS = ("botocore", "aiobotocore", "s3fs", "fsspec")


def log_to_console(level: int, fmt: str) -> None:
    """``logging.basicConfig`` for the commands that log as they go (serve, watch, monitor), with
    the object-store clients held to warnings and errors."""
    import logging

    logging.basicConfig(level=level, format=fmt)
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


def table(*columns: str, title: str | None = None) -> Any:
    """A rich table as the listings print them: no outer edge, these columns, and the title (if
    any) on the left above it."""
    from rich.table import Table

    out = Table(show_edge=False, title=title, title_justify="left")
    for column in columns:
        out.add_column(column)
    return out


def error(message: str, problems: list[str] | None = None) -> None:
    """``error: message`` on stderr, or ``error: N problems found:`` and one line each when a
    spec had several problems. A message of several lines (a library's) stays one error, its
    later lines indented under the first."""
    if problems and len(problems) > 1:
        print(f"error: {len(problems)} problems found:", file=sys.stderr)
        for problem in problems:
            _indented(problem, "  ", "    ")
    else:
        _indented(message, "error: ", "  ")


def report(err: Any) -> int:
    """A :class:`~pipeflow.errors.PipeflowError` printed as :func:`error` prints any (its
    problems listed), and the exit status it stands for."""
    error(str(err), [str(p) for p in getattr(err, "problems", [])])
    return int(err.exit_code)


def _indented(text: str, first: str, rest: str) -> None:
    head, *tail = text.splitlines() or [""]
    print(f"{first}{head}", file=sys.stderr)
    for line in tail:
        print(f"{rest}{line}", file=sys.stderr)


def escape(text: str, *, ends: bool = False) -> str:
    """Data shown through rich must not be read as markup (``[bold]`` in a reason). rich reads
    a backslash as escaping what follows it, so a trailing one is doubled, for the tag that
    follows the text; ``ends``: nothing follows it (the end of a line or a table cell), where
    rich prints a backslash as it is and a doubled one would show."""
    trailing = text.endswith("\\") and not text.endswith("\\\\")
    if "[" not in text and (ends or not trailing):
        return text  # nothing rich would read as markup (and no rich import for it)
    from rich.markup import escape as rich_escape

    out = rich_escape(text)
    return out[:-1] if ends and trailing else out


def when(ts: float | None) -> str:
    """A timestamp as local time to the second, or "" for none."""
    if not ts:
        return ""
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


# ------------------------------------------------------------------------------ resources


def port_free(host: str, port: int, flag: str = "--port") -> None:
    """Refuse a port out of range or a busy address before loading anything (the socket call
    would raise OverflowError; uvicorn would exit 3 after start-up)."""
    import socket

    from pipeflow.errors import UsageError

    if not 0 <= port <= 65535:  # 0: any free port
        raise UsageError(f"{flag} {port}: expected a port from 0 to 65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            raise UsageError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None


def locate(args: argparse.Namespace) -> Any:
    """The workspace (:mod:`pipeflow.workspace`) a command's ``--spec`` / ``--store`` / ``--db``
    arguments name: one rule for every command that reads a store."""
    from pipeflow.workspace import open_workspace

    return open_workspace(
        getattr(args, "spec", None), getattr(args, "store", None), getattr(args, "db", None)
    )


def open_registry(args: argparse.Namespace) -> tuple[Any, Any]:
    """(Registry, metadata DB or None) of the store the arguments name."""
    workspace = locate(args)
    return workspace.registry, workspace.open_db()


def pin_latest(args: argparse.Namespace, db: Any, pipeline: str) -> None:
    """With ``--spec``, ``latest`` (``last``) means the newest run of that spec's pipeline, not of
    whichever pipeline last ran in a store several share: replaced here by its id."""
    from pipeflow.errors import UsageError

    def pin(run_id: str) -> str:
        if run_id not in ("latest", "last"):
            return run_id
        run = db.find_run(run_id, pipeline)
        if run is None:
            raise UsageError(f"no run of pipeline {pipeline!r} in {db.location}")
        return str(run["id"])

    if getattr(args, "run_id", None):
        args.run_id = pin(args.run_id)
    if getattr(args, "run_ids", None):
        args.run_ids = [pin(r) for r in args.run_ids]


def open_history(args: argparse.Namespace) -> Any:
    """The metadata database of ``runs`` and ``data``, which must exist (a spec's is created)."""
    return locate(args).metadata()


def run_store(args: argparse.Namespace, run: Any) -> Any:
    """The artifact store of a recorded run: that of ``--spec``, else of the spec it ran."""
    from pipeflow.errors import UsageError
    from pipeflow.workspace import open_workspace

    spec_path = getattr(args, "spec", None) or run["spec_path"]
    if not spec_path or not os.path.exists(spec_path):
        raise UsageError(
            f"the spec of run {run['id']} ({spec_path}) is gone: pass --spec SPEC to find its store"
        )
    return open_workspace(spec_path).store
