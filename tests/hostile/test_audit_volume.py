"""A million predictions through a real `pipeflow serve`: the audit log holds exactly the
acknowledged ones (same ids, none dropped, none duplicated, the same outputs).

1,000 requests of 1,000 rows from four concurrent clients. On a 2-core machine the traffic takes
about 35 s (roughly 30,000 rows/s with client and server sharing the cores) and reading the
1.1 GB of audit records back about 10 s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers import MODEL, PREDICT, Served, counter, sample_rows

from pipeflow.store import journal as audit

TOTAL = 1_000_000
BATCH = 1_000
CLIENTS = 4


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_million_audited_predictions_equal_the_acknowledged_ones(
    server_factory: Callable[..., tuple[Served, Path]], hostile_project: Path
) -> None:
    served, store = server_factory()
    rows = sample_rows(hostile_project, 600)
    body = orjson.dumps((rows * (BATCH // len(rows) + 1))[:BATCH])
    acknowledged: dict[str, Any] = {}
    duplicates: list[str] = []
    lock = threading.Lock()

    def client(requests: int) -> None:
        with served.client() as c:
            for _ in range(requests):
                r = c.post(PREDICT, content=body, headers={"content-type": "application/json"})
                assert r.status_code == 200, r.text[:300]
                answer = orjson.loads(r.content)
                assert answer["model"] == MODEL and len(answer["predictions"]) == BATCH
                got = {p["id"]: p["prediction"] for p in answer["predictions"]}
                with lock:
                    duplicates.extend(got.keys() & acknowledged.keys())
                    acknowledged.update(got)

    started = time.perf_counter()
    per_client = TOTAL // BATCH // CLIENTS
    with ThreadPoolExecutor(CLIENTS) as pool:
        for done in [pool.submit(client, per_client) for _ in range(CLIENTS)]:
            done.result()
    elapsed = time.perf_counter() - started
    assert not duplicates, f"{len(duplicates)} ids answered twice, e.g. {duplicates[:3]}"
    assert len(acknowledged) == TOTAL
    print(f"\n{TOTAL:,} predictions in {elapsed:.1f} s: {TOTAL / elapsed:,.0f} rows/s")

    audited: dict[str, Any] = {}
    rows = 0
    for path in audit.files(store / "audit", "predictions"):
        with open(path, "rb") as fh:
            for line in fh:
                assert line.endswith(b"\n"), f"a torn record in {path}"
                for record in audit.rows_of(orjson.loads(line)):  # a request's record: its rows
                    audited[record["id"]] = record["output"]
                    rows += 1
    assert rows == len(audited), f"{rows - len(audited)} audit records duplicated"
    missing = acknowledged.keys() - audited.keys()
    extra = audited.keys() - acknowledged.keys()
    assert not missing and not extra, (len(missing), len(extra))
    assert audited == acknowledged  # and each with the output the client was given
    with served.client() as c:
        assert counter(c.get("/metrics").text, "pipeflow_predictions_total") == TOTAL
