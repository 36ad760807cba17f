"""Three ``pipeflow serve`` processes over one S3 store (moto), each with its own spool as three
machines would have: every prediction answered 200 reaches ``<store>/journal/audit`` exactly
once, by the timer while they run and at SIGTERM, and ``pipeflow monitor`` and ``pipeflow
lineage`` on a fourth "machine" (another working directory, an empty spool) see all of them —
lineage reaching the training run in the team's PostgreSQL history."""

from __future__ import annotations

import json
import signal
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from helpers import PREDICT, cli_env, pipeflow_ok, sample_rows, start_server, wait_until

from pipeflow.registry import Registry
from pipeflow.store import journal
from pipeflow.store.artifacts import ArtifactStore
from pipeflow.store.shipping import Journal


def _answered(served: Any, rows: list[dict], requests: int) -> list[str]:
    """Send ``requests`` predictions concurrently; the ids of those answered 200."""

    def one(k: int) -> list[str]:
        with served.client() as c:
            first = k % (len(rows) - 1)
            r = c.post(PREDICT, json=rows[first : first + 2])
        return [p["id"] for p in r.json()["predictions"]] if r.status_code == 200 else []

    with ThreadPoolExecutor(4) as pool:
        return [i for ids in pool.map(one, range(requests)) for i in ids]


@pytest.mark.slow
def test_three_servers_on_one_s3_store_ship_every_acknowledged_prediction(
    tumours: Path, s3: Any, postgres: Any, tmp_path: Path
) -> None:
    url = s3.bucket()
    fs = s3.filesystem()
    for part in ("registry", "objects"):  # the registry of the trained project, now on S3
        fs.put(str(tumours / ".pipeflow" / part), f"{url[5:]}/{part}", recursive=True)
    store = ArtifactStore(url, {"endpoint_url": s3.endpoint, "key": "testing", "secret": "testing"})
    assert Registry(store).resolve("tumours", "production")["version"] == 1
    # two servers ship every second; the third only when it stops
    servers = [
        start_server(
            tumours,
            "tumours@production",
            "--ship-interval",
            interval,
            store=url,  # type: ignore[arg-type]
            env={**s3.env, "PIPEFLOW_SPOOL": str(tmp_path / f"machine-{m}")},
            log_dir=tmp_path,
        )
        for m, interval in enumerate(("1", "1", "3600"))
    ]
    try:
        rows = sample_rows(tumours, 12)
        acked = [_answered(s, rows, 25) for s in servers]
        assert all(len(ids) == 50 for ids in acked), [len(ids) for ids in acked]
        shipped = Journal(None, store, "audit")

        def ids() -> Counter[str]:
            return Counter(r["id"] for r in journal.read(shipped, "predictions"))

        timed = set(acked[0]) | set(acked[1])
        wait_until(lambda: timed <= set(ids()), 30, "the timer to ship two servers' records")
        assert not set(acked[2]) & set(ids())  # the third ships nothing before it stops
    finally:
        for s in servers:
            s.stop()  # SIGTERM: a clean shutdown ships what is left
    for s in servers:  # uvicorn re-raises the SIGTERM it handled once it has shut down
        assert s.proc.returncode in (0, -signal.SIGTERM), s.log.read_text()[-2000:]
        assert "Application shutdown complete" in s.log.read_text()
    every = [i for ids in acked for i in ids]
    assert ids() == Counter(every)  # each acknowledged prediction exactly once
    for m in range(3):  # the spools drained
        assert not any((tmp_path / f"machine-{m}").rglob("*.jsonl"))

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = cli_env(**s3.env, PIPEFLOW_SPOOL=str(elsewhere / "spool"))
    out = pipeflow_ok(
        ["monitor", "tumours@production", "--store", url, "--json"], cwd=elsewhere, env=env
    )
    report = json.loads(out.stdout)
    assert report["rows"] == len(every) == 150
    assert Registry(store).store.fs.ls(f"{url[5:]}/monitoring/tumours/reports")  # saved on S3

    # the team's history is in PostgreSQL: the training project's, migrated there
    db = postgres.database()
    local_db = tumours / ".pipeflow" / "pipeflow.db"
    pipeflow_ok(["store", "migrate", "--db", local_db, "--to", db], cwd=elsewhere, env=env)
    out = pipeflow_ok(
        ["lineage", acked[2][-1], "--store", url, "--db", db, "--json"], cwd=elsewhere, env=env
    )
    lineage = json.loads(out.stdout)
    assert lineage["prediction"]["id"] == acked[2][-1]
    run = Registry(store).resolve("tumours", "production")["run"]["run_id"]
    assert lineage["run_id"] == run and lineage["stages"]
