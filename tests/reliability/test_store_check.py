"""``check_store`` finds each kind of damage a store can suffer, and passes a sound one.

A real run fills a store (objects, one-file and batched manifests, metadata rows) and the registry
gets a version and an alias move; each test then damages it in one way and expects a problem that
names the damaged path.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeflow.cli import main
from pipeflow.registry import Registry
from pipeflow.runner.session import run
from pipeflow.spec.load import load
from pipeflow.store.artifacts import ArtifactStore
from pipeflow.store.check import check_store, scan_store
from pipeflow.store.database import open_metadata
from pipeflow.testing import write_spec
from pipeflow.workspace import open_store

STEPS = """
    import time

    def numbers(n):
        return list(range(n))

    def total(xs):
        time.sleep(0.08)  # long enough for a manifest file of its own
        return sum(xs)

    def label(t):
        return f"total={t}"

    def blob(n):
        return bytes(range(256)) * n
"""

SPEC = """
    pipeline: checked
    stages:
      numbers: {type: python, with: {function: "steps:numbers", kwargs: {n: 50}}}
      total: {type: python, inputs: {xs: numbers}, with: {function: "steps:total"}}
      label: {type: python, inputs: {t: total}, with: {function: "steps:label"}}
      blob: {type: python, with: {function: "steps:blob", kwargs: {n: 9000}}}
