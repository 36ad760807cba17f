"""The watch lease (pipeflow.runner.lease): one holder at a time, taken over after expiry or
release, and two real ``pipeflow watch`` processes on one store of which only the holder retrains."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

from helpers import PIPEFLOW, hard_kill, pipeflow, processes, start, wait_until

from pipeflow.runner.lease import Lease
from pipeflow.store import journal as audit
from pipeflow.store.artifacts import ArtifactStore


def test_one_holder_at_a_time_and_a_release_hands_over_at_once(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    a, b = Lease(store, "p", ttl=30), Lease(store, "p", ttl=30)
    assert a.acquire() and a.held
    assert not b.acquire() and not b.held
    assert b.seen is not None and b.seen["holder"] == a.holder
    assert a.acquire(), "the holder renews"
    a.release()
    assert b.acquire(), "a released lease is free at once"
    assert b.previous is not None and b.previous["released"] is True
    assert not a.acquire()


def test_an_expired_lease_is_taken_over_and_its_old_holder_learns_it(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    a, b = Lease(store, "p", ttl=0.5), Lease(store, "p", ttl=0.5)
    assert a.acquire()
    assert not b.acquire()
    time.sleep(0.6)  # a did not renew
    assert b.acquire()
    assert b.previous is not None and b.previous["holder"] == a.holder
    assert not a.acquire(), "a renewal after a takeover fails: the next generation is b's"
    assert a.seen is not None and a.seen["holder"] == b.holder


def test_old_generations_are_pruned(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    lease = Lease(store, "p", ttl=30)
    for _ in range(6):
        assert lease.acquire()
    assert store.list_names("leases/p") == ["000000000005.json", "000000000006.json"]


def _contend(
    root: str, barrier: multiprocessing.synchronize.Barrier, out: multiprocessing.Queue
) -> None:
    lease = Lease(ArtifactStore(root), "p", ttl=30)
    barrier.wait()
    out.put(lease.acquire())


def test_of_many_processes_taking_over_a_stale_lease_at_once_exactly_one_wins(
    tmp_path: Path,
) -> None:
    """The delete-then-create race of a single lease file would let two win; creating the next
    generation exclusively lets one."""
    ctx = multiprocessing.get_context("fork")
    for round_ in range(3):
        root = str(tmp_path / f"store{round_}")
        stale = Lease(ArtifactStore(root), "p", ttl=0.05)
        assert stale.acquire()
        time.sleep(0.1)
        barrier, out = ctx.Barrier(6), ctx.Queue()
        procs = [ctx.Process(target=_contend, args=(root, barrier, out)) for _ in range(6)]
        for proc in procs:
            proc.start()
        won = [out.get(timeout=30) for _ in procs]
        for proc in procs:
            proc.join(timeout=30)
        assert won.count(True) == 1, won


# ------------------------------------------------------------------ two real watchers


STEPS = """
    import time

    def slow(frame):
        time.sleep(1.5)
        return len(frame)
"""

SPEC = """
    pipeline: leased
    triggers: {on_data_change: [raw]}
    stages:
      raw: {type: ingest, with: {path: data.csv}}
      rows: {type: python, inputs: {frame: raw}, with: {function: "steps:slow"}}
"""


def test_two_watchers_only_the_lease_holder_retrains_and_the_other_takes_over_after_a_kill(
    tmp_path: Path,
) -> None:
    (tmp_path / "steps.py").write_text(STEPS.replace("\n    ", "\n"))
    (tmp_path / "pipeline.yaml").write_text(SPEC.replace("\n    ", "\n"))
    data = tmp_path / "data.csv"
    data.write_text("x,y\n1,2\n")
    argv = [PIPEFLOW, "watch", tmp_path / "pipeline.yaml", "--interval", "0.2", "--lease", "2"]
    logs = tmp_path / "a.log", tmp_path / "b.log"

    def said(log: Path, text: str) -> int:
        return log.read_text().count(text) if log.exists() else 0

    with processes() as procs:
        a = start(argv, logs[0])
        procs.append(a)
        wait_until(lambda: said(logs[0], "holding the watch lease"), 60, "a to hold", a, logs[0])
        b = start(argv, logs[1])
        procs.append(b)
        wait_until(lambda: said(logs[1], "standing by"), 60, "b to stand by", b, logs[1])
        wait_until(lambda: said(logs[0], "triggered") == 1, 60, "a's first run", a, logs[0])
        data.write_text("x,y\n1,2\n3,4\n")  # while b watches too, checking every 0.2 s
        wait_until(lambda: said(logs[0], "triggered") == 2, 60, "a's second run", a, logs[0])
        time.sleep(1)
        assert said(logs[1], "triggered") == 0, logs[1].read_text()

        hard_kill(a)  # SIGKILL: a cannot release its lease
        newest = max((tmp_path / ".pipeflow" / "leases" / "leased").iterdir())
        expires = json.loads(newest.read_text())["expires"]
        data.write_text("x,y\n5,6\n")
        time.sleep(max(expires - time.time() - 0.3, 0))
        assert said(logs[1], "taking over") == 0, "b took over before a's lease expired"
        wait_until(lambda: said(logs[1], "triggered") == 1, 60, "b's run", b, logs[1])
    assert "taking over from" in logs[1].read_text()

    events = list(audit.read(tmp_path / ".pipeflow" / "watch", "events"))
    assert [e["event"] for e in events].count("trigger") == 3, events
    assert not [e for e in events if e["event"] == "run_skipped"], "b never checked on a's watch"
    runs = pipeflow(["runs", "list", "--spec", tmp_path / "pipeline.yaml"], timeout=60)
    assert runs.stdout.count("leased") == 3, runs.stdout
