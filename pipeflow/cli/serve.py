"""``pipeflow serve NAME@ALIAS``: serve a registered model over HTTP (see pipeflow.serving.app)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from pipeflow.cli import _common


def add_parsers(sub: Any) -> None:
    c = sub.add_parser(
        "serve",
        help="serve a registered model over HTTP (native, KServe v2 and MLflow routes)",
        description="Serve NAME@ALIAS (or NAME@VERSION). The alias is watched: promote or roll "
        "back and the server switches versions without a restart.",
    )
    _common.add_model_ref(c)
    _common.add_listen(c, port=8000, log_level="info")
    c.add_argument("--workers", type=int, default=1, help="server processes (default 1)")
    c.add_argument(
        "--canary", metavar="NAME@VERSION", help="a challenger taking --weight of traffic"
    )
    c.add_argument("--weight", type=float, help="canary share of traffic (default 0.1)")
    c.add_argument(
        "--route-by",
        metavar="header:NAME|field:NAME",
        help="sticky canary assignment: requests with the same key (a header, or a field of the "
        "first row) go to the same version on every replica; without the key, at random",
    )
    c.add_argument(
        "--ramp",
        metavar="PERCENTS",
        help="ramp the canary up over the fleet, e.g. 5,25,50,100, while its limits hold; "
        "after the last step, promote it to the served alias",
    )
    c.add_argument(
        "--ramp-every",
        default="5m",
        metavar="DURATION",
        help="the least time a ramp step lasts (90s, 5m, 1h; default 5m)",
    )
    c.add_argument(
        "--ramp-min-requests",
        type=int,
        metavar="N",
        help="canary rows over the fleet before a ramp step may end (default: --min-requests)",
    )
    c.add_argument(
        "--ramp-gate",
        action="append",
        default=[],
        metavar="METRIC>=VALUE",
        help="a gate the canary's recorded metrics must pass for the ramp to promote it "
        "(repeatable; as pipeflow models promote --gate)",
    )
    c.add_argument(
        "--shadow",
        metavar="NAME@VERSION",
        help="score every answered request with this version too, off the answer path "
        "(audited as shadow, never answered)",
    )
    c.add_argument(
        "--shadow-queue",
        type=int,
        default=1000,
        metavar="N",
        help="requests waiting for the shadow before new ones are dropped (default 1000)",
    )
    c.add_argument(
        "--max-error-rate", type=float, default=0.05, help="withdraw the canary above this"
    )
    c.add_argument("--max-p95-ms", type=float, help="withdraw the canary above this p95 latency")
    c.add_argument(
        "--min-accuracy", type=float, help="withdraw the canary below this live accuracy"
    )
    c.add_argument(
        "--min-requests",
        type=int,
        default=20,
        help="canary requests before judging it (default 20)",
    )
    c.add_argument(
        "--guard",
        metavar="LIMITS|FILE",
        help="roll the alias back when its holder fails live, over every replica: "
        "'error_rate=0.05,p95_ms=200,min_accuracy=0.9,window=5m,min_requests=200' "
        "(also cooldown=), or a YAML file of those keys and sinks:",
    )
    c.add_argument(
        "--tokens",
        metavar="FILE",
        help="bearer tokens, one per line: TOKEN [SCOPE,SCOPE] (scopes: predict, feedback, metrics, "
        "ui, *); "
        "or $PIPEFLOW_TOKENS='TOKEN=SCOPES;...'",
    )
    _common.add_audit_dir(c)
    c.add_argument("--audit-sync", action="store_true", help="fsync the audit log on every batch")
    c.add_argument(
        "--ship-interval",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="a remote store: seconds between shipping the audit log's segments to "
        "<store>/journal/audit (default 10; also at shutdown)",
    )
    c.add_argument(
        "--reload-interval", type=float, default=2.0, help="seconds between alias checks"
    )
    c.add_argument(
        "--reject-unusual",
        action="store_true",
        help="refuse (422) inputs outside what the model saw in training, instead of flagging them",
    )
    c.add_argument(
        "--max-body-mb", type=float, default=5.0, help="largest request body (default 5)"
    )
    c.add_argument(
        "--batch-wait-ms",
        type=float,
        default=5.0,
        help="longest a micro-batch waits for requests still arriving or clients taking turns "
        "(default 5; 0: never)",
    )
    c.add_argument(
        "--drain-seconds",
        type=float,
        default=0.0,
        metavar="S",
        help="on SIGTERM, first answer readiness probes 503 for S seconds while still serving, "
        "so a load balancer takes this replica out before it stops (default 0; --workers 1)",
    )
    _common.add_where(c)
    _common.add_debug(c)
    c.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from pipeflow.auth import read_tokens
    from pipeflow.errors import UsageError
    from pipeflow.monitoring.alerts import parse_duration
    from pipeflow.registry import parse_ref
    from pipeflow.registry.gates import split_gate
    from pipeflow.serving.app import create_app
    from pipeflow.serving.config import ServeConfig
    from pipeflow.serving.guard import parse_guard
    from pipeflow.serving.rollout import parse_ramp, parse_route_by

    name, which = parse_ref(args.ref)
    ramp = parse_ramp(args.ramp) if args.ramp else None
    try:
        ramp_every = parse_duration(args.ramp_every)
    except ValueError as err:
        raise UsageError(f"--ramp-every {args.ramp_every}: {err}") from None
    for text in args.ramp_gate:
        split_gate(text, "--ramp-gate")
    if (ramp or args.route_by) and not args.canary:
        raise UsageError(
            f"--{'ramp' if ramp else 'route-by'} routes to a canary: add --canary {name}@VERSION"
        )
    if ramp and args.weight is not None:
        raise UsageError("--ramp sets the canary's weight step by step: drop --weight")
    weight = 0.1 if args.weight is None else args.weight
    # the ranges several flags share, named once: (lowest, highest, what is expected)
    share = (0, 1, "a share between 0 and 1")
    requests = (1, 1e12, "1 or more requests")
    interval = (0.1, 86400, "0.1 seconds or more")
    for flag, value, low, high, what in (
        ("--weight", weight, *share),
        ("--ramp-every", ramp_every, 0.1, 1e9, "a duration of 0.1 seconds or more"),
        ("--ramp-min-requests", args.ramp_min_requests, *requests),
        ("--shadow-queue", args.shadow_queue, 1, 1e7, "1 or more requests"),
        ("--batch-wait-ms", args.batch_wait_ms, 0, 1000, "0 to 1000 milliseconds"),
        ("--workers", args.workers, 1, 512, "1 or more processes"),
        ("--max-body-mb", args.max_body_mb, 0.001, 1e6, "a size above 0 megabytes"),
        ("--reload-interval", args.reload_interval, *interval),
        ("--min-requests", args.min_requests, *requests),
        ("--ship-interval", args.ship_interval, *interval),
        ("--max-error-rate", args.max_error_rate, *share),
        ("--min-accuracy", args.min_accuracy, *share),
        ("--max-p95-ms", args.max_p95_ms, 0.001, 1e9, "milliseconds above 0"),
        ("--drain-seconds", args.drain_seconds, 0, 3600, "0 to 3600 seconds"),
    ):
        if value is not None and not low <= value <= high:
            raise UsageError(f"{flag} {value:g}: expected {what}")
    if args.drain_seconds and args.workers > 1:
        raise UsageError(
            "--drain-seconds needs --workers 1 (each replica one process; scale with replicas)"
        )
    # --spec SPEC, --store URL, $PIPEFLOW_STORE or .pipeflow; the server needs only the store,
    # and a local one by its absolute path (--workers: every process resolves the same folder)
    store = _common.locate(args).store
    config = ServeConfig(
        store_url=store.url,
        storage_options=dict(store.storage_options),
        model=name,
        which=which or "production",
        canary=args.canary,
        canary_weight=weight if args.canary else 0.0,
        max_error_rate=args.max_error_rate,
        max_p95_ms=args.max_p95_ms,
        min_accuracy=args.min_accuracy,
        min_requests=args.min_requests,
        audit_dir=os.path.abspath(args.audit_dir) if args.audit_dir else None,
        audit_sync=args.audit_sync,
        ship_interval_s=args.ship_interval,
        tokens=read_tokens(args.tokens),
        reload_interval_s=args.reload_interval,
        reject_unusual=args.reject_unusual,
        max_body_bytes=int(args.max_body_mb * 1_000_000),
        batch_wait_ms=args.batch_wait_ms,
        drain_s=args.drain_seconds,
        guard=parse_guard(args.guard) if args.guard else None,
        route_by=parse_route_by(args.route_by) if args.route_by else None,
        ramp=ramp,
        ramp_every_s=ramp_every,
        ramp_min_requests=args.ramp_min_requests,
        ramp_gates=list(args.ramp_gate),
        shadow=args.shadow,
        shadow_queue=args.shadow_queue,
    )
    _common.port_free(args.host, args.port)
    import logging

    _common.log_to_console(
        getattr(logging, args.log_level.upper()), "%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_app(config)  # loads the model now: a bad name or file fails before binding
    from pipeflow.core import gcpause

    gcpause.settle_for_serving()  # the model frozen, young garbage collected less often
    server = app.state.server
    print(
        f"serving {server.primary.label} ({name}@{config.which}) on http://{args.host}:{args.port}"
        + (
            f", canary {server.canary.label} at {server.rollout.weight:.0%}"
            if server.canary
            else ""
        )
        + (" (withdrawn by the fleet)" if server.canary and server.rollout.withdrawn else "")
        + (
            f" (ramp step {server.rollout.step + 1} of {len(server.rollout.plan['steps'])}: "
            + ", ".join(f"{100 * s:g}%" for s in server.rollout.plan["steps"])
            + f", every {args.ramp_every})"
            if server.canary and server.rollout.plan and not server.rollout.withdrawn
            else ""
        )
        + (f", routed by {config.route_by}" if config.route_by else "")
        + (f", shadow {server.shadow.handle.label}" if server.shadow else "")
        + (f", guarded ({_limits(config.guard)})" if config.guard else "")
        + f"; audit log in {server.audit_dir}"
        + (
            f", shipped to {server.shipper.describe()} every {config.ship_interval_s:g}s"
            if server.shipper is not None
            else ""
        ),
        flush=True,
    )
    if args.workers > 1:
        os.environ["PIPEFLOW_SERVE_CONFIG"] = config.to_json()
        uvicorn.run(
            "pipeflow.serving.app:app_from_env",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level=args.log_level,
            access_log=False,
        )
    else:
        from pipeflow.serving.drain import GracefulServer

        served = GracefulServer(
            uvicorn.Config(
                app, host=args.host, port=args.port, log_level=args.log_level, access_log=False
            ),
            app.state.drain,
        )
        served.run()
        if not served.started:  # uvicorn.run's exit status when the port could not be bound
            return 3
    return 0


def _limits(guard: dict[str, Any]) -> str:
    keys = ("error_rate", "p95_ms", "min_accuracy", "window", "min_requests")
    return ", ".join(
        f"{k} {guard[k]:g}" if isinstance(guard[k], float) else f"{k} {guard[k]}"
        for k in keys
        if k in guard
    )
