"""A trained tumours project for the deployment tests: the server the probes are checked on."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import trained_tumours


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tumours project with v1 in production (its store is ``.pipeflow`` inside)."""
    return trained_tumours(tmp_path_factory.mktemp("deploy") / "tumours")
