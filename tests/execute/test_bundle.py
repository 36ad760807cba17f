"""Code shipped through the store (:mod:`pipeflow.execute.bundle`): one deterministic archive of
the spec folder's Python code, put in the store, unpacked once per worker, imported from there
by workers that cannot see the spec's folder or see other code in it.

The runs here use a real store on disk and an executor (:class:`Elsewhere`) that runs each task
through the real worker function in this process, after doing to the spec's folder what a remote
worker would see of it: nothing (the folder moved away) or another copy (the file edited).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from pipeflow.errors import StoreError
from pipeflow.execute import bundle
from pipeflow.execute.dask_executor import DaskExecutor
from pipeflow.execute.task import StageResult, StageTask, run_stage
from pipeflow.runner.session import run
from pipeflow.store.artifacts import ArtifactStore
from pipeflow.testing import write_spec

STEPS = """
    def where():
        return __file__

    def double(x):
        return {"value": x * 2, "file": __file__}
"""

SPEC = """
    pipeline: shipped
    stages:
      first: {type: python, with: {function: "steps:where"}}
      second: {type: python, with: {function: "steps:double", kwargs: {x: 21}}}
"""


def _project(folder: Path) -> Path:
    """A spec folder with code (a module, a package with a subpackage) and things that are not
    code to ship (data, the store, caches, a folder that is not a package)."""
    spec = write_spec(folder, SPEC, {"steps.py": STEPS, "aux_code.py": "K = 1\n"})
    (folder / "lib" / "sub").mkdir(parents=True)
    (folder / "lib" / "__init__.py").write_text("")
    (folder / "lib" / "core.py").write_text("def f():\n    return 1\n")
    (folder / "lib" / "sub" / "__init__.py").write_text("")
    (folder / "lib" / "sub" / "deep.py").write_text("X = 2\n")
    (folder / "lib" / "table.csv").write_text("a,b\n1,2\n")
    (folder / "data").mkdir()
    (folder / "data" / "loader.py").write_text("# a script in a data folder, not a package\n")
    (folder / "claims.csv").write_text("id\n1\n")
    (folder / ".pipeflow").mkdir()
    (folder / ".pipeflow" / "hook.py").write_text("x = 1\n")
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "steps.cpython-311.pyc").write_bytes(b"\0" * 16)
    return spec


def test_the_bundle_holds_the_importable_code_only(tmp_path: Path) -> None:
    _project(tmp_path)
    names = [name for name, _ in bundle.code_files(tmp_path)]
    assert names == [
        "aux_code.py",
        "lib/__init__.py",
        "lib/core.py",
        "lib/sub/__init__.py",
        "lib/sub/deep.py",
        "steps.py",
    ]
    with tarfile.open(fileobj=io.BytesIO(bundle.pack(tmp_path) or b""), mode="r:") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == names
    assert {(m.mode, m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {
        (0o644, 0, 0, 0, "", "")
    }


def test_the_same_code_gives_the_same_digest_from_any_folder_at_any_time(tmp_path: Path) -> None:
    _project(tmp_path / "a")
    first = bundle.pack(tmp_path / "a")
    assert first is not None and bundle.pack(tmp_path / "a") == first
    # another folder, other mtimes and modes, other data and caches: the same code
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    for path in (tmp_path / "b").rglob("*.py"):
        os.utime(path, (1_000_000, 1_000_000))
        path.chmod(0o600)
    (tmp_path / "b" / "claims.csv").write_text("other data\n")
    (tmp_path / "b" / ".pipeflow" / "more.py").write_text("y = 2\n")
    assert bundle.pack(tmp_path / "b") == first
    assert bundle.digest_of(tmp_path / "b") == hashlib.sha256(first).hexdigest()


def test_edited_code_gives_a_new_digest(tmp_path: Path) -> None:
    _project(tmp_path)
    before = bundle.digest_of(tmp_path)
    deep = tmp_path / "lib" / "sub" / "deep.py"
    deep.write_text("X = 3\n")
    edited = bundle.digest_of(tmp_path)
    (tmp_path / "extra.py").write_text("")
    added = bundle.digest_of(tmp_path)
    assert len({before, edited, added}) == 3


def test_a_folder_without_code_ships_nothing(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("a\n1\n")
    store = ArtifactStore(str(tmp_path / "store"))
    assert bundle.pack(tmp_path) is None
    assert bundle.ship(store, tmp_path) is None
    assert not (tmp_path / "store").exists()


def test_unpacking_is_cached_atomic_and_leaves_nothing_half_done(tmp_path: Path) -> None:
    _project(tmp_path / "spec")
    store = ArtifactStore(str(tmp_path / "store"))
    digest = bundle.ship(store, tmp_path / "spec")
    assert digest is not None
    root = tmp_path / "cache"
    # a dead unpack left a half-filled temporary folder: never used, never in the way
    (root / f".{digest[:12]}-dead").mkdir(parents=True)
    (root / f".{digest[:12]}-dead" / "steps.py").write_text("half")

    got: list[Path] = []
    errors: list[BaseException] = []

    def unpack() -> None:
        try:
            got.append(bundle.unpacked(store, digest, root))
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=unpack) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and set(got) == {root / digest}
    assert sorted(p.name for p in root.iterdir()) == sorted([digest, f".{digest[:12]}-dead"])
    unpacked_files = sorted(
        str(p.relative_to(root / digest)) for p in (root / digest).rglob("*") if p.is_file()
    )
    assert unpacked_files == [name for name, _ in bundle.code_files(tmp_path / "spec")]
    assert (root / digest / "steps.py").read_text() == (tmp_path / "spec" / "steps.py").read_text()

    # cached: the store is no longer asked (its object may even be gone)
    os.remove(store.object_path(digest))
    assert bundle.unpacked(store, digest, root) == root / digest


def test_a_corrupt_bundle_in_the_store_is_refused_and_nothing_is_unpacked(tmp_path: Path) -> None:
    _project(tmp_path / "spec")
    store = ArtifactStore(str(tmp_path / "store"))
    digest = bundle.ship(store, tmp_path / "spec")
    assert digest is not None
    path = Path(store.object_path(digest))
    path.write_bytes(path.read_bytes().replace(b"return __file__", b"return 'evil!!'"))
    with pytest.raises(StoreError, match="corrupt: its content does not match its hash"):
        bundle.unpacked(store, digest, tmp_path / "cache")
    assert not (tmp_path / "cache" / digest).exists()


def test_a_bundle_naming_a_path_outside_its_folder_is_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../escaped.py")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"x\n"))
    store = ArtifactStore(str(tmp_path / "store"))
    digest = store.put(buf.getvalue())
    with pytest.raises(StoreError, match="not a plain file beside the spec"):
        bundle.unpacked(store, digest, tmp_path / "cache" / "root")
    assert not (tmp_path / "cache" / "escaped.py").exists()
    assert list((tmp_path / "cache" / "root").iterdir()) == []


class Elsewhere:
    """An executor whose workers may not share the client's files (it ships code), running each
    task here through the real worker function after ``before`` changed what they would see."""

    name = "elsewhere"
    ships_code = True

    def __init__(
        self,
        before: Callable[[], None] = lambda: None,
        after: Callable[[], None] = lambda: None,
    ):
        self.before, self.after = before, after
        self.tasks: list[StageTask] = []

    def execute(self, tasks: Sequence[StageTask], on_event: Any) -> dict[str, StageResult]:
        self.tasks = list(tasks)
        self.before()
        try:
            results: dict[str, StageResult] = {}
            for t in tasks:
                res = run_stage(t, *[results[u] for u in t.upstream])
                results[t.name] = res
                on_event(t.name, res.state, res)
            return results
        finally:
            self.after()


def _outside_store(spec: Path, tmp_path: Path) -> Path:
    """The spec with its store and history outside its folder (the folder moves in tests)."""
    spec.write_text(
        spec.read_text()
        + f"store: {{root: {tmp_path / 'store'}, metadata: {tmp_path / 'history.db'}}}\n"
    )
    return spec


def _outputs(report: Any) -> dict[str, Any]:
    return {n: report.store.load(o.outputs["out"]) for n, o in report.stages.items()}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(bundle.CACHE_ENV, str(tmp_path / "code-cache"))
    return tmp_path / "code-cache"


def test_a_worker_that_cannot_see_the_spec_folder_imports_from_the_bundle(
    tmp_path: Path, cache: Path
) -> None:
    spec = _outside_store(_project(tmp_path / "project"), tmp_path)
    hidden = tmp_path / "moved-away"
    store_root = tmp_path / "store"
    digest = bundle.digest_of(spec.parent)
    ex = Elsewhere(
        before=lambda: spec.parent.rename(hidden), after=lambda: hidden.rename(spec.parent)
    )
    report = run(spec, executor=ex)
    assert report.ok, {n: o.error for n, o in report.stages.items()}
    assert {t.code for t in ex.tasks} == {digest}
    out = _outputs(report)
    assert out["first"] == str(cache / str(digest) / "steps.py")
    assert out["second"] == {"value": 42, "file": str(cache / str(digest) / "steps.py")}
    assert Path(store_root, "objects", digest[:2], digest[2:]).is_file()


def test_a_worker_whose_copy_differs_runs_the_code_the_client_shipped(
    tmp_path: Path, cache: Path
) -> None:
    spec = _project(tmp_path / "project")
    steps = spec.parent / "steps.py"
    shipped = steps.read_text()
    ex = Elsewhere(
        before=lambda: steps.write_text(shipped.replace("x * 2", "x * 3")),
        after=lambda: steps.write_text(shipped),
    )
    report = run(spec, executor=ex)
    assert report.ok
    digest = ex.tasks[0].code
    assert _outputs(report)["second"] == {
        "value": 42,
        "file": str(cache / str(digest) / "steps.py"),
    }, "the stale copy beside the spec was not imported"


def test_a_worker_that_sees_the_same_code_imports_it_from_the_spec_folder(
    tmp_path: Path, cache: Path
) -> None:
    spec = _project(tmp_path / "project")
    ex = Elsewhere()
    report = run(spec, executor=ex)
    assert report.ok and ex.tasks[0].code is not None
    assert _outputs(report)["first"] == str(spec.parent / "steps.py")
    assert not cache.exists(), "nothing fetched or unpacked"


def test_local_executors_build_no_bundle(tmp_path: Path) -> None:
    spec = _project(tmp_path / "project")
    digest = bundle.digest_of(spec.parent)
    assert digest is not None
    for kind in ("sync", "threads", "distributed"):  # distributed: pipeflow's own LocalCluster
        assert not DaskExecutor(kind).ships_code
    assert DaskExecutor("distributed", address="tcp://127.0.0.1:1").ships_code
    report = run(spec, executor="threads")
    assert report.ok
    assert not Path(report.store.object_path(digest)).exists()


def test_a_worker_that_cannot_reach_the_bundle_fails_the_stage_in_one_line(
    tmp_path: Path, cache: Path
) -> None:
    spec = _outside_store(_project(tmp_path / "project"), tmp_path)
    hidden = tmp_path / "moved-away"
    digest = bundle.digest_of(spec.parent) or ""

    def lose_everything() -> None:
        spec.parent.rename(hidden)
        os.remove(Path(tmp_path, "store", "objects", digest[:2], digest[2:]))

    ex = Elsewhere(before=lose_everything, after=lambda: hidden.rename(spec.parent))
    report = run(spec, executor=ex)
    assert not report.ok
    error = report.stages["first"].error or ""
    assert error.startswith("StoreError: cannot get the spec's code (bundle "), error
    assert "is missing from the store" in error and "\n" not in error
