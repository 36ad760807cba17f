"""A trained tumours project for the deployment tests: the server the probes are checked on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, tumours_v1: Callable[[Path], Path]) -> Path:
    """The tumours project with v1 in production (its store is ``.pipeflow`` inside)."""
    return tumours_v1(tmp_path_factory.mktemp("deploy") / "tumours")