"""


@dataclass
class Store:
    spec: Path
    root: Path
    db_path: Path

    def problems(self) -> list[str]:
        store, db = open_store(load(self.spec))
        try:
            return check_store(store, db)
        finally:
            db.close()

    def objects(self) -> list[Path]:
        return sorted(p for p in (self.root / "objects").rglob("*") if p.is_file())

    def object(self, digest: str) -> Path:
        return self.root / "objects" / digest[:2] / digest[2:]

    def outputs(self) -> dict[str, str]:
        with sqlite3.connect(self.db_path) as conn:
            return dict(conn.execute("SELECT stage, digest FROM outputs").fetchall())


@pytest.fixture
def filled(tmp_path: Path) -> Iterator[Store]:
    spec = write_spec(tmp_path, SPEC, {"steps.py": STEPS})
    report = run(spec, executor="sync")
    assert report.ok, {n: o.error for n, o in report.stages.items()}
    store, db = open_store(load(spec))
    db.close()
    registry = Registry(store)
    model = store.save({"weights": [1, 2, 3]}, "model")
    registry.register("m", model, metrics={"accuracy": 0.9})
    registry.move_alias("m", "production", 1, reason="first")
    yield Store(spec, tmp_path / ".pipeflow", tmp_path / ".pipeflow" / "pipeflow.db")


def test_a_store_filled_by_a_run_and_the_registry_has_no_problems(filled: Store) -> None:
    assert filled.problems() == []
    assert list((filled.root / "cache" / "batches").glob("*.jsonl")), "short stages are batched"
    assert len(list((filled.root / "cache").glob("??/*.json"))) >= 1, "a long stage has a file"
    store, db = open_store(load(filled.spec))
    try:
        report = scan_store(store, db)
    finally:
        db.close()
    assert report.ok and report.objects == 5 and report.manifests == 4
    assert report.artifacts == 4 and report.registry_files == 2


def test_leftovers_in_tmp_are_not_problems(filled: Store) -> None:
    (filled.root / "tmp").mkdir(exist_ok=True)
    (filled.root / "tmp" / uuid.uuid4().hex).write_bytes(b"half a write")
    assert filled.problems() == []


def test_an_object_whose_bytes_changed_is_reported_corrupt(filled: Store) -> None:
    path = filled.object(filled.outputs()["blob"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the hash can tell
    path.write_bytes(bytes(data))
    problems = filled.problems()
    assert any(str(path) in p and "corrupt object" in p for p in problems), problems


def test_a_truncated_object_is_reported_and_so_is_every_record_naming_it(filled: Store) -> None:
    digest = filled.outputs()["blob"]
    path = filled.object(digest)
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(size // 3)
    problems = filled.problems()
    assert any(str(path) in p and "corrupt object" in p for p in problems), problems
    assert any("output blob.out" in p and "corrupt" in p for p in problems), problems
    assert any(p.startswith("manifest ") and "corrupt" in p for p in problems), problems


def test_a_missing_object_is_reported_for_every_record_naming_it(filled: Store) -> None:
    digest = filled.outputs()["total"]
    filled.object(digest).unlink()
    problems = filled.problems()
    assert any("output total.out" in p and digest[:12] in p for p in problems), problems
    assert any("artifact of run" in p and "stage 'total'" in p for p in problems), problems
    assert any(p.startswith("manifest ") and digest[:12] in p for p in problems), problems


def test_a_recorded_size_that_differs_from_the_object_is_reported(filled: Store) -> None:
    digest = filled.outputs()["label"]
    with sqlite3.connect(filled.db_path) as conn:
        conn.execute("UPDATE artifacts SET size = size + 7 WHERE digest = ?", (digest,))
    problems = filled.problems()
    assert any("stage 'label'" in p and "the store holds" in p for p in problems), problems


def test_a_manifest_that_does_not_parse_is_reported(filled: Store) -> None:
    manifest = next((filled.root / "cache").glob("??/*.json"))
    manifest.write_text('{"outputs": {"out": ')
    problems = filled.problems()
    assert problems == [f"{manifest}: manifest does not parse: " + problems[0].split(": ", 2)[2]]


def test_a_damaged_batch_line_is_reported_with_its_line_number(filled: Store) -> None:
    batch = next((filled.root / "cache" / "batches").glob("*.jsonl"))
    lines = batch.read_text().splitlines()
    lines.insert(1, '{"key": "abc", "manif')
    batch.write_text("\n".join(lines) + "\n")
    problems = filled.problems()
    assert len(problems) == 1 and f"{batch}: line 2 does not parse" in problems[0], problems


def test_a_manifest_naming_an_object_that_never_existed_is_reported(filled: Store) -> None:
    key, ghost = "ab" * 32, "cd" * 32
    path = filled.root / "cache" / key[:2] / f"{key}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(
        json.dumps({"key": key, "outputs": {"out": {"digest": ghost, "codec": "json", "size": 3}}})
    )
    problems = filled.problems()
    assert len(problems) == 1 and str(path) in problems[0] and ghost[:12] in problems[0]


def test_a_file_in_tmp_reachable_under_a_final_name_is_reported(filled: Store) -> None:
    # what a writer that linked a file before finishing it would leave: one inode, two names
    (filled.root / "tmp").mkdir(exist_ok=True)
    tmp = filled.root / "tmp" / uuid.uuid4().hex
    tmp.write_text('{"key": ')
    key = "ef" * 32
    final = filled.root / "cache" / key[:2] / f"{key}.json"
    final.parent.mkdir(exist_ok=True)
    os.link(tmp, final)
    problems = filled.problems()
    assert any(str(final) in p and str(tmp) in p and "reachable" in p for p in problems), problems


def test_a_symlink_from_a_final_name_into_tmp_is_reported(filled: Store) -> None:
    (filled.root / "tmp").mkdir(exist_ok=True)
    tmp = filled.root / "tmp" / uuid.uuid4().hex
    tmp.write_bytes(b"x")
    link = filled.root / "registry" / "m" / "notes.txt"
    link.symlink_to(tmp)
    problems = filled.problems()
    assert any(str(link) in p and "links into tmp/" in p for p in problems), problems


def test_a_file_under_objects_that_is_not_an_object_name_is_reported(filled: Store) -> None:
    stray = filled.root / "objects" / "zz" / "not-a-digest"
    stray.parent.mkdir()
    stray.write_bytes(b"?")
    assert filled.problems() == [f"{stray}: not an object name (objects/<ab>/<62 hex digits>)"]


def test_registry_damage_is_reported(filled: Store) -> None:
    record_path = filled.root / "registry" / "m" / "versions" / "1.json"
    record = json.loads(record_path.read_text())
    filled.object(record["model"]["digest"]).unlink()
    (filled.root / "registry" / "m" / "versions" / "2.json").write_text("{not json")
    event = filled.root / "registry" / "m" / "aliases" / "production" / "2.json"
    event.write_text(json.dumps({"seq": 2, "action": "promote", "to_version": 9}))
    problems = filled.problems()
    assert any(f"registry version {record_path}" in p and "missing" in p for p in problems)
    assert any("versions/2.json: does not parse" in p for p in problems), problems
    assert any(str(event) in p and "version 9" in p for p in problems), problems


def test_an_unreadable_run_lock_is_reported(filled: Store) -> None:
    (filled.root / "locks").mkdir(exist_ok=True)
    (filled.root / "locks" / "checked-0123456789ab.lock").write_text("garbage")
    problems = filled.problems()
    assert len(problems) == 1 and "checked-0123456789ab.lock: does not parse" in problems[0]


def test_a_damaged_metadata_database_fails_the_integrity_check(filled: Store) -> None:
    db = open_metadata(filled.db_path)
    try:  # enough rows for several pages, then fold the WAL into the file
        db.write(
            ("INSERT INTO params VALUES (?, ?, ?)", (f"r{i}", "p", "x" * 200)) for i in range(400)
        )
        db.query("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    with sqlite3.connect(filled.db_path) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    assert pages > 8
    with open(filled.db_path, "r+b") as fh:  # scribble over one b-tree page of the params
        fh.seek(page_size * (pages - 3) + 100)  # rows just written: the file's last pages,
        fh.write(os.urandom(page_size // 2))  # whatever tables the schema holds before them
    problems = filled.problems()
    assert len(problems) == 1 and "\n" not in problems[0], problems
    assert problems[0].startswith(f"metadata database {filled.db_path}: "), problems


def test_cli_store_check_prints_problems_and_exits_1(
    filled: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["store", "check", "--spec", str(filled.spec)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"ok: store {filled.root}: 5 objects, 4 manifests"), out

    digest = filled.outputs()["total"]
    filled.object(digest).write_bytes(b"tampered")
    code = main(["store", "check", "--store", str(filled.root), "--db", str(filled.db_path)])
    captured = capsys.readouterr()
    assert code == 1
    assert f"{filled.object(digest)}: content hashes to" in captured.out
    assert "problem(s)" in captured.err

    # the database defaults to pipeflow.db inside a local store
    assert main(["store", "check", "--store", str(filled.root)]) == 1
    capsys.readouterr()
    assert main(["store", "check", "--store", str(filled.root / "nope")]) == 2
    assert "no pipeflow store at" in capsys.readouterr().err


def test_a_remote_store_is_checked_through_fsspec(tmp_path: Path) -> None:
    import fsspec

    url = f"memory://check-{uuid.uuid4().hex[:8]}"
    store = ArtifactStore(url)
    ref = store.save(list(range(10)), "any")
    key = "12" * 32
    store.write_manifest(key, {"key": key, "outputs": {"out": ref.to_dict()}})
    db = open_metadata(tmp_path / "meta.db")
    try:
        assert check_store(store, db) == []
        fsspec.filesystem("memory").pipe_file(store.object_path(ref.digest), b"[0, 1]")
        problems = check_store(store, db)
    finally:
        db.close()
    assert any("corrupt object" in p for p in problems), problems
    assert any(p.startswith("manifest ") and ref.digest[:12] in p for p in problems), problems
