"""``pipeflow models export`` and ``pipeflow models import``: models to and from MLflow and ONNX.

The formats and the checks are :mod:`pipeflow.registry.exchange` (MLflow, both ways) and
:mod:`pipeflow.registry.onnx_export` (ONNX, with its predictions checked against the pipeline's on
held-out rows); this module declares the two actions and prints what they did.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeflow.cli import _common

__all__ = ["add_parsers", "export_model", "import_model"]


def add_parsers(msub: Any, where: Callable[..., None]) -> None:
    """Declare ``models export`` and ``models import`` on the ``models`` subparsers."""
    c = msub.add_parser(
        "export",
        help="write NAME@VERSION as an MLflow model directory or an ONNX file",
        description="Export NAME@VERSION (or NAME@ALIAS). --format mlflow writes a directory "
        "`mlflow models serve` and mlflow.pyfunc.load_model accept (sklearn flavour, skops); "
        "--format onnx converts the pipeline with skl2onnx (onnxmltools for xgboost) and checks "
        "its predictions against the pipeline's on held-out rows (the version's evaluation "
        "table, else --data CSV), writing the check beside the file.",
    )
    c.add_argument("ref", metavar="NAME@VERSION")
    c.add_argument("--format", choices=["mlflow", "onnx"], required=True)
    c.add_argument(
        "--output", "-o", required=True, metavar="DIR", help="directory to create (or empty)"
    )
    c.add_argument(
        "--data",
        metavar="CSV",
        help="onnx: held-out rows to check the predictions on (default: the evaluation table)",
    )
    where(c, json=True)
    c = msub.add_parser(
        "import",
        help="register an MLflow model directory (skops sklearn or xgboost JSON/UBJ; never pickle)",
        description="Register the model of an MLflow model directory as the next version of "
        "NAME: the sklearn flavour saved with skops (only types on pipeflow's allow-list) or "
        "the xgboost flavour saved as JSON or UBJ. Pickle and cloudpickle are refused: loading "
        "them runs code from the file.",
    )
    c.add_argument("directory", metavar="DIR")
    c.add_argument("--name", required=True, metavar="NAME", help="the model to add a version to")
    c.add_argument("--alias", metavar="ALIAS", help="point ALIAS at the new version")
    where(c, reason="the alias move", json=True)


def export_model(args: argparse.Namespace, registry: Any, db: Any) -> int:
    from pipeflow.errors import UsageError
    from pipeflow.registry import parse_ref

    name, which = parse_ref(args.ref)
    record = registry.resolve(name, which)
    out = Path(args.output)
    label = f"{name}@{record['version']}"
    if isinstance(record.get("mitigation"), dict):  # the thresholds are pipeflow's, not the file's
        raise UsageError(
            f"{label} has per-group decision thresholds (bias mitigation on "
            f"'{record['mitigation'].get('attribute')}'): an {args.format} export would answer "
            "without them; serve it or score it with pipeflow instead"
        )
    if args.format == "mlflow":
        if args.data:
            raise UsageError("--data is for --format onnx (the MLflow export is the file itself)")
        from pipeflow.registry.exchange import export_mlflow

        summary = export_mlflow(registry.store, record, out)
    else:
        from pipeflow.registry.onnx_export import export_onnx

        summary = export_onnx(registry.store, record, out, data=args.data)
    summary = {"model": label, "format": args.format, **summary}
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    elif args.format == "mlflow":
        print(f"wrote {label} as an MLflow model to {out} ({', '.join(summary['files'])})")
    else:
        check = summary["check"]
        print(
            f"wrote {label} as ONNX to {summary['file']}; checked on {check['rows']} held-out "
            f"rows ({check['source']}): {check['summary']} (written to {summary['check_file']})"
        )
    return _common.EXIT_OK


def import_model(args: argparse.Namespace, registry: Any, db: Any) -> int:
    from pipeflow.registry.exchange import import_mlflow

    record = import_mlflow(registry, Path(args.directory), args.name)
    label = f"{args.name}@{record['version']}"
    event = None
    if args.alias:
        event = registry.move_alias(
            args.name,
            args.alias,
            record["version"],
            reason=args.reason or f"imported from {Path(args.directory).resolve()}",
        )
    if args.json:
        print(json.dumps({**record, "alias_event": event}, indent=2, default=str))
        return _common.EXIT_OK
    existing = " (the same model was registered already)" if record.get("existing") else ""
    print(f"imported {args.directory} as {label}{existing}")
    if event is not None:
        was = f"v{event['from_version']}" if event["from_version"] else "unset"
        print(f"{args.name}@{args.alias} -> v{event['to_version']} (was {was})")
    return _common.EXIT_OK
