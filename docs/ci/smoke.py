"""Smoke-test a served model with real requests before it is promoted (standard library only).

Used by the CI pipelines beside it (github-actions.yml, gitlab-ci.yml): after ``pipeflow run``
has registered a model and moved ``staging`` to it, the job starts ``pipeflow serve
NAME@staging`` and runs this script against it. It

1. waits for the server's ``/ready`` (``--wait`` seconds at most),
2. reads what is served (``GET /v1/models/NAME``: the version, the alias, the features),
3. sends every row of ``--rows`` (a CSV with the features and the ``--target`` column: the
   held-out rows of the run, from ``pipeflow runs output RUN split.test --format csv``), in
   requests of ``--batch`` rows, features only,
4. checks that every request answered 200 with one prediction per row, and that the accuracy
   of the answers against the target is at least ``--min-accuracy``.

It prints one line per check and exits 0 when all pass, 1 when one fails (naming it), 2 on bad
arguments or an unreadable CSV. The predictions it makes are real served predictions: they are
in the server's audit log like any other.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any


def _get(url: str, timeout: float = 10.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:  # noqa: S310 (http only)
            return reply.status, json.loads(reply.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def _post(url: str, body: Any, timeout: float = 60.0) -> tuple[int, Any]:
    data = json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, headers={"content-type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:  # noqa: S310
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def _wait_ready(base: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            status, body = _get(f"{base}/ready", timeout=2.0)
            if status == 200:
                return
            last = f"HTTP {status}: {body}"
        except OSError as err:  # not listening yet
            last = str(err)
        time.sleep(0.5)
    raise SystemExit(f"FAIL ready: {base}/ready did not answer 200 within {seconds:g} s ({last})")


def _value(text: str, dtype: str) -> Any:
    """A CSV cell as the JSON value the signature expects (empty: null)."""
    if text == "":
        return None
    if dtype.startswith(("float", "int")):
        return float(text)
    if dtype == "bool":
        return text.strip().lower() in ("true", "1")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8080")
    parser.add_argument("--model", required=True, help="the served model's name")
    parser.add_argument("--rows", required=True, help="CSV of feature columns and --target")
    parser.add_argument("--target", required=True, help="the column holding the true outcome")
    parser.add_argument("--min-accuracy", type=float, default=0.0)
    parser.add_argument("--batch", type=int, default=100, help="rows per request")
    parser.add_argument("--wait", type=float, default=120.0, help="seconds to wait for /ready")
    args = parser.parse_args(argv)
    base = args.url.rstrip("/")

    try:
        with open(args.rows, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as err:
        print(f"error: cannot read {args.rows}: {err.strerror or err}", file=sys.stderr)
        return 2
    if not rows:
        print(f"error: {args.rows} holds no rows", file=sys.stderr)
        return 2
    if args.target not in rows[0]:
        print(f"error: {args.rows} has no column {args.target!r}", file=sys.stderr)
        return 2

    _wait_ready(base, args.wait)
    print(f"ok   ready: {base}/ready")
    status, served = _get(f"{base}/v1/models/{args.model}")
    if status != 200:
        print(f"FAIL describe: GET /v1/models/{args.model} answered {status}: {served}")
        return 1
    features = served["signature"]["features"]
    missing = [f["name"] for f in features if f["name"] not in rows[0]]
    if missing:
        print(f"error: {args.rows} lacks the served features {missing}", file=sys.stderr)
        return 2
    label = f"{args.model}@{served.get('alias') or served['version']} (v{served['version']})"
    print(f"ok   describe: {label}, {len(features)} features")

    correct = answered = 0
    started = time.monotonic()
    for start in range(0, len(rows), args.batch):
        chunk = rows[start : start + args.batch]
        body = [{f["name"]: _value(r[f["name"]], f["dtype"]) for f in features} for r in chunk]
        status, reply = _post(f"{base}/v1/models/{args.model}/predict", body)
        if status != 200:
            print(f"FAIL predict: rows {start + 1}-{start + len(chunk)} answered {status}: {reply}")
            return 1
        predictions = reply["predictions"]
        if len(predictions) != len(chunk) or reply["version"] != served["version"]:
            print(
                f"FAIL predict: rows {start + 1}-{start + len(chunk)}: {len(predictions)} "
                f"predictions by v{reply['version']} for {len(chunk)} rows to v{served['version']}"
            )
            return 1
        answered += len(chunk)
        correct += sum(
            str(p["prediction"]) == r[args.target] for p, r in zip(predictions, chunk, strict=True)
        )
    seconds = time.monotonic() - started
    accuracy = correct / answered
    print(f"ok   predict: {answered} rows answered in {seconds:.2f} s, none refused")
    verdict = "ok  " if accuracy >= args.min_accuracy else "FAIL"
    print(f"{verdict} accuracy: {accuracy:.4f} on {answered} rows (at least {args.min_accuracy:g})")
    return 0 if accuracy >= args.min_accuracy else 1


if __name__ == "__main__":
    sys.exit(main())
