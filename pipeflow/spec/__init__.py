"""Spec loading: YAML text -> validated :class:`PipelineSpec` with file positions."""

from __future__ import annotations

from pipeflow.spec.load import LoadedSpec, load, loads, parse_override
from pipeflow.spec.model import ExecutorSpec, PipelineSpec, StageSpec, StoreSpec, TriggersSpec

__all__ = [
    "ExecutorSpec",
    "LoadedSpec",
    "PipelineSpec",
    "StageSpec",
    "StoreSpec",
    "TriggersSpec",
    "load",
    "loads",
    "parse_override",
]
