"""SQLite writers SIGKILLed at random moments, 30 times over: the database stays intact, every
write a writer acknowledged survives, and no transaction is ever half applied.

Each round starts two writer processes on one database. They record runs through
:class:`~pipeflow.store.metadata.MetadataDB` as fast as they can (``start_run``, ``record_stages``,
``finish_run``: one transaction each) and print an acknowledgement line after each call returns,
that is after its COMMIT. Both are killed after random delays, so most kills land inside a
transaction or a commit; the next round's writers open the database again, which recovers it.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import hard_kill

pytestmark = pytest.mark.slow

WRITER = """
import sys

from pipeflow.store.artifacts import ArtifactRef
from pipeflow.store.metadata import MetadataDB
from pipeflow.store.database import open_metadata

path, tag = sys.argv[1], sys.argv[2]
db = open_metadata(path)
print("ready", flush=True)
i = 0
while True:
    run_id = f"{tag}-{i}"
    db.start_run(
        run_id, "writers", spec_path="w.yaml", spec_digest="0" * 64, executor="sync",
        params={"i": i, "tag": tag}, overrides=[], stages=[("a", "python"), ("b", "python")],
    )
    print("start", run_id, flush=True)
    digest = f"{i % 256:02x}" * 32
    rows = [
        {"stage": s, "type": "python", "state": "done", "key": digest, "config": {"s": s},
         "outputs": {"out": ArtifactRef(digest, "json", "any", 3)},
         "lineage": {"x": ("a", "out", digest)} if s == "b" else {}}
        for s in ("a", "b")
    ]
    db.record_stages(run_id, rows)
    print("stages", run_id, flush=True)
    db.finish_run(run_id, "done")
    print("finish", run_id, flush=True)
    i += 1
"""

ROUNDS = 30


def _acks(text: str) -> list[tuple[str, str]]:
    """Complete lines only: a line cut by the kill was never acknowledged."""
    out = []
    for line in text.split("\n")[:-1]:
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("start", "stages", "finish"):
            out.append((parts[0], parts[1]))
    return out


def test_writers_killed_mid_commit_never_lose_an_acknowledged_write(tmp_path: Path) -> None:
    db_path = tmp_path / "meta.db"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    rng = random.Random(20240611)
    acked: list[tuple[str, str]] = []
    for n in range(ROUNDS):
        writers = [
            subprocess.Popen(
                [sys.executable, str(script), str(db_path), f"r{n}w{j}"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            for j in range(2)
        ]
        try:
            for w in writers:
                assert w.stdout is not None
                ready = w.stdout.readline()
                assert ready == b"ready\n", (ready, w.stderr.read() if w.stderr else "")
            t0 = time.monotonic()
            kill_at = sorted((rng.uniform(0, 0.25), j) for j in range(len(writers)))
            for at, j in kill_at:
                w = writers[j]
                time.sleep(max(0.0, at - (time.monotonic() - t0)))
                w.send_signal(signal.SIGKILL)
            for w in writers:
                out, err = w.communicate(timeout=30)
                assert w.returncode == -signal.SIGKILL, err.decode()
                acked += _acks(out.decode())
        finally:
            for w in writers:
                hard_kill(w)

        with sqlite3.connect(db_path, timeout=30) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)], f"round {n}"
            # start_run writes the run, its params and its stage rows in one transaction
            torn = conn.execute(
                "SELECT r.id FROM runs r WHERE (SELECT COUNT(*) FROM stage_runs s WHERE s.run_id = r.id) != 2"
                " OR (SELECT COUNT(*) FROM params p WHERE p.run_id = r.id) != 2"
            ).fetchall()
            assert torn == [], f"round {n}: half-applied start_run transactions"
            torn = conn.execute(
                "SELECT run_id FROM stage_runs WHERE state = 'done' AND run_id NOT IN"
                " (SELECT run_id FROM outputs) UNION SELECT run_id FROM stage_runs s WHERE"
                " s.stage = 'b' AND s.state = 'done' AND s.run_id NOT IN (SELECT run_id FROM lineage)"
            ).fetchall()
            assert torn == [], f"round {n}: half-applied record_stages transactions"

    assert len(acked) > ROUNDS, "the writers got some work done before being killed"
    with sqlite3.connect(db_path, timeout=30) as conn:
        runs = dict(conn.execute("SELECT id, state FROM runs").fetchall())
        done_stages = {
            run_id
            for run_id, n in conn.execute(
                "SELECT run_id, COUNT(*) FROM stage_runs WHERE state = 'done' GROUP BY run_id"
            )
            if n == 2
        }
    for what, run_id in acked:
        assert run_id in runs, f"acknowledged {what} of {run_id} is lost"
        if what == "stages":
            assert run_id in done_stages, f"acknowledged stage records of {run_id} are lost"
        if what == "finish":
            assert runs[run_id] == "done", f"acknowledged finish of {run_id} is lost"
