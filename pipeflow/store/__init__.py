"""The store: artifacts under an fsspec root; run metadata in SQLite or PostgreSQL."""

from __future__ import annotations

from pipeflow.store.artifacts import ArtifactRef, ArtifactStore, StoreRef

__all__ = ["ArtifactRef", "ArtifactStore", "StoreRef"]
