"""``pipeflow.testing.StoreContract`` on the backends the suite can run here: a local folder and
fsspec's in-memory filesystem (the S3 endpoint joins with the team-scale work)."""

from __future__ import annotations

import uuid
from pathlib import Path

from pipeflow.store.artifacts import ArtifactStore
from pipeflow.testing import StoreContract


class TestLocalFolder(StoreContract):
    def make_store(self, tmp_path: Path) -> ArtifactStore:
        return ArtifactStore(str(tmp_path / "store"))


class TestMemoryFilesystem(StoreContract):
    def make_store(self, tmp_path: Path) -> ArtifactStore:
        return ArtifactStore(f"memory://contract-{uuid.uuid4().hex[:8]}")
