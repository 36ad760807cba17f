"""``pipeflow ui``: the web dashboard (runs, models, live traffic, drift, alerts) of one store.

Which store: ``--spec SPEC`` (the store and metadata of that spec), else ``--store URL`` or
``$PIPEFLOW_STORE``, else ``.pipeflow/`` in the current directory; the metadata database is the
spec's, ``--db PATH``, ``$PIPEFLOW_DB``, or ``pipeflow.db`` inside a local store (as for
``pipeflow models``). The dashboard only reads; it binds 127.0.0.1 unless told otherwise, and has
no login, so ``--host 0.0.0.0`` shows the store to anyone who can reach the port.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from pipeflow.cli._common import add_audit_dir, add_debug, add_listen, add_where, locate, port_free

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_parsers(sub: Any) -> None:
    c = sub.add_parser(
        "ui",
        help="web dashboard: runs, models, live traffic, drift and alerts",
        description="Serve a read-only dashboard of a store: runs and stages, models and alias "
        "history, live traffic from the serving audit log, drift reports and alerts.",
    )
    add_where(c, db=True, exclusive=True)
    add_audit_dir(c)
    add_listen(c, port=8050, log_level="warning")
    c.add_argument("--open", action="store_true", help="open the dashboard in a web browser")
    add_debug(c)
    c.set_defaults(handler=cmd_ui)


def cmd_ui(args: argparse.Namespace) -> int:
    import threading
    import webbrowser

    import uvicorn

    from pipeflow.ui.app import create_app

    port_free(args.host, args.port)  # a busy port is bad input (exit 2), said before anything
    located = locate(args)
    audit_dir = os.path.abspath(args.audit_dir) if args.audit_dir else None
    loopback = args.host in LOOPBACK
    app = create_app(
        located.store,
        located.db_path,
        audit_dir,
        allowed_hosts=["127.0.0.1", "localhost", "[::1]"] if loopback else None,
    )
    shown = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{shown}:{args.port}/"
    print(f"pipeflow ui for {located.store.url} on {url} (Ctrl-C to stop)", flush=True)
    if not loopback:
        print(f"warning: the dashboard has no login and is reachable on {args.host}", flush=True)
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level=args.log_level, access_log=False
    )
    server = uvicorn.Server(config)
    if args.open:

        def open_when_up() -> None:
            import time

            while not server.started and not server.should_exit:
                time.sleep(0.1)
            if server.started:
                webbrowser.open(url)

        threading.Thread(target=open_when_up, daemon=True).start()
    server.run()
    return 0
