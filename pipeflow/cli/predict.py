"""``pipeflow predict``: batch inference with a registered model, from the command line.

Which registry: ``--spec SPEC`` (that spec's store), else ``--store URL`` or ``$PIPEFLOW_STORE``,
else ``.pipeflow/`` in the current directory (as for ``pipeflow models``). The job is audited in
``--audit-dir``, by default ``<store>/audit`` for a local store; a remote store needs
``--audit-dir`` for an audit record. See :mod:`pipeflow.scoring.batch` for what is read, written
and recorded. ``--resources GPU=1`` sends the scoring tasks only to Dask workers offering that
resource and scores xgboost models there on ``cuda`` (CPU fallback); the device that scored is
printed, and any note on it (:mod:`pipeflow.scoring.device`).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from pipeflow.cli import _common


def add_parsers(sub: Any) -> None:
    c = sub.add_parser(
        "predict",
        help="score a CSV or Parquet file with a registered model (batch inference)",
        description="Score INPUT with NAME@ALIAS (or NAME@VERSION) on Dask and write OUTPUT "
        "(.parquet, .pq, .csv or .csv.gz): prediction_id, the id column, prediction and, for "
        "classifiers, proba_<class>. The output appears only when complete; the job is audited.",
    )
    _common.add_model_ref(c)
    c.add_argument(
        "--input",
        "-i",
        required=True,
        metavar="PATH",
        help="CSV, .csv.gz, Parquet file or directory of Parquet files (a path or fsspec URL)",
    )
    c.add_argument(
        "--output", "-o", required=True, metavar="PATH", help=".parquet, .pq, .csv or .csv.gz"
    )
    c.add_argument("--id-column", metavar="COL", help="input column passed through to the output")
    _common.add_where(c)
    _common.add_executor(
        c,
        choices=("threads", "processes", "distributed"),
        default="threads",
        help="how partitions are scored (default: threads)",
    )
    _common.add_audit_dir(c)
    c.add_argument(
        "--partition-rows",
        type=int,
        default=100_000,
        metavar="N",
        help="about this many rows per partition (default: 100000)",
    )
    c.add_argument(
        "--no-probabilities",
        dest="probabilities",
        action="store_false",
        help="classifiers: leave out the proba_<class> columns",
    )
    c.add_argument(
        "--resources",
        metavar="NAME=N[,NAME=N]",
        help="Dask worker resources every scoring task needs (e.g. GPU=1: only workers started "
        "with --resources GPU=1 score, xgboost on cuda there, else on the CPU); a local executor "
        "scores in this process as that worker",
    )
    c.add_argument(
        "--explain",
        action="store_true",
        help="add each row's explanation: explain_base and contrib_<feature> per input column "
        "(summing to the model's margin), explain_class for classifiers",
    )
    _common.add_debug(c)
    c.set_defaults(handler=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    from pipeflow.errors import UsageError
    from pipeflow.registry import parse_ref
    from pipeflow.scoring.batch import predict_file
    from pipeflow.scoring.device import parse_resources
    from pipeflow.store.journal import default_folder

    if args.address and args.executor != "distributed":
        raise UsageError(
            f"--address only applies to --executor distributed (got --executor {args.executor})"
        )
    if args.partition_rows < 1:
        raise UsageError(f"--partition-rows must be at least 1, got {args.partition_rows}")
    resources = parse_resources(args.resources) if args.resources is not None else None
    name, which = parse_ref(args.ref)
    registry, db = _common.open_registry(args)
    if db is not None:
        db.close()
    audit = args.audit_dir or default_folder(registry.store.url)
    scheduler: Any = args.executor
    if args.executor == "distributed":
        from pipeflow.execute.cluster import ADDRESS_ENV

        scheduler = args.address or os.environ.get(ADDRESS_ENV) or "distributed"
    summary = predict_file(
        registry,
        name,
        which,
        args.input,
        args.output,
        audit_folder=audit,
        id_column=args.id_column,
        partition_rows=args.partition_rows,
        scheduler=scheduler,
        probabilities=args.probabilities,
        resources=resources,
        explain=args.explain,
    )
    rate = summary["rows"] / summary["duration_s"] if summary["duration_s"] else 0.0
    print(
        f"predicted {summary['rows']:,} rows with {name}@{summary['version']} "
        f"({args.ref}) -> {args.output} in {summary['duration_s']:.2f}s "
        f"({rate:,.0f} rows/s), batch {summary['id']}"
    )
    if resources:
        workers = ", ".join(
            f"{w} ({v['partitions']} partition{'' if v['partitions'] == 1 else 's'}, {v['device']})"
            for w, v in summary["workers"].items()
        )
        print(f"scored on {summary['device']} by {workers}")
    for note in summary["notes"]:
        print(f"note: {note}")
    if audit is None:
        print(
            f"not audited: the store {registry.store.url} is remote; pass --audit-dir",
            file=sys.stderr,
        )
    return _common.EXIT_OK
