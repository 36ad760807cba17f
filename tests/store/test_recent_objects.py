"""Small objects written or read during a run are answered from memory, and only then
(pipeflow.store.recent): outside a run every read goes to the store and is verified."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import pipeflow
from pipeflow.errors import StoreError
from pipeflow.store.artifacts import ArtifactStore, StoreRef


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "store"))


def _corrupt(store: ArtifactStore, digest: str) -> None:
    path = store.object_path(digest)
    with open(path, "r+b") as fh:
        data = fh.read()
        fh.seek(0)
        fh.write(bytes([data[0] ^ 1]) + data[1:])


def test_during_a_run_an_object_written_is_read_back_from_memory(store: ArtifactStore) -> None:
    with store.recent.during():
        ref = store.save({"a": 1})
        os.unlink(store.object_path(ref.digest))  # the file is not what answers
        assert store.load(ref) == {"a": 1}
        first, second = store.load(ref), store.load(ref)
        first["a"] = 2  # each reader decodes its own value
        assert second == {"a": 1}
    with pytest.raises(StoreError, match="missing"):
        store.load(ref)


def test_an_object_read_and_verified_during_a_run_is_kept(store: ArtifactStore) -> None:
    ref = store.save([1, 2, 3])
    with store.recent.during():
        assert store.load(ref) == [1, 2, 3]
        _corrupt(store, ref.digest)
        assert store.load(ref) == [1, 2, 3]  # the verified bytes, not the damaged file
    with pytest.raises(StoreError, match="corrupt"):
        store.load(ref)


def test_outside_a_run_nothing_is_kept(store: ArtifactStore) -> None:
    ref = store.save({"b": 2})
    assert store.load(ref) == {"b": 2}
    _corrupt(store, ref.digest)
    with pytest.raises(StoreError, match="corrupt"):
        store.load(ref)


def test_large_objects_are_read_from_the_store(store: ArtifactStore) -> None:
    with store.recent.during():
        ref = store.save(b"x" * (store.recent.max_object + 1))
        os.unlink(store.object_path(ref.digest))
        with pytest.raises(StoreError, match="missing"):
            store.load(ref)


def test_the_oldest_go_first_beyond_the_total(store: ArtifactStore, monkeypatch) -> None:
    monkeypatch.setattr(store.recent, "max_total", 3000)
    with store.recent.during():
        refs = [store.save(bytes([i]) * 1000) for i in range(4)]
        os.unlink(store.object_path(refs[0].digest))
        os.unlink(store.object_path(refs[3].digest))
        assert store.load(refs[3]) == bytes([3]) * 1000
        with pytest.raises(StoreError, match="missing"):
            store.load(refs[0])


def test_nested_runs_keep_objects_until_the_last_ends(store: ArtifactStore) -> None:
    with store.recent.during():
        with store.recent.during():
            ref = store.save("kept")
        os.unlink(store.object_path(ref.digest))
        assert store.load(ref) == "kept"
    with pytest.raises(StoreError, match="missing"):
        store.load(ref)


def test_a_fan_out_run_passes_every_value_and_keeps_nothing_after(tmp_path: Path) -> None:
    (tmp_path / "steps.py").write_text(
        "def source():\n    return {'n': 7}\n\n"
        "def branch(x, k):\n    x['n'] += k  # a branch changing its input changes no other's\n"
        "    return x['n']\n\n"
        "def join(**parts):\n    return sorted(parts.values())\n"
    )
    lines = ["pipeline: fan", "stages:", "  src: {type: python, with: {function: 'steps:source'}}"]
    for k in range(1, 6):
        lines.append(
            f"  b{k}: {{type: python, inputs: {{x: src}}, "
            f"with: {{function: 'steps:branch', kwargs: {{k: {k}}}}}}}"
        )
    inputs = ", ".join(f"p{k}: b{k}" for k in range(1, 6))
    lines.append(
        f"  join: {{type: python, inputs: {{{inputs}}}, with: {{function: 'steps:join'}}}}"
    )
    spec = tmp_path / "pipeline.yaml"
    spec.write_text("\n".join(lines) + "\n")
    for executor in ("threads", "sync"):
        report = pipeflow.run(spec, executor=executor, force=True)
        assert report.ok, report.failed
        assert report.load("join") == [8, 9, 10, 11, 12]
        store = StoreRef(report.store.url).open()
        assert (
            store is report.store
            and store.recent.get(report.stages["src"].outputs["out"].digest) is None
        )
