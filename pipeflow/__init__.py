"""pipeflow: YAML pipelines compiled to a typed DAG and run on Dask.

The public API. Attributes are imported on first use, so ``import pipeflow`` (and the CLI's
``--help``) stays cheap: pydantic, networkx, Dask and pandas load only when needed.

>>> import pipeflow
>>> report = pipeflow.run("specs/hello/pipeline.yaml")          # doctest: +SKIP
>>> report.load("summary")                                        # doctest: +SKIP
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "load": "pipeflow.spec.load:load",
    "loads": "pipeflow.spec.load:loads",
    "compile": "pipeflow.core.compiler:compile_pipeline",
    "plan": "pipeflow.runner.plan:make_plan",
    "run": "pipeflow.runner.session:run",
    "open_store": "pipeflow.workspace:open_store",
    "open_workspace": "pipeflow.workspace:open_workspace",
    "open_metadata": "pipeflow.store.database:open_metadata",
    "Workspace": "pipeflow.workspace:Workspace",
    "RunReport": "pipeflow.runner.report:RunReport",
    "Stage": "pipeflow.core.stage:Stage",
    "Port": "pipeflow.core.stage:Port",
    "StageContext": "pipeflow.core.stage:StageContext",
    "StageRegistry": "pipeflow.core.stage_types:StageRegistry",
    "StageState": "pipeflow.core.states:StageState",
    "RunState": "pipeflow.core.states:RunState",
    "DaskExecutor": "pipeflow.execute.dask_executor:DaskExecutor",
    "Registry": "pipeflow.registry:Registry",
    "predict_file": "pipeflow.scoring.batch:predict_file",
    "monitor": "pipeflow.monitoring.monitor:monitor",
    "create_app": "pipeflow.serving.app:create_app",
    "ServeConfig": "pipeflow.serving.config:ServeConfig",
    "ArtifactStore": "pipeflow.store.artifacts:ArtifactStore",
    "MetadataDB": "pipeflow.store.metadata:MetadataDB",
    "PipeflowError": "pipeflow.errors:PipeflowError",
    "SpecError": "pipeflow.errors:SpecError",
    "GraphError": "pipeflow.errors:GraphError",
    "StageError": "pipeflow.errors:StageError",
    "StoreError": "pipeflow.errors:StoreError",
    "UsageError": "pipeflow.errors:UsageError",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'pipeflow' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    value = getattr(import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover
    from pipeflow.core.compiler import compile_pipeline as compile
    from pipeflow.core.stage import Port, Stage, StageContext
    from pipeflow.core.stage_types import StageRegistry
    from pipeflow.core.states import RunState, StageState
    from pipeflow.errors import (
        GraphError,
        PipeflowError,
        SpecError,
        StageError,
        StoreError,
        UsageError,
    )
    from pipeflow.execute.dask_executor import DaskExecutor
    from pipeflow.monitoring.monitor import monitor
    from pipeflow.registry import Registry
    from pipeflow.runner.plan import make_plan as plan
    from pipeflow.runner.report import RunReport
    from pipeflow.runner.session import run
    from pipeflow.scoring.batch import predict_file
    from pipeflow.serving.app import create_app
    from pipeflow.serving.config import ServeConfig
    from pipeflow.spec.load import load, loads
    from pipeflow.store.artifacts import ArtifactStore
    from pipeflow.store.database import open_metadata
    from pipeflow.store.metadata import MetadataDB
    from pipeflow.workspace import Workspace, open_store, open_workspace
