"""Traffic across a rollback: clients posting a row at a time, answers counted by status, version.

Used by docs/serving.md (section "Hot reload: promote, rollback, blue-green"). ``CLIENTS`` threads
each post the same row to ``/v1/models/MODEL/predict`` as fast as the server answers, for
``SECONDS``; run it in the background and move the alias meanwhile. It prints one line, the
answers by ``(status, version)`` — a request that got no answer at all counts as status 0 — and
exits 1 if any request was not answered 200.

Arguments::

    python docs/examples/rollback_traffic.py URL SECONDS CLIENTS [--model claims-categoriser]
        [--row JSON]

``--row`` is the request's row as a JSON object (default: a claim of ``specs/claims``). Only
httpx and the standard library.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter

import httpx

CLAIM = {"description": "burst pipe flooded the kitchen", "amount": 3200.5,
         "policy_type": "home", "region": "north"}  # fmt: skip


def client(url: str, row: dict, until: float, counts: Counter, lock: threading.Lock) -> None:
    """Post ``row`` to ``url`` until ``until`` (monotonic), counting (status, version)."""
    with httpx.Client(timeout=30) as http:
        while time.monotonic() < until:
            try:
                r = http.post(url, json=row)
                key = (r.status_code, r.json().get("version") if r.status_code == 200 else None)
            except httpx.HTTPError:
                key = (0, None)
            with lock:
                counts[key] += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url", help="the server's URL (http://127.0.0.1:8000)")
    parser.add_argument("seconds", type=float, help="how long to send")
    parser.add_argument("clients", type=int, help="how many clients at once")
    parser.add_argument("--model", default="claims-categoriser", help="the served model's name")
    parser.add_argument("--row", type=json.loads, default=CLAIM, help="the row, a JSON object")
    args = parser.parse_args(argv)
    if not isinstance(args.row, dict):
        parser.error("--row must be a JSON object: one row, feature name to value")
    url = f"{args.url.rstrip('/')}/v1/models/{args.model}/predict"
    counts: Counter = Counter()
    lock = threading.Lock()
    until = time.monotonic() + args.seconds
    threads = [threading.Thread(target=client, args=(url, args.row, until, counts, lock))
               for _ in range(args.clients)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(dict(counts.most_common()))
    return 0 if all(status == 200 for status, _ in counts) else 1


if __name__ == "__main__":
    sys.exit(main())
