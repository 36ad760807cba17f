"""Journals shipped to a store: segment names never collide, a segment shipped twice is counted
once, what a killed writer left in its spool is shipped by the next writer on it, and a reader
sees the union of spools and shipped segments once each. On a local store and on moto's S3."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import wait_until

from pipeflow.errors import StoreError
from pipeflow.store import journal, layout
from pipeflow.store.artifacts import ArtifactStore
from pipeflow.store.shipping import Journal, Shipper, open_journal


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ArtifactStore]:
    """A local store folder, or a fresh bucket on moto's S3 server."""
    if request.param == "local":
        (tmp_path / "store").mkdir()
        yield ArtifactStore(str(tmp_path / "store"))
        return
    s3 = request.getfixturevalue("s3")
    yield ArtifactStore(
        s3.bucket(),
        {"endpoint_url": s3.endpoint, "key": "testing", "secret": "testing"},
    )


def _records(prefix: str, n: int) -> list[dict]:
    return [{"id": f"{prefix}-{i}", "time": float(i), "model": "m"} for i in range(n)]


def _ids(where: object, kind: str = "predictions") -> Counter[str]:
    return Counter(r["id"] for r in journal.read(where, kind))


def _shipped(store: ArtifactStore, kind: str = "predictions") -> list[str]:
    return Journal(None, store, "audit").shipped(kind)


def test_segment_names_carry_host_and_pid_and_never_repeat(
    store: ArtifactStore, tmp_path: Path
) -> None:
    shipper = Shipper(store, "audit", tmp_path / "spool")
    log = shipper.log("predictions")
    for k in range(20):  # 20 segments, each closed and shipped
        log.append(_records(f"s{k}", 3))
        assert shipper.flush() == 1
    names = _shipped(store)
    assert len(names) == len(set(names)) == 20
    pattern = rf"{re.escape(socket.gethostname())}-{os.getpid()}-[0-9a-f]{{16}}\.jsonl"
    assert all(re.fullmatch(pattern, n) for n in names), names
    assert not journal.files(tmp_path / "spool", "predictions")  # the spool drained
    assert shipper.flush() == 0  # nothing written since: no empty segment shipped


