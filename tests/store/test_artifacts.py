"""The artifact store: content addressing, verified reads, atomic writes, cache manifests."""

from __future__ import annotations

import hashlib
import os
import pickle
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeflow.errors import StoreError
from pipeflow.store.artifacts import ArtifactRef, ArtifactStore, StoreRef
from pipeflow.store.codecs import UnsupportedOutput


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "store"))


def _objects(root: Path) -> list[Path]:
    return sorted(p for p in (root / "objects").rglob("*") if p.is_file())


def _key(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def test_put_names_bytes_by_their_sha256(store: ArtifactStore, tmp_path: Path) -> None:
    digest = store.put(b"hello")
    assert digest == hashlib.sha256(b"hello").hexdigest()
    path = Path(store.object_path(digest))
    assert path == tmp_path / "store" / "objects" / digest[:2] / digest[2:]
    assert path.read_bytes() == b"hello"
    assert store.get(digest) == b"hello"
    assert store.has(digest) and not store.has(_key(1))


def test_same_content_is_stored_once(store: ArtifactStore, tmp_path: Path) -> None:
    first = store.save({"a": 1, "b": [1, 2]})
    second = store.save({"b": [1, 2], "a": 1})
    assert first == second
    assert len(_objects(tmp_path / "store")) == 1
    store.save({"a": 2})
    assert len(_objects(tmp_path / "store")) == 2


def test_save_and_load_every_codec(store: ArtifactStore) -> None:
    frame = pd.DataFrame({"x": [1, 2, 3], "y": ["a", "b", "c"]})
    array = np.arange(6.0).reshape(2, 3)
    refs = {
        "bytes": store.save(b"raw", "object"),
        "parquet": store.save(frame, "table"),
        "npy": store.save(array),
        "json": store.save({"acc": 0.9}, "metrics"),
    }
    assert {codec: ref.codec for codec, ref in refs.items()} == {c: c for c in refs}
    assert refs["parquet"].kind == "table" and refs["npy"].kind == "any"
    assert refs["bytes"].size == 3
    assert store.load(refs["bytes"]) == b"raw"
    pd.testing.assert_frame_equal(store.load(refs["parquet"]), frame)
    np.testing.assert_array_equal(store.load(refs["npy"]), array)
    assert store.load(refs["json"]) == {"acc": 0.9}


def test_unsupported_output_is_a_clear_error_and_stores_nothing(
    store: ArtifactStore, tmp_path: Path
) -> None:
    with pytest.raises(UnsupportedOutput, match="cannot store a builtins.object"):
        store.save(object())
    assert not (tmp_path / "store" / "objects").exists() or _objects(tmp_path / "store") == []


def test_a_corrupted_object_fails_the_hash_check(store: ArtifactStore) -> None:
    ref = store.save({"weights": [1, 2, 3]})
    path = Path(store.object_path(ref.digest))
    path.write_bytes(path.read_bytes().replace(b"2", b"9"))
    with pytest.raises(StoreError) as info:
        store.load(ref)
    message = str(info.value)
    assert f"artifact {ref.digest[:12]} is corrupt: its content does not match its hash" in message
    assert str(path) in message


def test_a_missing_object_is_a_clear_error(store: ArtifactStore) -> None:
    ref = store.save(b"gone soon")
    os.unlink(store.object_path(ref.digest))
    with pytest.raises(StoreError, match=f"artifact {ref.digest[:12]} is missing from the store"):
        store.get(ref.digest)


@pytest.mark.parametrize("digest", ["abc", "../../etc/passwd", "Z" * 64, ""])
def test_invalid_digests_are_refused_before_touching_the_filesystem(
    store: ArtifactStore, digest: str
) -> None:
    with pytest.raises(StoreError, match="invalid artifact digest"):
        store.get(digest)
    with pytest.raises(StoreError, match="invalid cache key"):
        store.read_manifest(digest)


def test_writes_leave_no_temporary_files(store: ArtifactStore, tmp_path: Path) -> None:
    for i in range(20):
        store.save({"i": i})
        store.write_manifest(_key(i), {"outputs": {}})
    tmp = tmp_path / "store" / "tmp"
    assert tmp.is_dir() and list(tmp.iterdir()) == []
    assert len(_objects(tmp_path / "store")) == 20


def test_a_failed_write_removes_its_temporary_file(store: ArtifactStore, tmp_path: Path) -> None:
    key = _key(7)
    Path(store.manifest_path(key)).mkdir(parents=True)  # the final name cannot be replaced
    with pytest.raises(StoreError, match="cannot write"):
        store.write_manifest(key, {"outputs": {}})
    assert list((tmp_path / "store" / "tmp").iterdir()) == []


def test_clean_tmp_removes_only_old_leftovers(store: ArtifactStore, tmp_path: Path) -> None:
    store.put(b"x")  # creates tmp/
    tmp = tmp_path / "store" / "tmp"
    old, fresh = tmp / "old", tmp / "fresh"
    old.write_bytes(b"half")
    fresh.write_bytes(b"in progress")
    past = time.time() - 7200
    os.utime(old, (past, past))
    assert store.clean_tmp(older_than_s=3600) == 1
    assert not old.exists() and fresh.exists()


def test_manifest_round_trip(store: ArtifactStore) -> None:
    ref = store.save([1, 2])
    key = _key(1)
    assert store.read_manifest(key) is None
    store.write_manifest(key, {"outputs": {"out": ref.to_dict()}, "run_id": "r1"})
    manifest = store.read_manifest(key)
    assert manifest is not None
    assert manifest["outputs"] == {"out": ref} and manifest["run_id"] == "r1"


def test_manifest_whose_object_is_gone_is_a_cache_miss(store: ArtifactStore) -> None:
    ref = store.save([1, 2])
    key = _key(2)
    store.write_manifest(key, {"outputs": {"out": ref.to_dict()}})
    os.unlink(store.object_path(ref.digest))
    assert store.read_manifest(key) is None
    assert store.read_manifest(key, verify=False) is not None


def test_unreadable_manifest_is_a_cache_miss(store: ArtifactStore) -> None:
    key = _key(3)
    path = Path(store.manifest_path(key))
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert store.read_manifest(key) is None
    path.write_text('{"outputs": "not a mapping"}')
    assert store.read_manifest(key) is None


def test_short_stage_manifests_are_batched_and_visible_to_other_stores(tmp_path: Path) -> None:
    root = str(tmp_path / "store")
    writer = ArtifactStore(root)
    writer.flush_after_s = 60  # only the explicit flush writes
    ref = writer.save("v")
    keys = [_key(i) for i in range(5)]
    for key in keys:
        writer.record_manifest(key, {"outputs": {"out": ref.to_dict()}}, duration=0.001)
    assert writer.read_manifest(keys[0]) is not None  # pending, seen by its own store
    reader = ArtifactStore(root)
    assert reader.read_manifest(keys[0]) is None
    writer.flush()
    batches = list((tmp_path / "store" / "cache" / "batches").glob("*.jsonl"))
    assert len(batches) == 1
    fresh = ArtifactStore(root)
    assert all(fresh.read_manifest(k) is not None for k in keys)


def test_long_stage_manifest_is_written_at_once(tmp_path: Path) -> None:
    root = str(tmp_path / "store")
    writer = ArtifactStore(root)
    ref = writer.save("v")
    writer.record_manifest(_key(9), {"outputs": {"out": ref.to_dict()}}, duration=5.0)
    assert Path(writer.manifest_path(_key(9))).is_file()
    assert ArtifactStore(root).read_manifest(_key(9)) is not None


def test_batches_are_compacted_and_nothing_is_lost(tmp_path: Path) -> None:
    root = str(tmp_path / "store")
    writer = ArtifactStore(root)
    writer.flush_after_s = 60
    writer.max_batch_files = 2
    ref = writer.save("v")
    for i in range(5):
        writer.record_manifest(_key(i), {"outputs": {"out": ref.to_dict()}}, duration=0.0)
        writer.flush()
    batches = list((tmp_path / "store" / "cache" / "batches").glob("*.jsonl"))
    assert len(batches) <= 2
    fresh = ArtifactStore(root)
    assert all(fresh.read_manifest(_key(i)) is not None for i in range(5))


def test_a_damaged_batch_line_costs_only_that_entry(tmp_path: Path) -> None:
    root = str(tmp_path / "store")
    writer = ArtifactStore(root)
    ref = writer.save("v")
    for i in range(2):
        writer.record_manifest(_key(i), {"outputs": {"out": ref.to_dict()}}, duration=0.0)
    writer.flush()
    (batch,) = (tmp_path / "store" / "cache" / "batches").glob("*.jsonl")
    lines = batch.read_text().splitlines()
    batch.write_text(lines[0][:-5] + "\n" + lines[1] + "\n")
    fresh = ArtifactStore(root)
    found = [fresh.read_manifest(_key(i)) is not None for i in range(2)]
    assert sorted(found) == [False, True]


def test_memory_store_works() -> None:
    root = f"memory://pipeflow-tests/{uuid.uuid4().hex}"
    store = ArtifactStore(root)
    frame = pd.DataFrame({"a": [1.5, 2.5]})
    ref = store.save(frame, "table")
    assert store.has(ref.digest)
    pd.testing.assert_frame_equal(store.load(ref), frame)
    assert store.save(frame.copy(), "table") == ref
    store.write_manifest(_key(1), {"outputs": {"out": ref.to_dict()}})
    store.record_manifest(_key(2), {"outputs": {"out": ref.to_dict()}}, duration=0.0)
    store.flush()
    other = ArtifactStore(root)
    assert other.read_manifest(_key(1))["outputs"]["out"] == ref  # type: ignore[index]
    assert other.read_manifest(_key(2)) is not None
    assert store.clean_tmp() == 0
    assert not store.fs.ls(f"{store.root}/tmp")


def test_memory_store_detects_corruption() -> None:
    store = ArtifactStore(f"memory://pipeflow-tests/{uuid.uuid4().hex}")
    ref = store.save(b"payload")
    store.fs.pipe_file(store.object_path(ref.digest), b"tampered")
    with pytest.raises(StoreError, match="is corrupt"):
        store.load(ref)


def test_unknown_protocol_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="cannot open store"):
        ArtifactStore("nosuchproto-xyz://bucket/prefix")


