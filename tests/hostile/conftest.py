"""Fixtures of the hostile-input tests: one trained model in a registry, and private servers."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import MODEL, Served, start_server


@pytest.fixture(scope="session")
def hostile_project(
    tmp_path_factory: pytest.TempPathFactory, tumours_v1: Callable[[Path], Path]
) -> Path:
    """The registry tests' tumours project after one run: tumours v1 holds `production`."""
    return tumours_v1(tmp_path_factory.mktemp("hostile") / "tumours")


def _copy_store(project: Path, into: Path) -> Path:
    copy = into / "store"
    shutil.copytree(project / ".pipeflow", copy, ignore=shutil.ignore_patterns("audit"))
    return copy


def _serve(project: Path, store: Path, *args: str) -> Served:
    """`pipeflow serve tumours@production` on a private store, logging warnings only."""
    return start_server(
        project,
        f"{MODEL}@production",
        *args,
        "--log-level",
        "warning",
        store=store,
        log_dir=store.parent,
        client_timeout=60,
    )


@pytest.fixture
def server_factory(
    hostile_project: Path, tmp_path: Path
) -> Iterator[Callable[..., tuple[Served, Path]]]:
    """Start `pipeflow serve` on a private copy of the store: returns (server, store)."""
    started: list[Served] = []

    def start(*args: str) -> tuple[Served, Path]:
        store = _copy_store(hostile_project, tmp_path / f"s{len(started)}")
        served = _serve(hostile_project, store, *args)
        started.append(served)
        return served, store

    yield start
    for served in started:
        served.stop()


@pytest.fixture(scope="module")
def module_server(
    hostile_project: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Served, Path]]:
    """One server for a whole module of Hypothesis tests (fixtures of function scope are
    shared across Hypothesis examples anyway): (server, its private store)."""
    store = _copy_store(hostile_project, tmp_path_factory.mktemp("served"))
    served = _serve(hostile_project, store)
    yield served, store
    served.stop()