def test_a_segment_shipped_twice_is_counted_once(store: ArtifactStore, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    log = journal.AuditLog(spool, "predictions")
    log.append(_records("a", 5))
    log.close()
    (segment,) = journal.files(spool, "predictions")
    copy = segment.read_bytes()
    shipper = Shipper(store, "audit", spool)
    shipper._ship(segment)  # shipped once, removed from the spool
    segment.write_bytes(copy)  # ... and the retry after a lost answer ships it again
    shipper._ship(segment)
    assert len(_shipped(store)) == 1
    segment.write_bytes(copy)  # a spool copy and the shipped copy of one segment
    assert _ids(Journal(spool, store, "audit")) == Counter({f"a-{i}": 1 for i in range(5)})


_WRITER = textwrap.dedent(
    """
    import os, sys
    from pipeflow.store.journal import AuditLog
    log = AuditLog(sys.argv[1], "predictions")
    log.append([{"id": f"dead-{i}", "time": float(i)} for i in range(7)])
    os.write(log._open(), b'{"id": "torn"')  # a write cut short
    print("written", flush=True)
    os.kill(os.getpid(), 9)
    """
)


def test_what_a_killed_writer_left_in_its_spool_is_shipped_by_the_next_one(
    store: ArtifactStore, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    done = subprocess.run(
        [sys.executable, "-c", _WRITER, str(spool)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == -signal.SIGKILL and "written" in done.stdout, done.stderr
    (left,) = journal.files(spool, "predictions")
    assert not _shipped(store)
    live = Shipper(store, "audit", spool)  # this process is alive: its own segment stays
    mine = live.log("predictions")
    mine.append(_records("live", 2))
    assert live.adopt() == 1
    assert not left.exists()
    assert journal.files(spool, "predictions") == [mine.mine()]
    shipped = Journal(None, store, "audit")
    assert _ids(shipped) == Counter({f"dead-{i}": 1 for i in range(7)})  # no torn record
    live.stop()
    assert _ids(shipped) == Counter(
        {**{f"dead-{i}": 1 for i in range(7)}, "live-0": 1, "live-1": 1}
    )


def test_a_reader_sees_every_machine_and_its_own_spool_once(
    store: ArtifactStore, tmp_path: Path
) -> None:
    machines = [Shipper(store, "audit", tmp_path / f"machine-{m}") for m in range(3)]
    for m, shipper in enumerate(machines):
        log = shipper.log("predictions")
        log.append(_records(f"m{m}-shipped", 4))
        shipper.flush()
        log.append(_records(f"m{m}-spooled", 2))  # appended, not shipped yet
    expected = {f"m{m}-shipped-{i}": 1 for m in range(3) for i in range(4)}
    here = Journal(tmp_path / "machine-0", store, "audit")
    assert _ids(here) == Counter({**expected, "m0-spooled-0": 1, "m0-spooled-1": 1})
    elsewhere = Journal(tmp_path / "nowhere", store, "audit")
    assert _ids(elsewhere) == Counter(expected)
    # the reader listed a spool segment, which is then shipped and removed before it is read
    listed = here.segments("predictions")
    machines[0].flush()
    assert Counter(r["id"] for s in listed for r in journal.parse(s.lines())) == Counter(
        {**expected, "m0-spooled-0": 1, "m0-spooled-1": 1}
    )
    for shipper in machines:
        shipper.stop()
    assert _ids(elsewhere) == Counter(
        {**expected, **{f"m{m}-spooled-{i}": 1 for m in range(3) for i in range(2)}}
    )
    assert journal.find(elsewhere, "predictions", "m2-spooled-1")[0]["model"] == "m"


def test_a_quiet_writer_is_shipped_by_the_timer(store: ArtifactStore, tmp_path: Path) -> None:
    shipper = Shipper(store, "audit", tmp_path / "spool", interval_s=0.2)
    log = shipper.log("events", sync=True)
    shipper.start()
    try:
        log.append(_records("quiet", 1))
        wait_until(lambda: _ids(Journal(None, store, "audit"), "events"), 20, "the timer's ship")
    finally:
        shipper.stop()
    assert _ids(Journal(None, store, "audit"), "events") == Counter({"quiet-0": 1})


def test_a_long_lived_reader_downloads_a_shipped_segment_once(
    store: ArtifactStore, tmp_path: Path
) -> None:
    shipper = Shipper(store, "audit", tmp_path / "spool")
    shipper.log("events").append(_records("e", 3))
    shipper.flush()
    reader = open_journal(store, "audit", tmp_path / "elsewhere", remember=True)
    fetched: list[str] = []
    fetch = reader._fetch
    reader._fetch = lambda kind, name: fetched.append(name) or fetch(kind, name)  # type: ignore[method-assign]
    for _ in range(3):
        assert _ids(reader, "events") == Counter({"e-0": 1, "e-1": 1, "e-2": 1})
    assert len(fetched) == 1


def test_a_store_that_is_not_there_is_an_error_not_an_empty_journal(s3: object) -> None:
    name = f"gone-{os.getpid()}"
    s3.bucket(name)  # type: ignore[attr-defined]
    options = {"endpoint_url": s3.endpoint, "key": "testing", "secret": "testing"}  # type: ignore[attr-defined]
    store = ArtifactStore(f"s3://{name}", options)
    s3.filesystem().rmdir(name)  # type: ignore[attr-defined]  # the bucket goes after opening
    with pytest.raises(StoreError, match=f"s3://{name}"):
        list(journal.read(Journal(None, store, "audit"), "predictions"))
    with pytest.raises(StoreError, match=f"bucket '{name}' does not exist"):
        ArtifactStore(f"s3://{name}", options)  # and one opened now says so at once


def test_a_local_store_keeps_its_journal_in_place(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    store = ArtifactStore(str(tmp_path / "store"))
    assert layout.audit_dir(store.url) == tmp_path / "store" / "audit"
    log = journal.AuditLog(layout.audit_dir(store.url), "predictions")
    log.append(_records("here", 2))
    assert _ids(open_journal(store)) == Counter({"here-0": 1, "here-1": 1})
    assert not (tmp_path / "store" / layout.JOURNAL).exists()
    assert json.loads(log.path.read_text().splitlines()[0])["id"] == "here-0"


def test_a_segment_that_cannot_be_shipped_stays_and_goes_on_the_next_tick(
    s3: object, tmp_path: Path
) -> None:
    name = f"later-{os.getpid()}"
    s3.bucket(name)  # type: ignore[attr-defined]
    store = ArtifactStore(
        f"s3://{name}",
        {"endpoint_url": s3.endpoint, "key": "testing", "secret": "testing"},  # type: ignore[attr-defined]
    )
    s3.filesystem().rmdir(name)  # type: ignore[attr-defined]  # the bucket is gone for a while
    shipper = Shipper(store, "audit", tmp_path / "spool")
    shipper.log("predictions").append(_records("kept", 3))
    assert shipper.flush() == 0  # no bucket: the segment stays in the spool
    assert len(journal.files(tmp_path / "spool", "predictions")) == 1
    s3.bucket(name)  # type: ignore[attr-defined]
    assert shipper.flush() == 1
    assert _ids(Journal(None, store, "audit")) == Counter({f"kept-{i}": 1 for i in range(3)})


def test_one_shot_writers_ship_as_they_write(store: ArtifactStore, tmp_path: Path) -> None:
    """``watch`` events, fired alerts and batch records: appended, closed and shipped at once
    (a local store keeps them in place, as before)."""
    from pipeflow.store.shipping import append_and_ship

    spool = tmp_path / "spool"
    append_and_ship(store, "watch", "events", _records("w", 2), local=spool / "watch")
    append_and_ship(store, "watch", "events", _records("x", 1), local=spool / "watch")
    seen = open_journal(store, "watch", tmp_path / "elsewhere")
    if store.is_local:
        seen = open_journal(store, "watch")
        assert _ids(seen, "events") == Counter()  # given another folder: written there
        seen = open_journal(store, "watch", spool / "watch")
    else:
        assert not any(spool.rglob("*.jsonl"))
    assert _ids(seen, "events") == Counter({"w-0": 1, "w-1": 1, "x-0": 1})
