"""``pipeflow ui``: the web dashboard (runs, models, live traffic, drift, alerts) of one store.

Which store: ``--spec SPEC`` (the store and metadata of that spec), else ``--store URL`` or
``$PIPEFLOW_STORE``, else ``.pipeflow/`` in the current directory; the metadata database is the
spec's, ``--db PATH``, ``$PIPEFLOW_DB``, or ``pipeflow.db`` inside a local store (as for
``pipeflow models``). The dashboard only reads; it binds 127.0.0.1 unless told otherwise.

Who may look: ``--tokens FILE`` and ``$PIPEFLOW_TOKENS`` are the bearer tokens of ``pipeflow
serve`` (:mod:`pipeflow.auth`; the same file can serve both), and the dashboard needs one with the
``ui`` scope or ``*``. Without tokens it is open, which is what one wants on loopback (one person's
machine) and nothing else: a ``--host`` that is not a loopback address (127.0.0.0/8, ``::1``,
``localhost``) without tokens is refused before anything binds, unless ``--insecure-no-auth``
says that something in front (an authenticating proxy, a private network) does the job.
Tokens that none grants ``ui`` are refused too: the dashboard would lock everyone out.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from typing import Any

from pipeflow.cli import _common

LOOPBACK_NAMES = ("localhost",)


def add_parsers(sub: Any) -> None:
    c = sub.add_parser(
        "ui",
        help="web dashboard: runs, models, live traffic, drift and alerts",
        description="Serve a read-only dashboard of a store: runs and stages, models and alias "
        "history, live traffic from the serving audit log, drift reports and alerts.",
    )
    _common.add_where(c, db=True, exclusive=True)
    _common.add_audit_dir(c)
    _common.add_listen(c, port=8050, log_level="warning")
    c.add_argument(
        "--tokens",
        metavar="FILE",
        help="bearer tokens, as pipeflow serve's: TOKEN [SCOPE,SCOPE] per line; the dashboard "
        "needs the 'ui' scope (or '*'); also $PIPEFLOW_TOKENS='TOKEN=SCOPES;...'",
    )
    c.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="serve a --host other than loopback without tokens (something in front must "
        "authenticate: the dashboard shows the whole store to anyone who reaches it)",
    )
    c.add_argument("--open", action="store_true", help="open the dashboard in a web browser")
    _common.add_debug(c)
    c.set_defaults(handler=cmd_ui)


def cmd_ui(args: argparse.Namespace) -> int:
    import threading
    import webbrowser

    import uvicorn

    from pipeflow.auth import Tokens
    from pipeflow.ui.app import SCOPE, create_app

    tokens = Tokens(login(args))  # before binding anything: a refusal binds nothing
    _common.port_free(
        args.host, args.port
    )  # a busy port is bad input (exit 2), said before anything
    located = _common.locate(args)
    audit_dir = os.path.abspath(args.audit_dir) if args.audit_dir else None
    loopback = is_loopback(args.host)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    app = create_app(
        located.store,
        located.db_path,
        audit_dir,
        allowed_hosts=sorted({"127.0.0.1", "localhost", "[::1]", shown}) if loopback else None,
        tokens=tokens,
    )
    url = f"http://{shown}:{args.port}/"
    print(f"pipeflow ui for {located.store.url} on {url} (Ctrl-C to stop)", flush=True)
    if tokens:
        print(f"login: {tokens.granting(SCOPE)} token(s) with the '{SCOPE}' scope", flush=True)
    elif not loopback:
        print(
            f"warning: --insecure-no-auth: the dashboard has no login and is reachable on "
            f"{args.host}",
            flush=True,
        )
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


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only: ``localhost``, 127.0.0.0/8 or ``::1`` (an
    IPv4-mapped loopback too). Any other name or address, ``0.0.0.0`` and ``::`` included, is not."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


def login(args: argparse.Namespace) -> dict[str, list[str]] | None:
    """The dashboard's tokens (``--tokens``, ``$PIPEFLOW_TOKENS``), or None where it may be open:
    on loopback, or with ``--insecure-no-auth``. Refused (exit 2): another host without tokens
    and without that flag, the flag with tokens, tokens of which none grants the dashboard."""
    from pipeflow.auth import ENV, read_tokens
    from pipeflow.errors import UsageError
    from pipeflow.ui.app import SCOPE

    tokens = read_tokens(args.tokens)
    if tokens and args.insecure_no_auth:
        raise UsageError(
            f"--insecure-no-auth with tokens ({'--tokens' if args.tokens else '$' + ENV}): "
            "drop one (with tokens the dashboard asks for one)"
        )
    if tokens:
        if not any(SCOPE in s or "*" in s for s in tokens.values()):
            raise UsageError(
                f"no token of {args.tokens or '$' + ENV} has the '{SCOPE}' scope (or '*'): "
                f"nobody could log in to the dashboard; add ' {SCOPE}' to a token's line"
            )
        return tokens
    if not is_loopback(args.host) and not args.insecure_no_auth:
        raise UsageError(
            f"--host {args.host} is not a loopback address, and the dashboard shows the whole "
            f"store: give it tokens (--tokens FILE or ${ENV}, with the '{SCOPE}' scope), or pass "
            "--insecure-no-auth if something in front of it authenticates"
        )
    return None