def test_store_ref_is_picklable_and_opens_one_shared_store(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "s"))
    ref = pickle.loads(pickle.dumps(store.ref))
    assert ref == StoreRef(str(tmp_path / "s"), ())
    assert ref.open() is ref.open()
    assert ref.open().url == store.url


def test_artifact_ref_dict_round_trip() -> None:
    ref = ArtifactRef("a" * 64, "json", "metrics", 12)
    assert ArtifactRef.from_dict(ref.to_dict()) == ref
    assert ArtifactRef.from_dict({"digest": "b" * 64, "codec": "npy"}) == ArtifactRef(
        "b" * 64, "npy", "any", 0
    )


def test_a_damaged_object_is_a_cache_miss_and_the_rerun_repairs_it(tmp_path) -> None:
    import pipeflow
    from pipeflow.testing import write_spec

    spec = write_spec(
        tmp_path,
        """
        pipeline: repair
        stages:
          a: {type: python, with: {function: "steps:a"}}
          b: {type: python, inputs: {x: a}, with: {function: "steps:b"}}
        """,
        {"steps.py": "def a():\n    return list(range(100))\n\ndef b(x):\n    return sum(x)\n"},
    )
    first = pipeflow.run(spec)
    ref = first.stages["a"].outputs["out"]
    path = first.store.object_path(ref.digest)
    with open(path, "r+b") as fh:  # damage it: truncated
        fh.truncate(5)
    again = pipeflow.run(spec)
    assert str(again.stages["a"].state) == "done"  # not trusted: recomputed
    assert again.load("b") == 4950 and first.store.get(ref.digest)  # and the object is whole again
    with open(path, "r+b") as fh:  # same-size damage is caught on read, and --force repairs it
        data = fh.read()
        fh.seek(0)
        fh.write(bytes([data[0] ^ 1]) + data[1:])
    with pytest.raises(StoreError, match="corrupt"):
        first.store.get(ref.digest)
    forced = pipeflow.run(spec, force=True)
    assert str(forced.state) == "done" and forced.load("b") == 4950


