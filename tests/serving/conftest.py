"""A registry with real trained models, and a real `pipeflow serve` process on 127.0.0.1."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import Served, pipeflow, start_server


@pytest.fixture(scope="session")
def tumours(tmp_path_factory: pytest.TempPathFactory, tumours_v1: Callable[[Path], Path]) -> Path:
    """The tumours project after two runs: v1 (production) and v2 (C=0.2, not promoted)."""
    where = tumours_v1(tmp_path_factory.mktemp("serving") / "tumours")
    second = pipeflow(
        [
            "run",
            "pipeline.yaml",
            "--quiet",
            "--set",
            "params.C=0.2",
            "--set",
            "params.min_accuracy=0.9999",
        ],
        cwd=where,
        timeout=300,
    )
    assert second.returncode == 1  # registered as v2, production stays on v1
    return where


@pytest.fixture
def serve(tumours: Path) -> Iterator[object]:
    started: list[Served] = []

    def run(*args: str, store: Path | None = None, env: dict[str, str] | None = None) -> Served:
        s = start_server(tumours, *args, store=store, env=env)
        started.append(s)
        return s

    yield run
    for s in started:
        s.stop()


@pytest.fixture
def own_store(tumours: Path, tmp_path: Path) -> Path:
    """A private copy of the tumours store, for tests that move aliases or read the audit log."""
    copy = tmp_path / "store"
    shutil.copytree(tumours / ".pipeflow", copy, ignore=shutil.ignore_patterns("audit"))
    return copy
