"""Path traversal: model names, aliases, prediction ids and artifact digests that spell paths
(``../x``, ``%2e%2e``, absolute paths, unicode look-alikes) are refused, and nothing outside the
store is created or changed.

Each case runs against a copy of a real registry; a sentinel file beside the store proves that
nothing was written there, and a listing of the whole temporary tree (with mtimes) proves that no
file appeared or changed anywhere else either.
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import MODEL, files_under, free_port, pipeflow
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeflow.errors import InvalidName, StoreError
from pipeflow.registry import Registry, check_name
from pipeflow.store.artifacts import ArtifactStore

BAD_NAMES = [
    "../x",
    "..",
    ".",
    "../../outside/sentinel",
    "../outside",
    "%2e%2e",
    "%2e%2e%2fx",
    "a/../../b",
    f"{MODEL}/../../x",
    "/etc/passwd",
    "..\\x",
    "x\\..\\..\\y",
    "x/",
    ".hidden",
    "ｘ",  # fullwidth x
    "tümours",
    "\u202ex",
    "x\n",  # `$` in a regex matches before a trailing newline
    "x y",
    "a" * 101,
]


@pytest.fixture
def tree(hostile_project: Path, tmp_path: Path) -> dict[str, Path]:
    """tmp_path/work/store (a copy of the registry) and tmp_path/outside/sentinel."""
    store = tmp_path / "work" / "store"
    shutil.copytree(hostile_project / ".pipeflow", store, ignore=shutil.ignore_patterns("audit"))
    outside = tmp_path / "outside"
    outside.mkdir()
    sentinel = outside / "sentinel"
    sentinel.write_text("untouched")
    os.utime(sentinel, ns=(1_000_000_000, 1_000_000_000))
    return {"root": tmp_path, "store": store, "sentinel": sentinel, "cwd": tmp_path / "work"}


def _unchanged(tree: dict[str, Path], before: dict[str, int]) -> None:
    after = files_under(tree["root"])
    added = sorted(set(after) - set(before))
    changed = sorted(p for p in before if p in after and after[p] != before[p])
    removed = sorted(set(before) - set(after))
    assert not added and not changed and not removed, (added, changed, removed)
    assert tree["sentinel"].read_text() == "untouched"
    assert tree["sentinel"].stat().st_mtime_ns == 1_000_000_000


def _commands(name: str, store: str) -> list[list[str]]:
    where = ["--store", store]
    return [
        ["models", "show", name, *where],
        ["models", "card", f"{name}@1", *where],
        ["models", "card", f"{MODEL}@{name}", *where],
        ["models", "promote", name, "1", "--to", "staging", *where],
        ["models", "promote", MODEL, "1", "--to", name, *where],
        ["models", "rollback", MODEL, name, *where],
        ["lineage", f"{name}@1", *where],
        ["lineage", f"{MODEL}@{name}", *where],
        ["lineage", name, *where],
        ["serve", f"{name}@production", "--port", str(free_port()), *where],
        ["serve", f"{MODEL}@{name}", "--port", str(free_port()), *where],
    ]


QUICK_NAMES = {"../x", "%2e%2e", "/etc/passwd", "x\n", "ｘ"}  # the rest: slow (0.3 s a command)


@pytest.mark.parametrize(
    "name",
    [n if n in QUICK_NAMES else pytest.param(n, marks=pytest.mark.slow) for n in BAD_NAMES],
)
def test_model_names_and_aliases_that_spell_paths_are_refused_by_the_cli(
    tree: dict[str, Path], name: str
) -> None:
    # `pipeflow lineage` opens the metadata database, which may create its WAL files: once, here
    pipeflow(["lineage", f"{MODEL}@1", "--store", tree["store"]], cwd=tree["cwd"], timeout=300)
    before = files_under(tree["root"])
    commands = _commands(name, str(tree["store"]))
    # eleven real processes, two at a time: each is mostly interpreter start-up, and refused ones
    # write nothing, so their order cannot matter (the listing after all of them proves it)
    with ThreadPoolExecutor(2) as pool:
        finished = list(pool.map(lambda c: pipeflow(c, cwd=tree["cwd"], timeout=120), commands))
    for command, done in zip(commands, finished, strict=True):
        out = done.stdout + done.stderr
        assert done.returncode == 2, (command, out)
        assert "Traceback" not in out and "internal error" not in out, (command, out)
        assert "invalid" in done.stderr or "usage:" in done.stderr, (command, out)
    _unchanged(tree, before)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_check_name_refuses_every_name_that_is_not_a_plain_component(name: str) -> None:
    with pytest.raises(InvalidName):
        check_name("model name", name)


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=st.text(max_size=30) | st.sampled_from(BAD_NAMES))
def test_any_accepted_name_is_a_single_safe_path_component(name: str) -> None:
    try:
        check_name("model name", name)
    except InvalidName:
        return
    assert name == os.path.basename(name) and name not in (".", "..") and ".." not in name
    assert name.isascii() and name.isprintable() and not name.startswith((".", "-"))
    assert os.path.normpath(os.path.join("/store/registry", name)).startswith("/store/registry/")


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(name=st.sampled_from(BAD_NAMES) | st.text(max_size=20), which=st.sampled_from(BAD_NAMES))
def test_the_registry_api_refuses_path_names_and_touches_nothing(
    tree: dict[str, Path], name: str, which: str
) -> None:
    before = files_under(tree["root"])
    registry = Registry(ArtifactStore(str(tree["store"])))
    by_name = [
        lambda: registry.versions(name),
        lambda: registry.aliases(name),
        lambda: registry.history(name),
        lambda: registry.resolve(name, "production"),
    ]
    by_alias = [
        lambda: registry.history(MODEL, which),
        lambda: registry.resolve(MODEL, which),
        lambda: registry.move_alias(MODEL, which, 1),
        lambda: registry.rollback(MODEL, which),
    ]
    try:
        check_name("model name", name)
    except InvalidName:
        pass
    else:  # a plain name: reading an unknown model may answer empty, never leave the store
        by_name = []
    for call in by_name + by_alias:
        with pytest.raises(InvalidName):
            call()
    _unchanged(tree, before)


TRAVERSAL_DIGESTS = [
    "../../x",
    "../" * 20 + "etc/passwd",
    "/etc/passwd",
    "..",
    "",
    "0" * 62 + "/..",
    "../" + "0" * 61,
    "a" * 64 + "\n",
    "A" * 64,
    "g" * 64,
    "0" * 63,
    "0" * 65,
    "%2e%2e%2f" + "0" * 55,
    "０" * 64,  # fullwidth digits
]


@pytest.mark.parametrize("digest", [*TRAVERSAL_DIGESTS, None, 7, b"0" * 64])
def test_artifact_digests_that_spell_paths_are_refused(
    tree: dict[str, Path], digest: object
) -> None:
    store = ArtifactStore(str(tree["store"]))
    before = files_under(tree["root"])
    for call in (
        store.object_path,
        store.get,
        store.has,
        store.manifest_path,
        store.read_manifest,
    ):
        with pytest.raises(StoreError, match="invalid"):
            call(digest)  # type: ignore[arg-type]
    _unchanged(tree, before)


@settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(digest=st.text(max_size=80) | st.sampled_from(TRAVERSAL_DIGESTS))
def test_any_digest_but_64_lowercase_hex_is_refused_and_a_valid_one_stays_in_objects(
    tree: dict[str, Path], digest: str
) -> None:
    store = ArtifactStore(str(tree["store"]))
    objects = os.path.join(str(tree["store"]), "objects") + os.sep
    try:
        path = store.object_path(digest)
    except StoreError:
        with pytest.raises(StoreError):
            store.get(digest)
        return
    assert len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)
    assert os.path.normpath(path).startswith(objects)


def test_the_serve_stage_refuses_a_model_name_that_spells_a_path() -> None:
    from pydantic import ValidationError

    from pipeflow.stages.serve import ServeStageConfig

    for name in ["../x@production", "a/../../b", "..", "/etc/passwd@x", "x@../y", "x\n@y"]:
        with pytest.raises(ValidationError):
            ServeStageConfig(model=name)
