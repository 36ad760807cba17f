"""A/B traffic for a canary, a ramp or a shadow: one row at a time round the replicas, as users.

Used by docs/serving.md (sections "Progressive delivery" and "Shadow"). For SECONDS it posts one
row of scikit-learn's bundled breast-cancer data (no download) at a time to
``/v1/models/MODEL/predict``, round the replicas of URLS, each request with an ``X-User`` header
naming one of ``--users`` users (``user-0`` ... ``user-199``: the key of ``--route-by
header:X-User``), and posts each answer's true diagnosis as feedback to the *other* replica
(the next one round URLS; the same one when there is only one), so live accuracy is measured
over the fleet's journal, not one replica's.

Arguments::

    python docs/examples/ab_client.py URLS SECONDS [--model tumours] [--users 200]

``URLS`` is one server's URL or several separated by commas
(``http://127.0.0.1:8211,http://127.0.0.1:8212``). It prints the answers counted by
``(status, version)`` (status 0: no answer, the connection failed), then how many feedback posts
were recorded, and exits 0 (1 if no request was answered 200).

The project it expects: the registry test project (``tests/registry/project`` with the
``data.csv`` that ``pipeflow.testing.tumour_table`` writes, run once: ``tumours`` v1 in
``production``), whose features are the breast-cancer measurements with ``_`` for spaces and a
``size_band`` (``large`` when the mean radius is over 15, else ``small``); the labels are
``malignant`` and ``benign``. docs/serving.md shows the commands that make it. Only httpx, the
standard library and scikit-learn's bundled data.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from typing import Any

import httpx


def tumour_rows() -> tuple[list[dict[str, Any]], list[str]]:
    """The 569 breast-cancer rows as request records (the project's features) and their diagnoses."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    truth = frame.pop("target").map({0: "malignant", 1: "benign"}).tolist()
    frame["size_band"] = ["large" if r > 15 else "small" for r in frame["mean radius"]]
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    return frame.to_dict(orient="records"), truth


def traffic(urls: list[str], seconds: float, model: str, users: int | None) -> int:
    """Post for ``seconds`` round ``urls`` (as one of ``users`` users in ``X-User``; None: no
    header), each answer's diagnosis as feedback to the next replica; print the counts; the
    exit status."""
    rows, truth = tumour_rows()
    predict = f"/v1/models/{model}/predict"
    feedback = f"/v1/models/{model}/feedback"
    answers: Counter[tuple[int, int | None]] = Counter()
    recorded = posted = 0
    clients = [httpx.Client(base_url=u, timeout=30) for u in urls]
    try:
        end, i = time.monotonic() + seconds, 0
        while time.monotonic() < end:
            row = i % len(rows)
            user = {"X-User": f"user-{i % users}"} if users else None
            try:
                r = clients[i % len(urls)].post(predict, json=rows[row], headers=user)
            except httpx.HTTPError:
                answers[(0, None)] += 1
                i += 1
                continue
            body = r.json()
            answers[(r.status_code, body.get("version"))] += 1
            if r.status_code == 200:
                label = {"id": body["predictions"][0]["id"], "outcome": truth[row]}
                posted += 1
                try:
                    f = clients[(i + 1) % len(urls)].post(feedback, json=label)
                    recorded += f.json().get("recorded", 0) if f.status_code == 200 else 0
                except httpx.HTTPError:
                    pass
            i += 1
    finally:
        for c in clients:
            c.close()
    print(dict(answers))
    print(f"feedback: {recorded} of {posted} recorded")
    return 0 if any(status == 200 for status, _ in answers) else 1


def arguments(doc: str, argv: list[str] | None, *, keyed: bool) -> argparse.Namespace:
    """URLS, SECONDS and --model (and --users when ``keyed``), checked; ``urls`` split."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("urls", help="a server's URL, or several separated by commas")
    parser.add_argument("seconds", type=float, help="how long to send requests")
    parser.add_argument("--model", default="tumours", help="the served model's name")
    if keyed:
        parser.add_argument("--users", type=int, default=200, help="how many X-User keys")
    args = parser.parse_args(argv)
    args.urls = [u.strip().rstrip("/") for u in args.urls.split(",") if u.strip()]
    if not args.urls or args.seconds <= 0 or getattr(args, "users", 1) < 1:
        parser.error("URLS needs at least one URL; SECONDS and --users must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, argv, keyed=True)
    return traffic(args.urls, args.seconds, args.model, args.users)


if __name__ == "__main__":
    sys.exit(main())
