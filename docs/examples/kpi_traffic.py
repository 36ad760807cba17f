"""Labelled traffic for live bias and business metrics: predictions, then feedback with a group.

Used by docs/monitoring.md (section on live bias and business metrics). It predicts ``--rows``
rows of the project's ``data.csv`` (sampled with a fixed seed, so every run posts the same rows)
in one request to ``/v1/models/MODEL/predict``, then posts each answer's true outcome to
``/feedback`` with the row's ``region`` as an attribute (kept out of the model's features), every
other outcome in the ``south`` contradicting the model's truth so the groups' accuracy differs.
It prints the feedback answer (``{"recorded":120}``) and exits 1 if a request was refused.

Arguments::

    python docs/examples/kpi_traffic.py [URL] [--data data.csv] [--rows 120] [--model tumours]

``URL`` defaults to http://127.0.0.1:8000. The data: the registry test project's ``data.csv``
with its ``diagnosis`` label and a ``region`` column (docs/registry.md, ``make_kpis.py``).
httpx, pandas and the standard library.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import httpx
import pandas as pd

FLIP = {"benign": "malignant", "malignant": "benign"}


def traffic(
    url: str, data: str = "data.csv", n: int = 120, model: str = "tumours"
) -> tuple[list[dict[str, Any]], httpx.Response]:
    """Post the predictions and their feedback; each row's id, prediction, outcome and region,
    and the feedback answer."""
    rows = pd.read_csv(data).sample(n, random_state=2)
    truth, regions = rows.pop("diagnosis").tolist(), rows.pop("region").tolist()
    with httpx.Client(base_url=f"{url.rstrip('/')}/v1/models/{model}", timeout=60) as server:
        answer = server.post("/predict", json=rows.to_dict("records"))
        answer.raise_for_status()
        labelled = [
            {"id": a["id"], "prediction": a["prediction"], "region": g,
             "outcome": FLIP[t] if g == "south" and k % 2 else t}
            for k, (a, t, g) in enumerate(
                zip(answer.json()["predictions"], truth, regions, strict=True))
        ]  # fmt: skip
        feedback = [{"id": r["id"], "outcome": r["outcome"], "attributes": {"region": r["region"]}}
                    for r in labelled]  # fmt: skip
        return labelled, server.post("/feedback", json=feedback)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url", nargs="?", default="http://127.0.0.1:8000", help="the server's URL")
    parser.add_argument("--data", default="data.csv", help="the rows, with diagnosis and region")
    parser.add_argument("--rows", type=int, default=120, help="how many rows to post")
    parser.add_argument("--model", default="tumours", help="the served model's name")
    args = parser.parse_args(argv)
    try:
        _, answer = traffic(args.url, args.data, args.rows, args.model)
    except httpx.HTTPStatusError as e:
        print(f"{e.request.url}: status {e.response.status_code}: {e.response.text}")
        return 1
    print(answer.text)
    return 0 if answer.status_code == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
