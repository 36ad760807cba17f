"""``pipeflow.testing.StoreContract`` on every backend the suite can run: a local folder, fsspec's
in-memory filesystem, and S3 (moto's server, reached through s3fs as a real endpoint is)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from pipeflow.store.artifacts import ArtifactStore
from pipeflow.testing import StoreContract


class TestLocalFolder(StoreContract):
    def make_store(self, tmp_path: Path) -> ArtifactStore:
        return ArtifactStore(str(tmp_path / "store"))


class TestMemoryFilesystem(StoreContract):
    def make_store(self, tmp_path: Path) -> ArtifactStore:
        return ArtifactStore(f"memory://contract-{uuid.uuid4().hex[:8]}")


class TestS3(StoreContract):
    """Exclusive create here is S3's conditional write (If-None-Match: *)."""

    @pytest.fixture(autouse=True)
    def _endpoint(self, s3, monkeypatch: pytest.MonkeyPatch) -> None:
        for name, value in s3.env.items():
            monkeypatch.setenv(name, value)
        self.bucket = s3.bucket()

    def make_store(self, tmp_path: Path) -> ArtifactStore:
        return ArtifactStore(f"{self.bucket}/contract")
