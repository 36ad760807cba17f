"""Claims for a canary: drifted claims one by one, each answer's true category as feedback.

Used by docs/serving.md (sections "Canary" and "Shadow"). It makes ``--claims`` claims of month
3 with the claims example's own generator (``steps.generate_claims(330, seed=11, month=3,
drift=0.6)``, cleaned by ``steps.clean_claims``: the same rows on every run, no download), posts
them one at a time to ``/v1/models/MODEL/predict`` and, after each answer, the claim's true
category to ``/v1/models/MODEL/feedback``. It prints, per version that answered, how many
requests it answered and how many of them right, then how many feedback posts were recorded,
and exits 0 (1 if a request was not answered 200).

Arguments::

    python docs/examples/canary_client.py URL [--claims 300] [--model claims-categoriser]
        [--steps DIR]

The project it expects: a copy of ``specs/claims`` run once (``claims-categoriser`` v1 in
``production``; docs/serving.md shows the runs that register the versions it compares).
``steps.py`` is imported from ``--steps`` (default: the current directory if it holds one, as
in that copy, else this checkout's ``specs/claims``). Only httpx, the standard library and the
claims example's generator (pandas).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import httpx

FEATURES = ("description", "amount", "policy_type", "region")


def steps_folder(given: str | None) -> Path:
    """Where ``steps.py`` is: ``given``, else the current directory if it has one, else
    ``specs/claims`` of the checkout this file is in."""
    if given:
        return Path(given)
    if Path("steps.py").is_file():
        return Path.cwd()
    return Path(__file__).resolve().parents[2] / "specs" / "claims"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url", help="the server's URL (http://127.0.0.1:8003)")
    parser.add_argument("--claims", type=int, default=300, help="how many claims to post")
    parser.add_argument("--model", default="claims-categoriser", help="the served model's name")
    parser.add_argument("--steps", help="the folder of the claims example's steps.py")
    args = parser.parse_args(argv)
    folder = steps_folder(args.steps)
    if not (folder / "steps.py").is_file():
        parser.error(f"--steps: {folder} has no steps.py (the claims example's, specs/claims)")
    if not 1 <= args.claims <= 300:
        parser.error("--claims must be between 1 and 300")
    sys.path.insert(0, str(folder))
    import steps

    url = args.url.rstrip("/") + f"/v1/models/{args.model}"
    claims = steps.clean_claims(steps.generate_claims(330, seed=11, month=3, drift=0.6), 250000)
    rows = claims["clean"].head(args.claims)
    served: Counter[int] = Counter()
    right: Counter[int] = Counter()
    failed: Counter[int] = Counter()
    recorded = 0
    with httpx.Client(timeout=30) as client:
        for row in rows.to_dict("records"):
            truth = row["category"]
            answer = client.post(url + "/predict", json={k: row[k] for k in FEATURES})
            if answer.status_code != 200:
                failed[answer.status_code] += 1
                continue
            body = answer.json()
            version, (p,) = body["version"], body["predictions"]
            served[version] += 1
            right[version] += p["prediction"] == truth
            label = client.post(url + "/feedback", json={"id": p["id"], "outcome": truth})
            recorded += label.json().get("recorded", 0) if label.status_code == 200 else 0
    print({v: f"{served[v]} requests, {right[v]} right" for v in sorted(served)})
    print(f"feedback: {recorded} of {served.total()} recorded")
    if failed:
        print(f"not answered (status: requests): {dict(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