@pytest.mark.parametrize("path", ["store", "./store", "store/", ".", "sub/../store", "~", "/abs/x"])
def test_a_plain_local_path_has_the_root_fsspec_gives_it(
    path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local store skips fsspec; its root must be the one fsspec made (stores, manifests and
    locks written before are found where they were)."""
    import fsspec

    monkeypatch.chdir(tmp_path)
    store = ArtifactStore(path)
    fs, root = fsspec.core.url_to_fs(path)
    assert store.root == (root.rstrip("/") or "/")
    assert store.is_local and type(store.fs) is type(fs)


def test_a_cached_run_on_a_local_store_imports_no_fsspec_networkx_or_asyncio(
    tmp_path: Path,
) -> None:
    """What a cached ``pipeflow run`` waits for is mostly imports: these three are not needed."""
    import subprocess
    import sys

    spec = tmp_path / "pipeline.yaml"
    (tmp_path / "steps.py").write_text("def one():\n    return 1\n")
    spec.write_text("pipeline: p\nstages:\n  a: {type: python, with: {function: 'steps:one'}}\n")
    run = f"import sys, pipeflow; r = pipeflow.run({str(spec)!r}); print(r.ran, r.ok); "
    heavy = 'print(sorted(m for m in ("fsspec", "networkx", "asyncio") if m in sys.modules))'
    first = subprocess.run([sys.executable, "-c", run], capture_output=True, text=True, check=True)
    assert first.stdout.strip() == "['a'] True", first.stderr
    cached = subprocess.run(
        [sys.executable, "-c", run + heavy], capture_output=True, text=True, check=True
    )
    assert cached.stdout.split("\n")[:2] == ["[] True", "[]"], cached.stderr
