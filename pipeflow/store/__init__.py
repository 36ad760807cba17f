"""The store: artifacts under an fsspec root and run metadata in SQLite."""

from __future__ import annotations

from pipeflow.store.artifacts import ArtifactRef, ArtifactStore, StoreRef

__all__ = ["ArtifactRef", "ArtifactStore", "StoreRef"]
