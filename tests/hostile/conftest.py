"""Fixtures of the hostile-input tests: one trained model in a registry, and private servers."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hostile_support import PROJECT, Served, pf, start_server


@pytest.fixture(scope="session")
def hostile_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The registry tests' tumours project after one run: tumours v1 holds `production`."""
    from sklearn.datasets import load_breast_cancer

    where = tmp_path_factory.mktemp("hostile") / "tumours"
    shutil.copytree(PROJECT, where)
    frame = load_breast_cancer(as_frame=True).frame
    frame["diagnosis"] = frame.pop("target").map({0: "malignant", 1: "benign"})
    frame["size_band"] = ["large" if r > 15 else "small" for r in frame["mean radius"]]
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    frame.to_csv(where / "data.csv", index=False)
    done = pf(where, "run", "pipeline.yaml", "--quiet")
    assert done.returncode == 0, done.stdout + done.stderr
    return where


def _copy_store(project: Path, into: Path) -> Path:
    copy = into / "store"
    shutil.copytree(project / ".pipeflow", copy, ignore=shutil.ignore_patterns("audit"))
    return copy


@pytest.fixture
def server_factory(
    hostile_project: Path, tmp_path: Path
) -> Iterator[Callable[..., tuple[Served, Path]]]:
    """Start `pipeflow serve` on a private copy of the store: returns (server, store)."""
    started: list[Served] = []

    def start(*args: str) -> tuple[Served, Path]:
        store = _copy_store(hostile_project, tmp_path / f"s{len(started)}")
        served = start_server(hostile_project, store, *args)
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
    served = start_server(hostile_project, store)
    yield served, store
    served.stop()
