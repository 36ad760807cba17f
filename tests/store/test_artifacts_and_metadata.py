"""Unit tests for the artifact store (local and memory://) and the SQLite metadata database."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import uuid
from pathlib import Path

import pytest

from pipeflow.errors import StoreError
from pipeflow.store.artifacts import ArtifactRef, ArtifactStore
from pipeflow.store.database import open_metadata
from pipeflow.store.metadata import MetadataDB


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return ArtifactStore(str(tmp_path / "store"))
    return ArtifactStore(f"memory://pipeflow-unit-{uuid.uuid4().hex}")


def _key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------- objects


def test_bytes_round_trip(store: ArtifactStore) -> None:
    ref = store.save(b"\x00hello\xff")
    assert ref.codec == "bytes" and ref.size == 7
    assert store.load(ref) == b"\x00hello\xff"
    assert store.has(ref.digest)


@pytest.mark.parametrize(
    "value",
    [None, True, 0, -3, 2.5, "text", "ünïcode", [1, "a", None], {"b": [1, {"c": 2.0}], "a": {}}],
)
def test_json_values_round_trip(store: ArtifactStore, value: object) -> None:
    ref = store.save(value, "metrics")
    assert ref.codec == "json" and ref.kind == "metrics"
    assert store.load(ref) == value


def test_dataframe_round_trip(store: ArtifactStore) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", None], "c": [0.5, 1.5, 2.5]})
    frame.index = pd.Index([10, 20, 30], name="id")
    ref = store.save(frame, "table")
    assert ref.codec == "parquet"
    pd.testing.assert_frame_equal(store.load(ref), frame)


def test_dataframe_with_mixed_column_is_stored_as_text(store: ArtifactStore) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"m": ["12", -5, None]})
    back = store.load(store.save(frame))
    assert list(back["m"][:2]) == ["12", "-5"]
    assert back["m"].isna().iloc[2]


def test_numpy_round_trip(store: ArtifactStore) -> None:
    np = pytest.importorskip("numpy")
    arr = np.arange(12, dtype="float32").reshape(3, 4)
    ref = store.save(arr)
    assert ref.codec == "npy"
    back = store.load(ref)
    assert back.dtype == arr.dtype and (back == arr).all()


def test_object_arrays_are_refused() -> None:
    np = pytest.importorskip("numpy")
    from pipeflow.store.codecs import UnsupportedOutput, encode

    with pytest.raises(UnsupportedOutput):
        encode(np.array([object()], dtype=object))


def test_unstorable_value_is_refused_with_a_clear_message() -> None:
    from pipeflow.store.codecs import UnsupportedOutput, encode

    with pytest.raises(UnsupportedOutput) as info:
        encode(object())
    assert "cannot store" in str(info.value)


def test_same_content_gives_same_digest(store: ArtifactStore) -> None:
    a = store.save({"x": 1, "y": [1, 2]})
    b = store.save({"y": [1, 2], "x": 1})
    assert a.digest == b.digest
    assert store.save({"x": 2, "y": [1, 2]}).digest != a.digest
    assert store.put(b"abc") == hashlib.sha256(b"abc").hexdigest()


def test_same_dataframe_gives_same_digest(store: ArtifactStore) -> None:
    pd = pytest.importorskip("pandas")
    make = lambda: pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})  # noqa: E731
    assert store.save(make()).digest == store.save(make()).digest


def test_missing_object_is_a_store_error(store: ArtifactStore) -> None:
    with pytest.raises(StoreError, match="missing"):
        store.get(_key("never stored"))


def test_invalid_digest_is_a_store_error(store: ArtifactStore) -> None:
    with pytest.raises(StoreError, match="invalid artifact digest"):
        store.get("../../etc/passwd")
    with pytest.raises(StoreError, match="invalid cache key"):
        store.read_manifest("nothex")


def test_corrupt_object_is_detected_on_load(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    ref = store.save(b"precious bytes")
    path = Path(store.object_path(ref.digest))
    assert path.is_file()
    path.write_bytes(b"tampered bytes")
    with pytest.raises(StoreError, match="corrupt"):
        store.load(ref)


def test_no_files_are_left_in_tmp_after_writes(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    for i in range(20):
        store.save({"i": i})
    store.write_manifest(_key("k"), {"outputs": {}})
    tmp = tmp_path / "store" / "tmp"
    assert tmp.is_dir()
    assert list(tmp.iterdir()) == []


def test_clean_tmp_removes_only_old_leftovers(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    store.save(b"x")
    tmp = tmp_path / "store" / "tmp"
    old, new = tmp / "old", tmp / "new"
    old.write_bytes(b"1")
    new.write_bytes(b"2")
    os.utime(old, (0, 0))
    assert store.clean_tmp(older_than_s=3600) == 1
    assert not old.exists() and new.exists()


def test_ref_dict_round_trip() -> None:
    ref = ArtifactRef(_key("a"), "json", "table", 12)
    assert ArtifactRef.from_dict(ref.to_dict()) == ref


# ---------------------------------------------------------------------------- manifests


def _manifest(store: ArtifactStore, value: object) -> dict:
    ref = store.save(value)
    return {"outputs": {"out": ref.to_dict()}, "run_id": "r1"}


def test_written_manifest_is_read_back_with_refs(store: ArtifactStore) -> None:
    key = _key("written")
    store.write_manifest(key, _manifest(store, [1, 2]))
    found = store.read_manifest(key)
    assert found is not None and found["run_id"] == "r1"
    assert isinstance(found["outputs"]["out"], ArtifactRef)
    assert store.load(found["outputs"]["out"]) == [1, 2]


def test_unknown_key_is_a_miss(store: ArtifactStore) -> None:
    assert store.read_manifest(_key("nothing")) is None


def test_short_stage_manifests_are_batched_and_visible_to_a_new_store(tmp_path: Path) -> None:
    root = str(tmp_path / "store")
    store = ArtifactStore(root)
    store.flush_after_s = 60.0  # the timer must not flush behind the test's back
    keys = [_key(f"short-{i}") for i in range(5)]
    for i, key in enumerate(keys):
        store.record_manifest(key, _manifest(store, i), duration=0.001)
    # buffered: visible to this store, but nothing written yet
    assert store.read_manifest(keys[0]) is not None
    batches = tmp_path / "store" / "cache" / "batches"
    assert not batches.exists() or list(batches.iterdir()) == []
    store.flush()
    files = list(batches.iterdir())
    assert len(files) == 1 and files[0].suffix == ".jsonl"
    assert len(files[0].read_text().splitlines()) == len(keys)
    fresh = ArtifactStore(root)
    for i, key in enumerate(keys):
        found = fresh.read_manifest(key)
        assert found is not None
        assert fresh.load(found["outputs"]["out"]) == i
    store.flush()  # nothing pending: no new file
    assert len(list(batches.iterdir())) == 1


def test_a_batch_file_that_is_gone_no_longer_answers_even_if_its_objects_are_back(
    tmp_path: Path,
) -> None:
    """The store emptied under a long-lived process (a notebook, ``watch``, a benchmark): the
    manifests it had read are forgotten, even where the objects they name are written again
    (equal outputs share one object), so the stages run again instead of being "cached"."""
    root = tmp_path / "store"
    store = ArtifactStore(str(root))
    key = _key("short")
    manifest = _manifest(store, 0)
    store.record_manifest(key, manifest, duration=0.001)
    store.flush()
    assert store.read_manifest(key) is not None
    shutil.rmtree(root)
    assert store.read_manifest(key) is None
    store.save(0)  # the same object as before, written again by another stage
    assert store.read_manifest(key) is None


def test_long_stage_manifest_is_written_at_once(tmp_path: Path) -> None:
    root = str(tmp_path / "store")
    store = ArtifactStore(root)
    key = _key("long")
    store.record_manifest(key, _manifest(store, "x"), duration=5.0)
    assert Path(store.manifest_path(key)).is_file()
    assert ArtifactStore(root).read_manifest(key) is not None


def test_manifest_whose_object_was_deleted_is_a_miss(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    key = _key("gone")
    manifest = _manifest(store, {"a": 1})
    store.write_manifest(key, manifest)
    os.unlink(store.object_path(manifest["outputs"]["out"]["digest"]))
    assert store.read_manifest(key) is None
    assert ArtifactStore(str(tmp_path / "store")).read_manifest(key) is None


def test_unreadable_manifest_is_a_miss(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    key = _key("garbled")
    path = Path(store.manifest_path(key))
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert store.read_manifest(key) is None


# ---------------------------------------------------------------------------- metadata


@pytest.fixture
def db(tmp_path: Path):  # noqa: ANN201 - yields a MetadataDB
    database = open_metadata(tmp_path / "meta" / "pipeflow.db")
    yield database
    database.close()


def _start(db: MetadataDB, run_id: str, stages: list[str], pipeline: str = "p") -> None:
    db.start_run(
        run_id,
        pipeline,
        spec_path="/x/pipeline.yaml",
        spec_digest="d" * 64,
        executor="sync",
        params={"seed": 7, "name": "n"},
        overrides=["params.seed=7"],
        stages=[(s, "python") for s in stages],
    )


def _result(stage: str, ref: ArtifactRef | None = None, **extra: object) -> dict:
    out = {"stage": stage, "type": "python", "state": "done", "started": 1.0, "ended": 2.0}
    if ref is not None:
        out["outputs"] = {"out": ref}
    out.update(extra)
    return out


def test_run_lifecycle_is_recorded(db: MetadataDB) -> None:
    ref = ArtifactRef(_key("a-out"), "json", "any", 3)
    _start(db, "20240101-000000-aaaaaa", ["a", "b"])
    db.record_stages(
        "20240101-000000-aaaaaa",
        [
            _result("a", ref, config={"function": "s:f"}, config_digest="c"),
            _result("b", lineage={"x": ("a", "out", ref.digest)}),
        ],
    )
    db.finish_run("20240101-000000-aaaaaa", "done")
    (run,) = db.runs()
    assert run["id"] == "20240101-000000-aaaaaa" and run["state"] == "done"
    assert run["n_stages"] == 2 and run["n_done"] == 2 and run["n_failed"] == 0
    assert run["ended"] is not None
    assert db.params(run["id"]) == {"seed": 7, "name": "n"}
    stages = {r["stage"]: r for r in db.stage_runs(run["id"])}
    assert stages["a"]["state"] == "done"
    outputs = db.outputs(run["id"])
    assert [(o["stage"], o["port"], o["digest"]) for o in outputs] == [("a", "out", ref.digest)]
    (edge,) = db.lineage(run["id"])
    assert (edge["src_stage"], edge["src_port"], edge["dst_stage"], edge["dst_port"]) == (
        "a",
        "out",
        "b",
        "x",
    )
    assert edge["digest"] == ref.digest
    assert db.integrity_check() == "ok"


def test_recording_the_same_stage_twice_keeps_one_row(db: MetadataDB) -> None:
    _start(db, "run-1", ["a"])
    db.record_stages("run-1", [_result("a")])
    db.record_stages("run-1", [_result("a", state="failed", error="boom")])
    (row,) = db.stage_runs("run-1")
    assert row["state"] == "failed" and row["error"] == "boom"


def test_find_run_latest_and_prefix(db: MetadataDB) -> None:
    _start(db, "20240101-000000-aaaaaa", ["a"])
    _start(db, "20240102-000000-bbbbbb", ["a"])
    latest = db.find_run("latest")
    assert latest is not None and latest["id"] == "20240102-000000-bbbbbb"
    found = db.find_run("20240101")
    assert found is not None and found["id"] == "20240101-000000-aaaaaa"
    assert db.find_run("nope") is None
    with pytest.raises(StoreError, match="ambiguous"):
        db.find_run("2024")


def test_find_run_prefix_treats_wildcards_literally(db: MetadataDB) -> None:
    _start(db, "abc-1", ["a"])
    assert db.find_run("a_c") is None
    assert db.find_run("a%") is None


def test_runs_filters_by_pipeline(db: MetadataDB) -> None:
    _start(db, "r1", ["a"], pipeline="one")
    _start(db, "r2", ["a"], pipeline="two")
    assert [r["id"] for r in db.runs(pipeline="one")] == ["r1"]
    assert len(db.runs(limit=1)) == 1


def test_last_stage_run_is_per_pipeline(db: MetadataDB) -> None:
    _start(db, "r1", ["a"], pipeline="one")
    db.record_stages("r1", [_result("a", config_digest="x")])
    assert db.last_stage_runs("one").get("a")["config_digest"] == "x"
    assert db.last_stage_runs("two").get("a") is None


def test_two_threads_recording_concurrently_lose_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    setup = open_metadata(path)
    n_stages = 40
    for t in range(2):
        _start(setup, f"run-{t}", [])
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        db = setup if t == 0 else open_metadata(path)
        try:
            for i in range(n_stages):
                ref = ArtifactRef(_key(f"{t}-{i}"), "json", "any", 1)
                db.record_stages(f"run-{t}", [_result(f"s{i}", ref)])
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)
        finally:
            if db is not setup:
                db.close()

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert not errors
    for t in range(2):
        assert len(setup.stage_runs(f"run-{t}")) == n_stages
        assert len(setup.outputs(f"run-{t}")) == n_stages
    assert setup.integrity_check() == "ok"
    setup.close()


def test_one_connection_shared_by_threads_loses_no_rows(db: MetadataDB) -> None:
    _start(db, "run-x", [])

    def writer(t: int) -> None:
        for i in range(25):
            db.record_stages("run-x", [_result(f"t{t}-s{i}")])

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert len(db.stage_runs("run-x")) == 100
    assert db.integrity_check() == "ok"


def test_unopenable_database_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    with pytest.raises(StoreError, match="cannot open metadata database"):
        open_metadata(blocker / "sub" / "pipeflow.db")
